"""The asyncio shell around one BrokerNode: sockets, the clock, timers and the flusher thread.

This is the only layer that knows asyncio (DESIGN.md s.1). It feeds the node decoded frames
with `now_ms`, arms one timer for the node's next deadline, and runs flushes in a single
worker thread: while one group flush runs, new appends collect for the next one, so a burst of
concurrent producers shares each fsync (group commit). Log compaction jobs go to the cleaner
worker (cleaner_worker.py) and come back to the node for their swap.
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
from ackly.log.cleaner import CleanJob
from ackly.log.disk import RealDisk
from ackly.log.partition_log import FlushJob
from ackly.server.cleaner_worker import CleanerWorker
from ackly.server.cluster_io import ClusterIO
from ackly.server.connection import Connection
from ackly.server.memory_store_bridge import SharedMemoryStore
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
        metadata: str | None = None,
        metadata_hub: SharedMemoryStore | None = None,
        advertised_port: int | None = None,
    ) -> None:
        """`metadata` (an etcd URL, etcd://host:port,...) or `metadata_hub` (a store shared by
        the brokers of this process) makes this broker a member of a cluster; with neither it is
        a cluster of one with its metadata in its data directory."""
        self.config = BrokerConfig.from_properties(dict(properties or {}))
        self.metadata = metadata
        self.metadata_hub = metadata_hub
        self.cluster: ClusterIO | None = None
        # Set when the node failed on a cluster input (a bug, or metadata it cannot read): the
        # broker must stop rather than act on a view it no longer follows (fail-stop).
        self.failure: BaseException | None = None
        self.failed = asyncio.Event()
        self.data_dir = data_dir
        self.host = host
        self.port = port
        self.advertised_host = advertised_host or host
        # Given to clients and the other brokers instead of the bound port (a proxy in front).
        self.advertised_port = advertised_port
        self.use_sendfile = use_sendfile
        self.node: BrokerNode = None  # type: ignore[assignment]  # set by start()
        self._server: asyncio.base_events.Server | None = None
        self._flusher = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ackly-flush")
        self._flush_future: concurrent.futures.Future[None] | None = None
        self._cleaner: CleanerWorker | None = None
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
            port=self.advertised_port or self.port, now_ms=self.now_ms(), rng=random.Random(),
            external_metadata=self.metadata is not None or self.metadata_hub is not None,
        )
        if self.node.external_metadata:
            self.cluster = ClusterIO(
                self.node, now_ms=self.now_ms, after_event=self.after_event,
                on_fatal=self._on_fatal, metadata=self.metadata, hub=self.metadata_hub,
            )
            await self.cluster.start()
        self._cleaner = CleanerWorker(
            self.node.cleaner.io_max_bytes_per_second, self._on_cleaned
        )
        self._server = await asyncio.get_running_loop().create_server(
            self._new_connection, sock=sock, backlog=512,
        )
        self.after_event()
        return self.host, self.port

    def _on_fatal(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc
            log.critical("broker %d stops: the node failed on a cluster input: %r",
                         self.config.broker_id, exc, exc_info=exc)
            self.failed.set()

    def _new_connection(self) -> Connection:
        self._next_connection_id += 1
        return Connection(self, self._next_connection_id)

    def after_event(self) -> None:
        """After any input: send what the node asks to send (peers, metadata store), start a
        group flush if one is due, and re-arm the timer."""
        node = self.node
        if self.cluster is not None:
            self.cluster.pump()
        if node.has_flush_work and self._flush_future is None:
            self._start_flush()
        if self._cleaner is not None and self._cleaner.idle and not self._stopping:
            clean = node.take_clean_job(self.now_ms())
            if clean is not None:
                self._cleaner.start(*clean)
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

    def _on_cleaned(
        self, tp: TopicPartition, job: CleanJob, error: BaseException | None
    ) -> None:
        if self._stopping:
            return  # the logs close; the job's .cleaned files go at the next start
        self.node.complete_clean(tp, job, error, self.now_ms())
        self.after_event()

    async def stop(self) -> None:
        """Stop accepting; in a cluster, hand leadership over and leave (cluster_io.py); drop
        connections, finish the flush in flight, close every log."""
        if self._server is not None:
            self._server.close()
        if self.cluster is not None:
            if self.failure is None:
                await self.cluster.shutdown()
            else:
                await self.cluster.close()  # no controlled shutdown on a node in doubt
        for conn in list(self.connections):
            conn.abort()
        self._stopping = True
        if self._flush_future is not None:
            await asyncio.gather(asyncio.wrap_future(self._flush_future), return_exceptions=True)
        if self._cleaner is not None:
            await self._cleaner.stop()
        if self._timer is not None:
            self._timer.cancel()
        if self.node is not None:
            self.node.close()
        self._flusher.shutdown(wait=True)
