"""The asyncio shell around one BrokerNode: sockets, the clock, timers and the flusher thread.

This is the only layer that knows asyncio (docs/architecture.md). It feeds the node decoded frames
with `now_ms`, arms one timer for the node's next deadline, and runs flushes in a single
worker thread: while one group flush runs, new appends collect for the next one, so a burst of
concurrent producers shares each fsync (group commit). Log compaction jobs go to the cleaner
worker (cleaner_worker.py) and come back to the node for their swap.

A failed flush (or any failed write the node reports through `log_dir_failure`) stops the
broker: the node has taken its log directory offline (nothing after the last good flush is
acknowledged, produce and fetch answer KAFKA_STORAGE_ERROR), and the server then leaves the
cluster at once (its lease is revoked, so leadership moves to in-sync replicas and this broker
leaves every ISR) and `failed` is set, so the process exits non-zero naming the file and error.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import ipaddress
import logging
import random
import secrets
import socket
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ackly.broker.file_writes import FileWrite, run_batch
from ackly.broker.node import BrokerNode
from ackly.broker.sasl import SaslSession
from ackly.config import BrokerConfig, parse_host_port
from ackly.errors import ConfigError, StorageError
from ackly.listeners import Listener, ListenerSet, resolve_listeners
from ackly.log.cleaner import CleanJob
from ackly.log.disk import RealDisk
from ackly.log.partition_log import FlushJob, MapFn, run_flush_round
from ackly.protocol.frames import new_scratch
from ackly.server.cleaner_worker import CleanerWorker
from ackly.server.cluster_io import ClusterIO
from ackly.server.connection import Connection
from ackly.server.connection_limits import ConnectionLimits
from ackly.server.memory_pool import MemoryPool
from ackly.server.memory_store_bridge import SharedMemoryStore
from ackly.server.peer_sasl import peer_sasl
from ackly.server.request_metrics import CoordinatorLoadMetrics, FlushMetrics, RequestMetrics
from ackly.server.tls import inter_broker_context, mapping_rules, server_contexts
from ackly.types import TopicPartition

if TYPE_CHECKING:
    from ackly.server.admin_http import AdminListener


log = logging.getLogger("ackly.server")

# At most one warning a period about refused connections or a full request memory pool (a
# flood must not flood the log).
REFUSAL_LOG_PERIOD_S = 10.0
# The sweep for idle and silent connections runs this often at most (and at least a quarter
# of the shortest timeout, so a connection is closed within 1.25 x its timeout).
SWEEP_PERIOD_MAX_S = 1.0
# A TLS client that has not finished its handshake by then is dropped (it is admitted, and
# counted by the connection limits, before its handshake starts).
TLS_HANDSHAKE_TIMEOUT_S = 10.0


def _warn_plain_in_clear(config: BrokerConfig, listeners: ListenerSet) -> None:
    """SASL/PLAIN sends the password as it is: on a listener without TLS anyone on the path
    reads it (Kafka documents PLAIN as safe only with TLS)."""
    for lst in listeners.listeners:
        if lst.uses_sasl and not lst.uses_tls and "PLAIN" in config.sasl_enabled_mechanisms(lst.name):
            log.warning("listener %s is %s with PLAIN enabled (sasl.enabled.mechanisms): clients send "
                        "their passwords in clear text on it; use SASL_SSL, or only SCRAM mechanisms",
                        lst.name, lst.security_protocol)


def _new_nonce() -> str:
    return secrets.token_urlsafe(24)


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


def monotonic_ms() -> int:
    """The node's `now_ms`: every deadline runs on it, so a wall-clock step expires nothing."""
    return int(time.monotonic() * 1000)


def wall_clock_at(_now_ms: int) -> int:
    """The node's WallClock: wall time, read only where Kafka stores or shows it."""
    return wall_clock_ms()


def _timed_flush_round(jobs: list[FlushJob], map_fn: MapFn) -> float:
    """Run one group flush (run_flush_round); returns how long it took (seconds)."""
    started = time.perf_counter()
    run_flush_round(jobs, map_fn)
    return time.perf_counter() - started


