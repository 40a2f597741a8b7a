"""An in-process broker on its own event-loop thread, for fast tests with real clients.

Importing this module is most of what the first `ackly_broker` of a test session costs
(bench/fixture.py), so it imports only what one broker needs, and kio without its hypothesis
strategies (ackly/kio_import.py) unless the suite imported hypothesis or kio first.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import Any

from ackly.kio_import import import_kio_without_hypothesis

import_kio_without_hypothesis()

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
