"""The asyncio shell around one BrokerNode: sockets, the clock, timers and the flusher thread.

This is the only layer that knows asyncio (docs/architecture.md). It feeds the node decoded frames
with `now_ms`, arms one timer for the node's next deadline, and runs flushes in a single
worker thread: while one group flush runs, new appends collect for the next one, so a burst of
concurrent producers shares each fsync (group commit).

A failed flush (or any failed write the node reports through `log_dir_failure`) stops the
broker: the node has taken its log directory offline (nothing after the last good flush is
acknowledged, produce and fetch answer KAFKA_STORAGE_ERROR), and the server then leaves the
cluster at once (its lease is revoked, so leadership moves to in-sync replicas and this broker
leaves every ISR) and `failed` is set, so the process exits non-zero naming the file and error.
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
from ackly.errors import StorageError
from ackly.log.disk import RealDisk
from ackly.log.partition_log import FlushJob
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


class NotJoinedError(RuntimeError):
    """The broker did not join its cluster within initial.broker.registration.timeout.ms."""


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
        # Set when the log directory failed (a write or fsync error): then `failure` is it too.
        self.log_dir_failure: StorageError | None = None
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
        self._stopping = False
        self._stopped = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due_ms: int | None = None
        self.connections: set[Connection] = set()
        self._next_connection_id = 0
        self._joined = asyncio.Event()  # set once the node has joined its cluster (start())

    def now_ms(self) -> int:
        return wall_clock_ms()

    async def start(self) -> tuple[str, int]:
        """Bind, recover the logs, join the cluster, then listen; returns the bound (host, port).

        The port is bound before recovery (so port 0 resolves and the node can advertise it)
        but nothing is accepted until the node is ready: in a cluster, until it has joined
        (BrokerNode.joined: its view, its registration and a controller), at most
        `initial.broker.registration.timeout.ms` (Kafka's broker waits for the same before it
        enables request processing, and gives up after that setting). A client that connects
        as soon as the port accepts therefore never sees an empty cluster. Raises
        NotJoinedError if the broker did not join in time (everything started is closed).
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
            self.after_event()
            await self._wait_joined()
        self._server = await asyncio.get_running_loop().create_server(
            self._new_connection, sock=sock, backlog=512,
        )
        self.after_event()
        return self.host, self.port

    async def _wait_joined(self) -> None:
        timeout_ms = int(self.config.get("initial.broker.registration.timeout.ms"))
        joined = asyncio.ensure_future(self._joined.wait())
        failed = asyncio.ensure_future(self.failed.wait())
        try:
            await asyncio.wait([joined, failed], timeout=timeout_ms / 1000,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            joined.cancel()
            failed.cancel()
        if self._joined.is_set():
            return
        member = self.node.member
        why = (
            f"the node failed: {self.failure!r}" if self.failure is not None
            else "no view of the metadata store yet" if not member.synced
            else "its registration is not in the metadata yet"
            if self.config.broker_id not in member.metadata.brokers
            else "no controller elected yet"
        )
        self._stopping = True
        if self._timer is not None:
            self._timer.cancel()
        if self.cluster is not None:
            await self.cluster.close()
        self.node.close()
        self._flusher.shutdown(wait=True)
        raise NotJoinedError(
            f"broker {self.config.broker_id} did not join the cluster within "
            f"{timeout_ms} ms (initial.broker.registration.timeout.ms): {why}"
        )

    def _on_fatal(self, exc: BaseException) -> None:
        storage = self.node.log_dir_failure or self.node.disk.failure
        if storage is not None:
            # The node failed because its disk did: report that, not a bug.
            self._on_log_dir_failure(storage)
            return
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
        if node.log_dir_failure is not None and self.log_dir_failure is None:
            self._on_log_dir_failure(node.log_dir_failure)
        if self.cluster is not None:
            self.cluster.pump()
            if not self._joined.is_set() and node.joined:
                self._joined.set()
        if node.has_flush_work and self._flush_future is None:
            self._start_flush()
        due = node.next_deadline_ms()
        if due is not None and due != self._timer_due_ms:
            if self._timer is not None:
                self._timer.cancel()
            delay_s = max(due - self.now_ms(), 0) / 1000
            self._timer = asyncio.get_running_loop().call_later(delay_s, self._on_timer)
            self._timer_due_ms = due

    def _on_log_dir_failure(self, error: StorageError) -> None:
        """The node took the log directory offline: stop the broker (see the module docstring)."""
        if self.log_dir_failure is not None:
            return
        self.log_dir_failure = error
        if self.failure is None:
            self.failure = error
        log.critical("broker %d stops: log dir failed: %s (errno %s)", self.config.broker_id,
                     error.message, error.errno)
        self.failed.set()

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
            # Never retried: a later fsync that succeeds proves nothing about the pages this
            # one failed to write (Linux reports a write-back error once). The node takes the
            # log directory offline; after_event below sees it and stops the broker.
            self.node.flush_failed(exc, self.now_ms())
        else:
            self.node.complete_flush(jobs, self.now_ms())
        self.after_event()

    async def stop(self) -> None:
        """Stop accepting; in a cluster, hand leadership over and leave (cluster_io.py); drop
        connections, finish the flush in flight, close every log. A second call does nothing."""
        if self._stopped:
            return
        self._stopped = True
        if self._server is not None:
            self._server.close()
        if self.cluster is not None:
            if self.failure is None and self._joined.is_set():
                await self.cluster.shutdown()
            elif self.log_dir_failure is not None:
                # No controlled shutdown (this broker can no longer write, and its data after
                # the last good flush is in doubt): leave at once, so the controller elects
                # in-sync replicas and drops this broker from every ISR.
                await self.cluster.leave()
            else:
                # No controlled shutdown on a node in doubt, nor on one that never joined.
                await self.cluster.close()
        for conn in list(self.connections):
            if self.log_dir_failure is not None:
                conn.close()  # let the KAFKA_STORAGE_ERROR answers already written go out
            else:
                conn.abort()
        self._stopping = True
        if self._flush_future is not None:
            await asyncio.gather(asyncio.wrap_future(self._flush_future), return_exceptions=True)
        if self._timer is not None:
            self._timer.cancel()
        if self.node is not None:
            self.node.close()
        self._flusher.shutdown(wait=True)
