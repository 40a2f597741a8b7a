"""The asyncio shell around one BrokerNode: sockets, the clock, timers and the flusher thread.

This is the only layer that knows asyncio (DESIGN.md s.1). It feeds the node decoded frames
with `now_ms`, arms one timer for the node's next deadline, and runs flushes in a single
worker thread: while one group flush runs, new appends collect for the next one, so a burst of
concurrent producers shares each fsync (group commit).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import random
import socket
import time
from collections.abc import Mapping

from ackly.broker.node import BrokerNode
from ackly.config import BrokerConfig
from ackly.log.disk import RealDisk
from ackly.log.partition_log import FlushJob
from ackly.server.connection import Connection
from ackly.types import TopicPartition

log = logging.getLogger("ackly.server")


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


def _run_flush_jobs(jobs: list[tuple[TopicPartition, FlushJob]]) -> None:
    for _, job in jobs:
        job.run()


class BrokerServer:
    def __init__(
        self,
        *,
        data_dir: str,
        host: str = "127.0.0.1",
        port: int = 9092,
        properties: Mapping[str, str] | None = None,
        advertised_host: str | None = None,
        use_sendfile: bool = True,
    ) -> None:
        self.config = BrokerConfig.from_properties(dict(properties or {}))
        self.data_dir = data_dir
        self.host = host
        self.port = port
        self.advertised_host = advertised_host or host
        self.use_sendfile = use_sendfile
        self.node: BrokerNode = None  # type: ignore[assignment]  # set by start()
        self._server: asyncio.base_events.Server | None = None
        self._flusher = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ackly-flush")
        self._flush_future: concurrent.futures.Future[None] | None = None
        self._stopping = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due_ms: int | None = None
        self.connections: set[Connection] = set()
        self._next_connection_id = 0

    def now_ms(self) -> int:
        return wall_clock_ms()

    async def start(self) -> tuple[str, int]:
        """Bind, recover the logs, then listen; returns the bound (host, port).

        The port is bound before recovery (so port 0 resolves and the node can advertise it)
        but nothing is accepted until the node is ready.
        """
        family, type_, proto, _, address = socket.getaddrinfo(
            self.host, self.port, type=socket.SOCK_STREAM
        )[0]
        sock = socket.socket(family, type_, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        self.host, self.port = sock.getsockname()[:2]
        self.node = BrokerNode(
            config=self.config, disk=RealDisk(), data_dir=self.data_dir,
            host=self.advertised_host if self.advertised_host != "0.0.0.0" else "127.0.0.1",
            port=self.port, now_ms=self.now_ms(), rng=random.Random(),
        )
        self._server = await asyncio.get_running_loop().create_server(
            self._new_connection, sock=sock, backlog=512,
        )
        self.after_event()
        return self.host, self.port

    def _new_connection(self) -> Connection:
        self._next_connection_id += 1
        return Connection(self, self._next_connection_id)

    def after_event(self) -> None:
        """After any input: start a group flush if one is due, and re-arm the timer."""
        node = self.node
        if node.has_flush_work and self._flush_future is None:
            self._start_flush()
        due = node.next_deadline_ms()
        if due is not None and due != self._timer_due_ms:
            if self._timer is not None:
                self._timer.cancel()
            delay_s = max(due - self.now_ms(), 0) / 1000
            self._timer = asyncio.get_running_loop().call_later(delay_s, self._on_timer)
            self._timer_due_ms = due

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_due_ms = None
        self.node.tick(self.now_ms())
        self.after_event()

    def _start_flush(self) -> None:
        """Hand every waiting FlushJob to the flusher thread as one group commit."""
        jobs = self.node.take_flush_jobs()
        if not jobs:
            return
        loop = asyncio.get_running_loop()
        future = self._flusher.submit(_run_flush_jobs, jobs)
        self._flush_future = future
        future.add_done_callback(
            lambda f: loop.call_soon_threadsafe(self._on_flushed, jobs, f)
        )

    def _on_flushed(
        self, jobs: list[tuple[TopicPartition, FlushJob]], future: concurrent.futures.Future[None]
    ) -> None:
        self._flush_future = None
        if self._stopping:
            return  # node.close() flushes and closes every log itself
        exc = future.exception()
        if exc is not None:
            # A failed fsync leaves the data unflushed: its producers are not acknowledged
            # and time out (indeterminate), as Kafka's would.
            log.error("flush failed; the appends it covered stay unacknowledged: %s", exc)
        else:
            self.node.complete_flush(jobs, self.now_ms())
        self.after_event()

    async def stop(self) -> None:
        """Stop accepting, drop connections, finish the flush in flight, close every log."""
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.abort()
        self._stopping = True
        if self._flush_future is not None:
            await asyncio.gather(asyncio.wrap_future(self._flush_future), return_exceptions=True)
        if self._timer is not None:
            self._timer.cancel()
        if self.node is not None:
            self.node.close()
        self._flusher.shutdown(wait=True)
