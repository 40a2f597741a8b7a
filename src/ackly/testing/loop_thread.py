"""An asyncio loop on a thread of its own, for test tools with a synchronous API."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable


def start_loop_thread(
    name: str, setup: Callable[[], Awaitable[object]], timeout_s: float
) -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    """Start a loop thread, run `setup()` on it, then serve forever; raise what setup raised."""
    ready = threading.Event()
    failure: list[BaseException] = []
    loop = asyncio.new_event_loop()

    def run() -> None:
        try:
            loop.run_until_complete(setup())
        except BaseException as exc:
            failure.append(exc)
            ready.set()
            loop.close()
            return
        ready.set()
        loop.run_forever()
        loop.close()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    if not ready.wait(timeout_s):
        raise TimeoutError(f"{name} did not start")
    if failure:
        raise failure[0]
    return loop, thread
