"""The etcd adapter: carries the MetadataStore commands of cluster/store.py to a real etcd.

Each command is one etcd request (aetcd's generated gRPC stubs, over one gRPC channel):

    Get            KV.Range over the prefix (linearizable, sorted by key)
    Put            KV.Put
    CompareAndSet  KV.Txn: compares mod_revision(key) == expected, and every guard; success:
                   the Put; failure: a Range of each compared key, so a refusal carries the
                   current values of the compared keys that exist, as MemoryStore's does
    Delete         KV.DeleteRange, or a Txn (mod_revision compare) when a revision is expected
    GrantLease     Lease.LeaseGrant, TTL in whole seconds: ttl_ms rounded up (etcd may raise
                   it to its minimum, ceil(1.5 x election timeout); the result says what it
                   granted)
    KeepAlive      one Lease.LeaseKeepAlive exchange; an answer with TTL <= 0 means the lease
                   is gone: the result is LEASE_NOT_FOUND and, for a lease this client
                   granted, a LeaseExpired is synthesized first (etcd has no such event)
    RevokeLease    Lease.LeaseRevoke
    Watch          a create request on this client's one Watch stream, from start_revision
    CancelWatch    a cancel request on that stream

Results and events go to `deliver(items)`, batched per loop turn, in the order they were
learnt. What this adds to or differs from MemoryStore (store.py's contract allows all of it):
- Errors: a timeout (`request_timeout_ms`), a lost connection or an etcd error that says
  nothing definite becomes UNAVAILABLE: the command may or may not have applied. A refusal
  without a response header carries the last revision this client saw.
- Order: commands run concurrently (at most `max_inflight`), except that commands touching the
  same key or the same lease run one after another in submission order; so per key the store
  applies them in the order they were submitted, as a simulator that "reorders only across
  keys" assumes. Results may come back in any order.
- Watches: events come in revision order per watch, with no gaps, from the one Watch stream.
  If that stream breaks (etcd restarted, connection lost), every watch on it ends with
  WatchCanceled(UNAVAILABLE) and every create still unanswered gets an UNAVAILABLE result;
  the client reads again and re-watches, as it does after COMPACTED. etcd 3.4 accepts a watch
  on compacted history and then cancels it, so such a watch is answered ok and then gets
  WatchCanceled(COMPACTED) (MemoryStore refuses it outright; the client handles both alike).
- Security (EtcdSecurity): `etcds://` connects with TLS (a CA file, and a client certificate
  and key for etcd's --client-cert-auth); a user and password authenticate with etcd's Auth
  API, and every call carries the token. A token etcd no longer knows (etcd restarted, or
  the token expired) fails that call as UNAVAILABLE and the next call authenticates again.
- LeaseExpired is learnt only when this client next touches the lease (a keep-alive, or a
  write naming it), not when etcd expires it; the member keeps alive every few seconds and
  bounds its own belief in the lease, so that is soon enough.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import grpc  # type: ignore[import-untyped]
from aetcd import rpc  # type: ignore[import-untyped]
from aetcd.utils import prefix_range_end  # type: ignore[import-untyped]
from grpc import aio as grpc_aio  # type: ignore[import-untyped]

from ackly.cluster.store import (
    CancelWatch,
    Command,
    CommandResult,
    Compare,
    CompareAndSet,
    CompareTarget,
    Delete,
    Get,
    GrantLease,
    KeepAlive,
    KeyValue,
    LeaseExpired,
    Put,
    RevokeLease,
    StoreError,
    StoreInput,
    Watch,
    WatchCanceled,
    WatchEvent,
)
from ackly.config import BrokerConfig
from ackly.errors import ConfigError

log = logging.getLogger("ackly.etcd")

Deliver = Callable[[list[StoreInput]], None]
Endpoint = tuple[str, int]

DEFAULT_PORT = 2379
MAX_GUARDS = 128  # etcd's default --max-txn-ops bounds the compares of one Txn (as MemoryStore)

# gRPC channel options: reconnect quickly after etcd restarts (gRPC's default backoff grows to
# two minutes), and notice a dead connection within seconds even when no call is active.
# etcd refuses client pings more often than every 5 s (--grpc-keepalive-min-time).
_CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
)


@dataclass(frozen=True)
class EtcdSecurity:
    """How to reach etcd: TLS (files in PEM) and a user to authenticate as (none: no auth)."""

    tls: bool = False
    cafile: str = ""  # "" with TLS: the system's CA certificates
    certfile: str = ""  # a client certificate, for etcd's --client-cert-auth
    keyfile: str = ""
    user: str = ""
    password: str = ""


def url_uses_tls(url: str) -> bool:
    return urlsplit(url).scheme == "etcds"


def etcd_security(config: BrokerConfig, url: str) -> EtcdSecurity:
    """The `metadata.etcd.*` settings for a --metadata URL; ConfigError for a contradiction."""
    tls = url_uses_tls(url)
    files = {key: str(config.get(key)) for key in
             ("metadata.etcd.ssl.cafile", "metadata.etcd.ssl.certfile", "metadata.etcd.ssl.keyfile")}
    if not tls:
        for key, value in files.items():
            if value:
                raise ConfigError(key, "set for a metadata store reached without TLS: use etcds://")
    if bool(files["metadata.etcd.ssl.certfile"]) != bool(files["metadata.etcd.ssl.keyfile"]):
        raise ConfigError("metadata.etcd.ssl.certfile", "a client certificate needs its key "
                                                        "(metadata.etcd.ssl.keyfile), and a key its certificate")
    user, password = str(config.get("metadata.etcd.user")), str(config.get("metadata.etcd.password"))
    if bool(user) != bool(password):
        raise ConfigError("metadata.etcd.user", "give both metadata.etcd.user and metadata.etcd.password")
    return EtcdSecurity(tls, files["metadata.etcd.ssl.cafile"], files["metadata.etcd.ssl.certfile"],
                        files["metadata.etcd.ssl.keyfile"], user, password)


def parse_etcd_url(url: str) -> list[Endpoint]:
    """`etcd://host:port[,host:port...]` (or `etcds://` for TLS) -> the endpoints (port 2379
    when left out)."""
    parts = urlsplit(url)
    if parts.scheme not in ("etcd", "etcds") or not parts.netloc:
        raise ValueError(f"not an etcd URL (etcd://host:port[,host:port...], or etcds:// for TLS): {url!r}")
    if parts.path.strip("/") or parts.query:
        raise ValueError(f"an etcd URL names only endpoints (etcd://host:port,...): {url!r}")
    endpoints: list[Endpoint] = []
    for item in parts.netloc.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep:
            host, port = item.strip(), str(DEFAULT_PORT)
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bad etcd endpoint {item!r} in {url!r}")
        endpoints.append((host, int(port)))
    return endpoints


def _read(path: str, key: str) -> bytes | None:
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror or exc}") from None


def grpc_target(endpoints: Sequence[Endpoint]) -> str:
    """One gRPC target for the endpoints: `host:port`, or `ipv4:a:p,b:p` (pick-first failover)
    for several, which gRPC only accepts as IP addresses."""
    if len(endpoints) == 1:
        host, port = endpoints[0]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        addresses = [ipaddress.ip_address(host) for host, _ in endpoints]
    except ValueError:
        raise ValueError("several etcd endpoints must be given as IP addresses") from None
    if all(a.version == 4 for a in addresses):
        return "ipv4:" + ",".join(f"{h}:{p}" for h, p in endpoints)
    if all(a.version == 6 for a in addresses):
        return "ipv6:" + ",".join(f"[{h}]:{p}" for h, p in endpoints)
    raise ValueError("several etcd endpoints must all be IPv4 or all IPv6 addresses")


def _kv(kv: Any) -> KeyValue:
    return KeyValue(
        key=kv.key.decode(), value=bytes(kv.value), create_revision=int(kv.create_revision),
        mod_revision=int(kv.mod_revision), version=int(kv.version),
        lease_id=int(kv.lease) or None,
    )


def _compare(c: Compare) -> Any:
    target = rpc.Compare.MOD if c.target is CompareTarget.MOD else rpc.Compare.CREATE
    msg = rpc.Compare(key=c.key.encode(), target=target, result=rpc.Compare.EQUAL)
    if c.target is CompareTarget.MOD:
        msg.mod_revision = c.revision
    else:
        msg.create_revision = c.revision
    return msg


def _error_of(exc: BaseException) -> StoreError:
    """The StoreError for an exception from a call; UNAVAILABLE unless etcd said something
    definite (then the command surely did not apply)."""
    if isinstance(exc, rpc.AioRpcError):
        code, details = exc.code(), exc.details() or ""
        if _is_auth_error(exc):
            return StoreError.UNAVAILABLE  # refused before it ran; the next call authenticates
        if code == rpc.StatusCode.NOT_FOUND and "lease not found" in details:
            return StoreError.LEASE_NOT_FOUND
        if code == rpc.StatusCode.INVALID_ARGUMENT:
            return StoreError.INVALID
        if code == rpc.StatusCode.OUT_OF_RANGE and "compacted" in details:
            return StoreError.COMPACTED
    return StoreError.UNAVAILABLE


def _is_auth_error(exc: BaseException) -> bool:
    """etcd refused the call for its token: unknown or expired (UNAUTHENTICATED), or missing
    ("user name is empty", INVALID_ARGUMENT)."""
    if not isinstance(exc, rpc.AioRpcError):
        return False
    details = exc.details() or ""
    return exc.code() == rpc.StatusCode.UNAUTHENTICATED or "user name is empty" in details \
        or "invalid auth token" in details


def _tokens(command: Command) -> frozenset[tuple[str, Any]]:
    """What a command must not be reordered with: its keys and its lease."""
    if isinstance(command, Put):
        keys = {("key", command.key)}
        return frozenset(keys | ({("lease", command.lease_id)} if command.lease_id else set()))
    if isinstance(command, CompareAndSet):
        keys = {("key", command.key)} | {("key", g.key) for g in command.guards}
        return frozenset(keys | ({("lease", command.lease_id)} if command.lease_id else set()))
    if isinstance(command, Delete):
        return frozenset({("key", command.key)})
    if isinstance(command, (KeepAlive, RevokeLease)):
        return frozenset({("lease", command.lease_id)})
    return frozenset()


@dataclass(eq=False)
class _Job:
    command: Command
    tokens: frozenset[tuple[str, Any]]


@dataclass(eq=False)
class _WatchState:
    command: Watch
    etcd_id: int | None = None
    cancel: CancelWatch | None = None  # a CancelWatch asked for; events are dropped from then


@dataclass(eq=False)
class _WatchStream:
    call: Any
    writes: asyncio.Queue[Any]
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    creating: deque[_WatchState] = field(default_factory=deque)  # created responses come in order
    active: dict[int, _WatchState] = field(default_factory=dict)  # etcd watch id -> state
    create_timer: asyncio.TimerHandle | None = None
    broken: bool = False


class EtcdStore:
    """A MetadataStore client over etcd. Use on one event loop: `await start()`, then
    `submit(commands)` as the node emits them; results arrive through `deliver`."""

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        deliver: Deliver,
        *,
        request_timeout_ms: int = 5_000,
        max_inflight: int = 256,
        security: EtcdSecurity | None = None,
    ) -> None:
        assert endpoints and request_timeout_ms > 0 and max_inflight > 0
        self.target = grpc_target(endpoints)
        self.security = security or EtcdSecurity()
        # The auth token as call metadata (None: no auth, or not authenticated yet).
        self._auth: tuple[tuple[str, str], ...] | None = None
        self._authenticating: asyncio.Future[None] | None = None
        self._deliver = deliver
        self._timeout_s = request_timeout_ms / 1000
        self._max_inflight = max_inflight
        self._channel: Any = None
        self._kv: Any = None
        self._lease: Any = None
        self._watch_stub: Any = None
        self._queue: deque[_Job] = deque()
        self._running: set[_Job] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._command_tasks: set[asyncio.Task[None]] = set()
        self._stream: _WatchStream | None = None
        self._watches: dict[int, _WatchState] = {}  # Watch request id -> state, while it lives
        self._owned_leases: set[int] = set()  # granted by this client and not revoked by it
        self._revision_seen = 0
        self._outbox: list[StoreInput] = []
        self._flush_scheduled = False
        self._closed = False

    async def start(self) -> None:
        """Open the gRPC channel (it connects on first use, and reconnects by itself). With a
        user, authenticate now: ConfigError if etcd refuses the user or password (a setting to
        fix); if etcd cannot be reached, the first call authenticates instead."""
        security = self.security
        if security.tls:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(security.cafile, "metadata.etcd.ssl.cafile"),
                private_key=_read(security.keyfile, "metadata.etcd.ssl.keyfile"),
                certificate_chain=_read(security.certfile, "metadata.etcd.ssl.certfile"),
            )
            self._channel = grpc_aio.secure_channel(self.target, credentials, options=_CHANNEL_OPTIONS)
        else:
            self._channel = rpc.insecure_channel(self.target, options=_CHANNEL_OPTIONS)
        self._kv = rpc.KVStub(self._channel)
        self._lease = rpc.LeaseStub(self._channel)
        self._watch_stub = rpc.WatchStub(self._channel)
        if security.user:
            try:
                await self._ensure_token()
            except rpc.AioRpcError as exc:
                if exc.code() in (rpc.StatusCode.INVALID_ARGUMENT, rpc.StatusCode.FAILED_PRECONDITION,
                                  rpc.StatusCode.PERMISSION_DENIED):
                    raise ConfigError("metadata.etcd.password",
                                      f"etcd refused user {security.user!r}: {exc.details()}") from None
                log.warning("cannot authenticate with etcd yet (%s); retrying with the first call",
                            exc.details())

    async def _ensure_token(self) -> None:
        """Authenticate unless a token is held; one authentication at a time."""
        if self._auth is not None or not self.security.user:
            return
        if self._authenticating is None:
            self._authenticating = asyncio.ensure_future(self._authenticate())
        future = self._authenticating
        try:
            await asyncio.shield(future)
        finally:
            if self._authenticating is future and future.done():
                self._authenticating = None

    async def _authenticate(self) -> None:
        reply = await rpc.AuthStub(self._channel).Authenticate(
            rpc.AuthenticateRequest(name=self.security.user, password=self.security.password),
            timeout=self._timeout_s,
        )
        self._auth = (("token", str(reply.token)),)

    def submit(self, commands: Iterable[Command]) -> None:
        for command in commands:
            if self._closed:
                continue
            if isinstance(command, Watch):
                self._watch(command)
            elif isinstance(command, CancelWatch):
                self._cancel_watch(command)
            else:
                if isinstance(command, RevokeLease):
                    # Revoked by us: a later "lease gone" is no expiry to report.
                    self._owned_leases.discard(command.lease_id)
                self._queue.append(_Job(command, _tokens(command)))
        self._pump()

    async def settle(self, timeout_s: float) -> None:
        """Wait until every command submitted so far (but watches) is answered, at most
        `timeout_s` (used before closing, so that a last lease revocation lands)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while (self._running or self._queue) and (remaining := deadline - loop.time()) > 0:
            await asyncio.wait(list(self._command_tasks), timeout=remaining,
                               return_when=asyncio.FIRST_COMPLETED)

    async def close(self) -> None:
        """Stop: commands still running are abandoned (their outcome is unknown to the node,
        which is stopping too), watches end, the channel closes."""
        self._closed = True
        self._queue.clear()
        self._outbox.clear()
        if self._stream is not None:
            self._break_stream(self._stream, "the store client is closing")
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._channel is not None:
            await self._channel.close()

    # --- delivery ----------------------------------------------------------------------------

    def _emit(self, item: StoreInput) -> None:
        if self._closed:
            return  # the node is stopping: nothing more reaches it
        self._outbox.append(item)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        items, self._outbox = self._outbox, []
        if items:
            try:
                self._deliver(items)
            except Exception:
                log.exception("delivering %d store inputs failed", len(items))

    def _seen(self, header: Any) -> int:
        revision = int(header.revision)
        self._revision_seen = max(self._revision_seen, revision)
        return revision

    def _refused(self, request_id: int, error: StoreError, kvs: tuple[KeyValue, ...] = (),
                 revision: int | None = None) -> CommandResult:
        seen = self._revision_seen if revision is None else revision
        return CommandResult(request_id, False, seen, kvs=kvs, error=error)

    def _lease_gone(self, lease_id: int | None) -> None:
        """etcd says the lease does not exist: if it was ours and we did not revoke it, it
        expired. Reported once, before the result that revealed it."""
        if lease_id is not None and lease_id in self._owned_leases:
            self._owned_leases.discard(lease_id)
            self._emit(LeaseExpired(lease_id))

    # --- unary commands, ordered per key and per lease -------------------------------------

    def _pump(self) -> None:
        if not self._queue:
            return
        blocked: set[tuple[str, Any]] = set()
        for job in self._running:
            blocked |= job.tokens
        waiting: deque[_Job] = deque()
        while self._queue:
            job = self._queue.popleft()
            if len(self._running) < self._max_inflight and not (job.tokens & blocked):
                self._running.add(job)
                task = self._spawn(self._run(job))
                self._command_tasks.add(task)
                task.add_done_callback(self._command_tasks.discard)
            else:
                waiting.append(job)
            blocked |= job.tokens  # later commands on these keys wait behind this one
        self._queue = waiting

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run(self, job: _Job) -> None:
        command = job.command
        try:
            await self._ensure_token()
            result = await self._execute(command)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if _is_auth_error(exc):
                self._auth = None  # etcd forgot the token (restarted, expired): get another
            error = _error_of(exc)
            if not isinstance(exc, rpc.AioRpcError):
                log.warning("etcd %s failed: %r", type(command).__name__, exc)
            if error is StoreError.LEASE_NOT_FOUND:
                self._lease_gone(getattr(command, "lease_id", None))
            result = self._refused(command.request_id, error)
        finally:
            self._running.discard(job)
        self._emit(result)
        self._pump()

    async def _execute(self, command: Command) -> CommandResult:
        rid = command.request_id
        timeout = self._timeout_s
        if isinstance(command, Get):
            prefix = command.prefix.encode()
            reply = await self._kv.Range(
                rpc.RangeRequest(key=prefix, range_end=prefix_range_end(prefix)), timeout=timeout,
                metadata=self._auth,
            )
            return CommandResult(rid, True, self._seen(reply.header),
                                 kvs=tuple(_kv(kv) for kv in reply.kvs))
        if isinstance(command, Put):
            if not command.key:
                return self._refused(rid, StoreError.INVALID)
            reply = await self._kv.Put(
                rpc.PutRequest(key=command.key.encode(), value=command.value,
                               lease=command.lease_id or 0),
                timeout=timeout, metadata=self._auth,
            )
            return CommandResult(rid, True, self._seen(reply.header))
        if isinstance(command, CompareAndSet):
            return await self._compare_and_set(command)
        if isinstance(command, Delete):
            return await self._delete(command)
        if isinstance(command, GrantLease):
            if command.ttl_ms <= 0:
                return self._refused(rid, StoreError.INVALID)
            ttl_s = -(-command.ttl_ms // 1000)
            reply = await self._lease.LeaseGrant(rpc.LeaseGrantRequest(TTL=ttl_s, ID=0), timeout=timeout,
                                                  metadata=self._auth)
            if reply.error:
                log.warning("etcd refused a lease: %s", reply.error)
                return self._refused(rid, StoreError.UNAVAILABLE)
            self._owned_leases.add(int(reply.ID))
            return CommandResult(rid, True, self._seen(reply.header), lease_id=int(reply.ID),
                                 ttl_ms=int(reply.TTL) * 1000)
        if isinstance(command, KeepAlive):
            return await self._keep_alive(command)
        if isinstance(command, RevokeLease):
            reply = await self._lease.LeaseRevoke(rpc.LeaseRevokeRequest(ID=command.lease_id),
                                                  timeout=timeout, metadata=self._auth)
            return CommandResult(rid, True, self._seen(reply.header))
        raise AssertionError(f"not a unary store command: {command!r}")

    async def _compare_and_set(self, cas: CompareAndSet) -> CommandResult:
        rid = cas.request_id
        if not cas.key or cas.expected_mod_revision < 0 or len(cas.guards) >= MAX_GUARDS:
            return self._refused(rid, StoreError.INVALID)
        compares = (Compare(cas.key, cas.expected_mod_revision), *cas.guards)
        put = rpc.PutRequest(key=cas.key.encode(), value=cas.value, lease=cas.lease_id or 0)
        return await self._txn(rid, compares, rpc.RequestOp(request_put=put))

    async def _delete(self, delete: Delete) -> CommandResult:
        rid = delete.request_id
        if delete.expected_mod_revision is None:
            reply = await self._kv.DeleteRange(rpc.DeleteRangeRequest(key=delete.key.encode()),
                                               timeout=self._timeout_s, metadata=self._auth)
            return CommandResult(rid, True, self._seen(reply.header))
        op = rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=delete.key.encode()))
        return await self._txn(rid, (Compare(delete.key, delete.expected_mod_revision),), op)

    async def _txn(self, rid: int, compares: Sequence[Compare], success: Any) -> CommandResult:
        keys = sorted({c.key for c in compares})
        reply = await self._kv.Txn(
            rpc.TxnRequest(
                compare=[_compare(c) for c in compares],
                success=[success],
                failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=k.encode())) for k in keys],
            ),
            timeout=self._timeout_s, metadata=self._auth,
        )
        revision = self._seen(reply.header)
        if reply.succeeded:
            return CommandResult(rid, True, revision)
        current = tuple(_kv(kv) for op in reply.responses for kv in op.response_range.kvs)
        return self._refused(rid, StoreError.COMPARE_FAILED, current, revision)

    async def _keep_alive(self, command: KeepAlive) -> CommandResult:
        call = self._lease.LeaseKeepAlive(iter([rpc.LeaseKeepAliveRequest(ID=command.lease_id)]),
                                          timeout=self._timeout_s, metadata=self._auth)
        try:
            reply = await call.read()
        finally:
            call.cancel()
        if reply is grpc_aio.EOF:
            return self._refused(command.request_id, StoreError.UNAVAILABLE)
        revision = self._seen(reply.header)
        if int(reply.TTL) <= 0:
            self._lease_gone(command.lease_id)
            return self._refused(command.request_id, StoreError.LEASE_NOT_FOUND, revision=revision)
        return CommandResult(command.request_id, True, revision, lease_id=command.lease_id,
                             ttl_ms=int(reply.TTL) * 1000)

    # --- watches: one bidirectional stream for all of them -------------------------------------

    def _watch(self, command: Watch) -> None:
        stream = self._stream if self._stream is not None else self._open_stream()
        state = _WatchState(command)
        self._watches[command.request_id] = state
        stream.creating.append(state)
        prefix = command.prefix.encode()
        create = rpc.WatchCreateRequest(key=prefix, range_end=prefix_range_end(prefix),
                                        start_revision=max(command.start_revision, 0))
        stream.writes.put_nowait(rpc.WatchRequest(create_request=create))
        self._arm_create_timer(stream)

    def _cancel_watch(self, command: CancelWatch) -> None:
        state = self._watches.get(command.watch_id)
        stream = self._stream
        if state is None or state.cancel is not None or stream is None:
            self._emit(self._refused(command.request_id, StoreError.WATCH_NOT_FOUND))
            return
        state.cancel = command
        if state.etcd_id is not None:
            cancel = rpc.WatchCancelRequest(watch_id=state.etcd_id)
            stream.writes.put_nowait(rpc.WatchRequest(cancel_request=cancel))
        # else: sent once etcd has named the watch (its created response)

    def _open_stream(self) -> _WatchStream:
        stream = _WatchStream(call=self._watch_stub.Watch(metadata=self._auth), writes=asyncio.Queue())
        self._stream = stream
        loop = asyncio.get_running_loop()
        stream.tasks = [loop.create_task(self._write_stream(stream)),
                        loop.create_task(self._read_stream(stream))]
        for task in stream.tasks:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return stream

    async def _write_stream(self, stream: _WatchStream) -> None:
        try:
            while True:
                request = await stream.writes.get()
                await stream.call.write(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._break_stream(stream, f"write failed: {exc!r}")

    async def _read_stream(self, stream: _WatchStream) -> None:
        try:
            while True:
                response = await stream.call.read()
                if response is grpc_aio.EOF:
                    self._break_stream(stream, "etcd ended the watch stream")
                    return
                self._on_watch_response(stream, response)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if _is_auth_error(exc):
                self._auth = None
            self._break_stream(stream, f"read failed: {exc!r}")

    def _on_watch_response(self, stream: _WatchStream, response: Any) -> None:
        revision = self._seen(response.header)
        if response.created:
            if not stream.creating:
                log.warning("etcd created a watch nobody asked for (%d)", response.watch_id)
                return
            state = stream.creating.popleft()
            self._arm_create_timer(stream)
            rid = state.command.request_id
            if response.canceled or response.compact_revision:
                del self._watches[rid]
                if response.compact_revision:
                    self._emit(CommandResult(rid, False, revision, error=StoreError.COMPACTED,
                                             compact_revision=int(response.compact_revision) - 1))
                else:
                    log.warning("etcd refused a watch: %s", response.cancel_reason)
                    self._emit(self._refused(rid, StoreError.INVALID, revision=revision))
                if state.cancel is not None:
                    self._emit(self._refused(state.cancel.request_id, StoreError.WATCH_NOT_FOUND))
                return
            state.etcd_id = int(response.watch_id)
            stream.active[state.etcd_id] = state
            self._emit(CommandResult(rid, True, revision))
            if state.cancel is not None:
                cancel = rpc.WatchCancelRequest(watch_id=state.etcd_id)
                stream.writes.put_nowait(rpc.WatchRequest(cancel_request=cancel))
        found = stream.active.get(int(response.watch_id))
        if found is None:
            return  # leftovers of a canceled watch, or a progress notification
        state = found
        if response.events and state.cancel is None:
            wid = state.command.request_id
            for event in response.events:
                kv = event.kv
                if event.type == rpc.Event.DELETE:
                    self._emit(WatchEvent(wid, kv.key.decode(), None, int(kv.mod_revision)))
                else:
                    self._emit(WatchEvent(
                        wid, kv.key.decode(), bytes(kv.value), int(kv.mod_revision),
                        int(kv.create_revision), int(kv.lease) or None,
                    ))
        if response.canceled or response.compact_revision:
            del stream.active[int(response.watch_id)]
            self._watches.pop(state.command.request_id, None)
            if state.cancel is not None:
                self._emit(CommandResult(state.cancel.request_id, True, revision))
            else:
                reason = StoreError.COMPACTED if response.compact_revision else StoreError.UNAVAILABLE
                self._emit(WatchCanceled(state.command.request_id, reason))

    def _arm_create_timer(self, stream: _WatchStream) -> None:
        """A create that etcd does not answer in time means the stream is stuck: break it."""
        if stream.create_timer is not None:
            stream.create_timer.cancel()
            stream.create_timer = None
        if stream.creating and not stream.broken:
            stream.create_timer = asyncio.get_running_loop().call_later(
                self._timeout_s, self._break_stream, stream, "a watch create timed out",
            )

    def _break_stream(self, stream: _WatchStream, reason: str) -> None:
        """The stream is gone, and every watch on it: tell the client about each one."""
        if stream.broken:
            return
        stream.broken = True
        if not self._closed:
            log.warning("etcd watch stream broken: %s", reason)
        if self._stream is stream:
            self._stream = None
        if stream.create_timer is not None:
            stream.create_timer.cancel()
        current = asyncio.current_task()
        for task in stream.tasks:
            if task is not current:
                task.cancel()
        stream.call.cancel()
        for state in stream.creating:
            self._watches.pop(state.command.request_id, None)
            self._emit(self._refused(state.command.request_id, StoreError.UNAVAILABLE))
            if state.cancel is not None:
                self._emit(CommandResult(state.cancel.request_id, True, self._revision_seen))
        for state in stream.active.values():
            self._watches.pop(state.command.request_id, None)
            if state.cancel is not None:
                self._emit(CommandResult(state.cancel.request_id, True, self._revision_seen))
            else:
                self._emit(WatchCanceled(state.command.request_id, StoreError.UNAVAILABLE))
        stream.creating.clear()
        stream.active.clear()