# fsyncs of different files issued together: the file system commits them in one journal
# transaction, so a round that flushes thousands of partitions (their first flush, or a clean
# stop) waits for a few commits, not for one per file.
SYNC_THREADS = 8


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
        # The listeners (listeners.py): `listeners` etc., else one PLAINTEXT listener on
        # host:port. Bad values, and TLS settings that cannot be loaded, are refused here.
        self.listener_set: ListenerSet = resolve_listeners(
            self.config.values, host=host, port=port, advertised_host=advertised_host,
            advertised_port=advertised_port,
        )
        _warn_plain_in_clear(self.config, self.listener_set)
        # How this broker authenticates to its peers, when the inter-broker listener uses SASL
        # (a cluster only: a single broker has no peers).
        self.peer_sasl = (peer_sasl(self.config, self.listener_set)
                          if metadata is not None or metadata_hub is not None else None)
        self.tls_contexts = server_contexts(self.config, self.listener_set)
        self.peer_ssl = inter_broker_context(self.config, self.listener_set)
        self.tls_handshake_timeout_s = TLS_HANDSHAKE_TIMEOUT_S
        self.mapping_rules = {lst.name: mapping_rules(self.config, lst.name)
                              for lst in self.listener_set.listeners if lst.uses_tls}
        # Bound ports by listener name (start()).
        self.ports: dict[str, int] = {}
        self.use_sendfile = use_sendfile
        self.node: BrokerNode = None  # type: ignore[assignment]  # set by start()
        self._server: asyncio.base_events.Server | None = None  # the first listener's
        self._servers: list[asyncio.base_events.Server] = []
        self._flusher = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ackly-flush")
        self._syncers = concurrent.futures.ThreadPoolExecutor(
            SYNC_THREADS, thread_name_prefix="ackly-sync"
        )
        self._flush_future: concurrent.futures.Future[float] | None = None
        # The metadata store's file and the dynamic configs (broker/file_writes.py): one
        # writer thread, so they reach the disk in the order asked, off the event loop.
        self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ackly-write")
        self._write_future: concurrent.futures.Future[None] | None = None
        self._cleaner: CleanerWorker | None = None
        self._stopping = False
        self._stopped = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due_ms: int | None = None
        self.connections: set[Connection] = set()
        self._next_connection_id = 0
        self._joined = asyncio.Event()  # set once the node has joined its cluster (start())
        # Resources a client cannot exhaust (docs/architecture.md: the shell owns them).
        # One receive buffer for every client connection: a connection holds only what its
        # incomplete frame needs (protocol/frames.py).
        self.receive_scratch = new_scratch()
        self.pool: MemoryPool[Connection] = MemoryPool(self.config.queued_max_request_bytes)
        self.limits = ConnectionLimits(
            self.config.max_connections, self.config.max_connections_per_ip,
            _resolve_overrides(self.config.max_connections_per_ip_overrides),
        )
        self._refused_since_log: dict[str, int] = {}
        self._refusal_logged_s: float | None = None
        self._pool_logged_s: float | None = None
        self._sweep_handle: asyncio.TimerHandle | None = None
        # Closed by the sweep, by reason (for the admin view and tests).
        self.expired: dict[str, int] = {"connections.max.idle.ms": 0,
                                        "connections.first.request.timeout.ms": 0}
        # What the admin listener exports (server/metrics.py, server/admin_http.py).
        self.request_metrics = RequestMetrics()
        self.flush_metrics = FlushMetrics()
        self.coordinator_load_metrics = CoordinatorLoadMetrics()
        self.admin_scrape_s = 0.0
        self.admin: AdminListener | None = None
        self.admin_address: tuple[str, int] | None = None

    def now_ms(self) -> int:
        return monotonic_ms()

    @property
    def stopping(self) -> bool:
        return self._stopping or self._stopped

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
        socks = []
        try:
            for lst in self.listener_set.listeners:
                socks.append(_bind(lst.host or "0.0.0.0", lst.port))
                self.ports[lst.name] = socks[-1].getsockname()[1]
        except OSError:
            for sock in socks:
                sock.close()
            raise
        self.host, self.port = socks[0].getsockname()[:2]
        self.listener_set = self.listener_set.bound(self.ports)
        inter = self.listener_set.inter_broker
        self.node = BrokerNode(
            config=self.config, disk=RealDisk(), data_dir=self.data_dir,
            host=inter.host, port=inter.port, now_ms=self.now_ms(), rng=random.Random(),
            external_metadata=self.metadata is not None or self.metadata_hub is not None,
            wall_clock=wall_clock_at,
            endpoints=self.listener_set.advertised,
            on_coordinator_load=self._on_coordinator_load,
        )
        # From here on (start-up wrote at once) no small file is written on the event loop.
        self.node.file_writes_off_loop = True
        try:
            await self._start_admin()
        except BaseException:
            for sock in socks:
                sock.close()
            self.node.close()
            self._flusher.shutdown(wait=True)
            raise
        # Before anything can run the node: its first input may already hand out a clean job.
        self._cleaner = CleanerWorker(
            self.node.cleaner.io_max_bytes_per_second, self._on_cleaned
        )
        if self.node.external_metadata:
            self.cluster = ClusterIO(
                self.node, now_ms=self.now_ms, after_event=self.after_event,
                on_fatal=self._on_fatal, metadata=self.metadata, hub=self.metadata_hub,
                peer_ssl=self.peer_ssl, peer_sasl=self.peer_sasl,
            )
            await self.cluster.start()
            self.after_event()
            await self._wait_joined()
        if self.node.has_flush_work:
            # What recovery accepted after a crash is flushed before the first client is
            # served, in the flusher's threads (no fsync on the loop, none per partition while
            # the logs load): HW and the LSO are then where the last flush left them.
            self._start_flush()
            if self._flush_future is not None:
                # _on_flushed was queued first (the flusher's callback), so it has run when
                # this returns.
                await asyncio.gather(asyncio.wrap_future(self._flush_future), return_exceptions=True)
        loop = asyncio.get_running_loop()
        for lst, sock in zip(self.listener_set.listeners, socks, strict=True):
            # TLS starts on each connection once it is admitted (Connection._start_tls).
            self._servers.append(await loop.create_server(
                functools.partial(self._new_connection, lst), sock=sock, backlog=512,
            ))
        self._server = self._servers[0]
        self.after_event()
        return self.host, self.port

    def _on_coordinator_load(self, coordinator: str, elapsed_ms: int) -> None:
        """How long one coordinator shard load took, first slice to last (server/metrics.py)."""
        self.coordinator_load_metrics.observe(coordinator, elapsed_ms / 1000)

    async def _start_admin(self) -> None:
        """The admin HTTP listener, if `admin.listener` names one (server/admin_http.py)."""
        listener = str(self.config.get("admin.listener"))
        if not listener:
            return
        from ackly.server.admin_http import AdminListener

        host, port = parse_host_port(listener)
        self.admin = AdminListener(self, host, port)
        self.admin_address = await self.admin.start()

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
        self.node.close(self._syncers.map)
        self._flusher.shutdown(wait=True)
        self._syncers.shutdown(wait=True)
        self._writer.shutdown(wait=True)
        if self.admin is not None:
            await self.admin.stop()
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

    def _new_connection(self, listener: Listener) -> Connection:
        self._next_connection_id += 1
        return Connection(self, self._next_connection_id, listener)

    def new_sasl_session(self, listener: Listener) -> SaslSession:
        """The SASL session of a new connection on a SASL listener (broker/sasl.py); its SCRAM
        nonces come from the operating system's CSPRNG (RFC 5802 s.5.1 asks for unpredictable
        ones)."""
        return SaslSession(self.config.sasl_enabled_mechanisms(listener.name), new_nonce=_new_nonce,
                           max_reauth_ms=self.config.connections_max_reauth_ms)

    # --- connection limits ------------------------------------------------------------------

    def admit(self, conn: Connection) -> bool:
        """At accept: count the connection, or refuse it (it is closed unread)."""
        reason = self.limits.admit(conn.client_host)
        if reason is not None:
            self._log_refusal(reason, conn.client_host)
            return False
        self.connections.add(conn)
        conn.accepted_s = conn.last_active_s = asyncio.get_running_loop().time()
        self._arm_sweep()
        return True

    def release(self, conn: Connection) -> None:
        self.connections.discard(conn)
        self.limits.release(conn.client_host)

    def _log_refusal(self, reason: str, host: str) -> None:
        """Count every refusal; log at most one line a period, with the counts since the last."""
        counts = self._refused_since_log
        counts[reason] = counts.get(reason, 0) + 1
        now = asyncio.get_running_loop().time()
        if self._refusal_logged_s is not None and now - self._refusal_logged_s < REFUSAL_LOG_PERIOD_S:
            return
        self._refusal_logged_s = now
        limits = self.limits
        detail = ", ".join(f"{n} over {key}" for key, n in sorted(counts.items()))
        log.warning(
            "refused %s (the last from %s, which has %d open; max.connections.per.ip for it "
            "%d, max.connections %d, %d open); at most one such line every %.0f s",
            detail, host, limits.open_from(host), limits.limit_for(host),
            limits.max_connections, limits.open_connections, REFUSAL_LOG_PERIOD_S,
        )
        counts.clear()

    # --- request memory pool ----------------------------------------------------------------

    def pool_adjust(self, delta_bytes: int) -> None:
        """A connection charged or released request bytes; apply a change of the pool's state
        to every connection (pause all but the exempt one, or resume all)."""
        pool = self.pool
        if not pool.adjust(delta_bytes):
            return
        if pool.exhausted:
            now = asyncio.get_running_loop().time()
            if self._pool_logged_s is None or now - self._pool_logged_s >= REFUSAL_LOG_PERIOD_S:
                log.warning(
                    "request memory pool full (%d of %d bytes, queued.max.request.bytes): "
                    "reading paused until answers free memory (%d times so far); at most one "
                    "such line every %.0f s", pool.used_bytes, pool.capacity_bytes,
                    pool.exhaustions, REFUSAL_LOG_PERIOD_S,
                )
                self._pool_logged_s = now
            for conn in self.connections:
                conn.set_memory_paused(not pool.may_read(conn))
        else:
            log.debug("request memory pool has room again: reading resumed")
            for conn in self.connections:
                conn.set_memory_paused(False)

    def set_receiving(self, conn: Connection, receiving: bool) -> None:
        """A connection started or finished a large frame: while the pool is exhausted, the
        oldest large frame in progress may go on (memory_pool.py says why)."""
        pool = self.pool
        pool.set_receiving(conn, receiving)
        if pool.exhausted:
            conn.set_memory_paused(not pool.may_read(conn))
            exempt = pool.exempt
            if exempt is not None:
                exempt.set_memory_paused(False)

    # --- idle and silent connections --------------------------------------------------------

    def _sweep_period_s(self) -> float | None:
        timeouts = [t for t in (self.config.connections_max_idle_ms,
                                self.config.connections_first_request_timeout_ms) if t is not None]
        if not timeouts:
            return None
        return min(SWEEP_PERIOD_MAX_S, min(timeouts) / 4000)

    def _arm_sweep(self) -> None:
        period = self._sweep_period_s()
        if self._sweep_handle is None and period is not None and not self._stopping:
            self._sweep_handle = asyncio.get_running_loop().call_later(period, self._sweep)

    def _sweep(self) -> None:
        """Close connections idle for connections.max.idle.ms (nothing read or written, no
        request in flight; as Kafka's Selector) and those without a complete first request
        after connections.first.request.timeout.ms (a slowloris)."""
        self._sweep_handle = None
        now = asyncio.get_running_loop().time()
        idle_ms = self.config.connections_max_idle_ms
        first_ms = self.config.connections_first_request_timeout_ms
        for conn in list(self.connections):
            if first_ms is not None and not conn.established and (now - conn.accepted_s) * 1000 >= first_ms:
                self._expire(conn, "connections.first.request.timeout.ms", first_ms)
            elif conn.activity != conn.seen_activity:
                conn.seen_activity = conn.activity
                conn.last_active_s = now
            elif (idle_ms is not None and not conn.slots
                  and (now - conn.last_active_s) * 1000 >= idle_ms):
                self._expire(conn, "connections.max.idle.ms", idle_ms)
        if self.connections:
            self._arm_sweep()

    def _expire(self, conn: Connection, key: str, limit_ms: int) -> None:
        self.expired[key] += 1
        log.debug("closing connection %d from %s: %s %d reached",
                  conn.connection_id, conn.client_host, key, limit_ms)
        self.connections.discard(conn)  # the sweep visits it no more; release() runs at close
        conn.abort()

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
        if node.has_file_writes and self._write_future is None and not self._stopping:
            self._start_file_writes()
        if (self._cleaner is not None and self._cleaner.idle and not self._stopping
                and node.log_dir_failure is None):
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
        future = self._flusher.submit(
            _timed_flush_round, [job for _, job in jobs], self._syncers.map
        )
        self._flush_future = future
        future.add_done_callback(
            lambda f: loop.call_soon_threadsafe(self._on_flushed, jobs, f)
        )

    def _start_file_writes(self) -> None:
        batch = self.node.take_file_writes()
        if not batch:
            return
        loop = asyncio.get_running_loop()
        future = self._writer.submit(run_batch, batch)
        self._write_future = future
        future.add_done_callback(
            lambda f: loop.call_soon_threadsafe(self._on_files_written, batch, f)
        )

    def _on_files_written(
        self, batch: list[FileWrite], future: concurrent.futures.Future[None]
    ) -> None:
        self._write_future = None
        if self._stopping:
            return
        self.node.complete_file_writes(batch, future.exception(), self.now_ms())
        self.after_event()

    def _on_flushed(
        self, jobs: list[tuple[TopicPartition, FlushJob]], future: concurrent.futures.Future[float]
    ) -> None:
        self._flush_future = None
        if self._stopping:
            return  # node.close() flushes and closes every log itself
        exc = future.exception()
        if exc is not None:
            self.flush_metrics.errors += 1
            # Never retried: a later fsync that succeeds proves nothing about the pages this
            # one failed to write (Linux reports a write-back error once). The node takes the
            # log directory offline; after_event below sees it and stops the broker.
            self.node.flush_failed(exc, self.now_ms())
        else:
            self.flush_metrics.latency.observe(future.result())
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
        connections, finish the flush in flight, close every log. A second call does nothing."""
        if self._stopped:
            return
        self._stopped = True
        for server in self._servers:
            server.close()
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
            self._sweep_handle = None
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
        if self._write_future is not None:
            # Its changes were not answered yet; written or not, they are as after a crash.
            await asyncio.gather(asyncio.wrap_future(self._write_future), return_exceptions=True)
        if self._cleaner is not None:
            await self._cleaner.stop()
        if self._timer is not None:
            self._timer.cancel()
        if self.node is not None:
            self.node.close(self._syncers.map)
        self._flusher.shutdown(wait=True)
        self._syncers.shutdown(wait=True)
        self._writer.shutdown(wait=True)
        if self.admin is not None:
            await self.admin.stop()


def _bind(host: str, port: int) -> socket.socket:
    family, type_, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def _resolve_overrides(overrides: Mapping[str, int]) -> dict[str, int]:
    """max.connections.per.ip.overrides by IP address: a host name stands for each address it
    resolves to at start-up (as Kafka resolves it)."""
    resolved: dict[str, int] = {}
    for host, limit in overrides.items():
        try:
            resolved[str(ipaddress.ip_address(host))] = limit
            continue
        except ValueError:
            pass
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise ConfigError("max.connections.per.ip.overrides",
                              f"cannot resolve {host!r}: {exc}") from None
        for info in infos:
            resolved[str(info[4][0])] = limit
    return resolved
