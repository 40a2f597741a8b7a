"""An in-process broker on its own event-loop thread, for fast tests with real clients.

Importing this module is most of what the first `ackly_broker` of a test session costs
(bench/fixture.py), so it imports only what one broker needs. One cost is not ackly's: kio's
phantom types import hypothesis at their own import when it is installed (to register
strategies for them), which is about a third of the import in an environment with hypothesis.
A broker never needs those strategies, so if nothing has imported kio or hypothesis yet, kio
is imported here with hypothesis hidden; hypothesis itself stays importable afterwards, and a
suite that imported hypothesis (or kio) first keeps kio's strategies.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Mapping
from typing import Any


def _import_kio_without_hypothesis() -> None:
    if "hypothesis" in sys.modules or "kio.static._phantom" in sys.modules:
        return
    # None in sys.modules makes `import hypothesis` raise ImportError (the import system's
    # documented behaviour), which kio handles as "hypothesis is not installed".
    sys.modules["hypothesis"] = None  # type: ignore[assignment]
    try:
        import kio.static._phantom  # noqa: F401
    finally:
        del sys.modules["hypothesis"]


_import_kio_without_hypothesis()

from ackly.server.app import BrokerServer  # noqa: E402


class InProcessBroker:
    def __init__(self, data_dir: str, properties: Mapping[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.properties = dict(properties or {})
        self.server: BrokerServer | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def bootstrap(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.port}"

    def start(self) -> InProcessBroker:
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self.loop = loop
            self.server = BrokerServer(data_dir=self.data_dir, port=0, properties=self.properties)
            try:
                loop.run_until_complete(self.server.start())
            except BaseException as exc:
                failure.append(exc)
                started.set()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(self.server.stop())
            loop.close()

        self._thread = threading.Thread(target=run, name="ackly-broker", daemon=True)
        self._thread.start()
        started.wait(30)
        if failure:
            raise failure[0]
        return self

    def call(self, fn: Any, *args: Any) -> Any:
        """Run fn(*args) on the broker's loop thread and return its result."""
        assert self.loop is not None

        async def wrapper() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(30)

    def stop(self) -> None:
        if self.loop is not None and self._thread is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(30)
