"""A scripted TCP fault proxy that speaks Kafka framing, for tests with real clients.

A test puts `FaultProxy` between a Kafka client and one or more brokers. The proxy listens on
127.0.0.1 (one listener per broker), runs on its own event-loop thread and offers a synchronous
API. It reads whole request frames from the client and whole response frames from the broker,
matches each response to its request by correlation id, and applies the faults a test scripts
per API key: swallow a response (`drop_response`), hold it back (`delay_response`), reset the
client connection before or after the broker got the request (`reset`), or freeze the
connection in both directions for a while (`stall`).

Faults, as a client and the broker see them
- drop_response: the broker gets and handles the request; its response never reaches the
  client, whose connection is then closed (FIN), unless the rule says close=False.
- delay_response: the response reaches the client `delay_ms` after the broker sent it.
- reset before_request: the request never reaches the broker; the client gets RST.
- reset after_request: the proxy waits for the broker's response (proof that the broker
  handled the request), swallows it and resets the client (RST).
- stall: from the request that fires it, for `duration_ms`, no byte moves either way on that
  connection (that request included); then everything held is forwarded in order.

Guarantees
- Frames are forwarded whole (a frame leaves the proxy only once all of it has arrived),
  never merged with or reordered against other frames; bytes go through unchanged, except
  what is scripted and the broker addresses below.
- Metadata (3), FindCoordinator (10) and DescribeCluster (60) responses are decoded and
  re-encoded with every broker's host/port replaced by the address of the proxy listener for
  that broker id, so clients keep talking through the proxy. A listener is created for each
  broker id the first time a response reports it.
- Responses stay in request order on a connection: a delayed or stalled response holds back
  the ones behind it, as a slow link would.
- Rule decisions are made on the loop thread, one request at a time, in the order requests
  are read; with seeded `rng`s a run that sends the same requests makes the same decisions.
- `stop()` closes every listener and connection; every wait is bounded.

TLS and SASL
- With `server_ssl` the proxy's listeners speak TLS to clients (it presents that context's
  certificate) and with `upstream_ssl` it speaks TLS to the brokers: the proxy terminates TLS
  on both sides, so it still sees whole frames. SASL needs nothing of it: since KIP-152 the
  exchange travels in SaslHandshake/SaslAuthenticate frames, forwarded like any other.

Limits
- SASL's pre-KIP-152 raw token exchange (SaslHandshake v0) is not framed and is not supported.
- A rewritten response is re-encoded by kio: field values are kept, unknown tagged fields a
  broker may add are not (ackly sends none).
- Produce with acks=0 gets no response: the proxy reads `acks` so that response faults never
  wait for one; `reset after_request` then resets once the request has been written.
- If a client or broker breaks framing, the connection is closed and the reason recorded in
  `stats().errors`. A response that should carry addresses but does not decode (e.g. an
  UNSUPPORTED_VERSION answer) is forwarded as it is, and recorded there too.
- A stall freezes one connection; other connections through the proxy keep flowing.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import io
import logging
import random
import socket
import ssl
import struct
import threading
import typing
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from kio.serial import entity_reader, entity_writer
from kio.static.primitive import i32

from ackly.errors import KafkaError
from ackly.protocol.frames import FrameDecoder, FrameError
from ackly.protocol.headers import API_VERSIONS_KEY, body_offset, parse_prefix, read_uvarint
from ackly.protocol.messages import header_version, is_flexible, known_versions, response_type
from ackly.testing.loop_thread import start_loop_thread

log = logging.getLogger("ackly.fault_proxy")

PRODUCE_KEY = 0
METADATA_KEY = 3
FIND_COORDINATOR_KEY = 10
DESCRIBE_CLUSTER_KEY = 60
ADDRESS_API_KEYS = frozenset({METADATA_KEY, FIND_COORDINATOR_KEY, DESCRIBE_CLUSTER_KEY})

Action = Literal["drop_response", "delay_response", "reset", "stall"]
ResetWhen = Literal["before_request", "after_request"]
ACTIONS: tuple[str, ...] = typing.get_args(Action)
RESET_WHENS: tuple[str, ...] = typing.get_args(ResetWhen)
RequestPredicate = Callable[[int, int, int], bool]
Address = tuple[str, int]

READ_CHUNK_BYTES = 64 * 1024
MAX_FRAME_BYTES = 256 * 1024 * 1024  # Fetch responses can be large; a frame is buffered whole
MAX_IN_FLIGHT = 1024  # per connection: requests forwarded and not yet answered
MAX_LISTENERS = 64
MAX_CONNECTIONS = 1024
MAX_ERRORS_KEPT = 100
CALL_TIMEOUT_S = 30.0
CLOSE_TIMEOUT_S = 5.0

_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")
_LINGER_RESET = struct.pack("ii", 1, 0)

T = TypeVar("T")


# --- rules: which request gets which fault (no I/O) --------------------------------------


@dataclass(frozen=True)
class RequestInfo:
    """What the proxy knows about one request frame when it decides its fault."""

    api_key: int
    api_version: int
    correlation_id: int
    broker_id: int | None  # of the listener it came through; None until a response names it
    expects_response: bool  # False only for Produce with acks=0
    client_id: str | None = None  # of the request header (a broker's peer: "ackly-broker-<id>")


@dataclass(eq=False)
class Rule:
    """One scripted fault. Build with `FaultProxy.add_rule`; the proxy owns the counters.

    A request *matches* when its API key (None: any), the listener's broker id (None: any),
    its header's client id (None: any) and `match(api_key, api_version, correlation_id)`
    agree. Each matching request counts in `seen`, whether or not this or another rule fires
    on it. The rule fires on a matching request when: at least `after` matching requests came
    before it, it has fired fewer than `count` times (None: no limit), no earlier rule fired
    on it, and — only when `probability` < 1 — one `rng.random()` draw, made for exactly this request, is below
    `probability`. Response faults (drop, delay) never match a request that gets no response.
    """

    action: Action
    api_key: int | None = None
    match: RequestPredicate | None = None
    broker_id: int | None = None
    client_id: str | None = None
    count: int | None = None
    after: int = 0
    probability: float = 1.0
    rng: random.Random | None = None
    delay_ms: int = 0
    duration_ms: int = 0
    when: ResetWhen = "before_request"
    close: bool = True  # drop_response: close the client connection after swallowing
    seen: int = 0
    fired: int = 0

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r}; one of {ACTIONS}")
        if self.when not in RESET_WHENS:
            raise ValueError(f"unknown reset point {self.when!r}; one of {RESET_WHENS}")
        if self.count is not None and self.count < 1:
            raise ValueError("count must be None (no limit) or at least 1")
        if self.after < 0:
            raise ValueError("after must be >= 0")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability must be within [0, 1]")
        if self.probability < 1.0 and self.rng is None:
            raise ValueError("a probabilistic rule needs a seeded rng=random.Random(seed)")
        if self.action == "delay_response" and self.delay_ms <= 0:
            raise ValueError("delay_response needs delay_ms > 0")
        if self.action == "stall" and self.duration_ms <= 0:
            raise ValueError("stall needs duration_ms > 0")

    @property
    def exhausted(self) -> bool:
        return self.count is not None and self.fired >= self.count

    def matches(self, request: RequestInfo) -> bool:
        if self.api_key is not None and request.api_key != self.api_key:
            return False
        if self.broker_id is not None and request.broker_id != self.broker_id:
            return False
        if self.client_id is not None and request.client_id != self.client_id:
            return False
        if self.action in ("drop_response", "delay_response") and not request.expects_response:
            return False
        return self.match is None or self.match(
            request.api_key, request.api_version, request.correlation_id
        )

    def describe(self) -> str:
        key = "any" if self.api_key is None else str(self.api_key)
        return f"{self.action}(api_key={key}, fired={self.fired}, seen={self.seen})"


class RuleBook:
    """The rules in the order they were added; `decide` picks at most one per request."""

    def __init__(self) -> None:
        self.rules: list[Rule] = []

    def add(self, rule: Rule) -> Rule:
        self.rules.append(rule)
        return rule

    def clear(self) -> None:
        self.rules.clear()

    def decide(self, request: RequestInfo) -> Rule | None:
        chosen: Rule | None = None
        for rule in self.rules:
            if not rule.matches(request):
                continue
            rule.seen += 1
            if chosen is not None or rule.seen <= rule.after or rule.exhausted:
                continue
            if rule.probability < 1.0:
                assert rule.rng is not None
                if rule.rng.random() >= rule.probability:
                    continue
            rule.fired += 1
            chosen = rule
        return chosen


# --- reading requests and rewriting responses (no I/O) -----------------------------------


def expects_response(frame: bytes, api_key: int, api_version: int) -> bool:
    """False for a Produce request with acks=0 (the broker sends nothing back), else True.

    Reads only the request header and Produce's leading fields (transactional id, acks); a
    frame it cannot read is assumed to be answered, which is what the broker will try.
    """
    if api_key != PRODUCE_KEY or api_version not in _produce_versions():
        return True
    try:
        pos = body_offset(frame, header_version(api_key, api_version))
        if api_version >= 3:  # transactional_id, a nullable string
            if is_flexible(api_key, api_version):
                length_plus_one, pos = read_uvarint(frame, pos)
                pos += max(length_plus_one - 1, 0)
            else:
                (length,) = _INT16.unpack_from(frame, pos)
                pos += 2 + max(length, 0)
        (acks,) = _INT16.unpack_from(frame, pos)
    except (struct.error, KafkaError):
        return True
    return bool(acks != 0)


@functools.cache
def _produce_versions() -> frozenset[int]:
    return frozenset(known_versions(PRODUCE_KEY))


def _response_header_size(api_key: int, api_version: int) -> int:
    """Correlation id, plus the tagged-field byte of response header v1 (flexible versions)."""
    flexible = is_flexible(api_key, api_version) and api_key != API_VERSIONS_KEY
    return 5 if flexible else 4


def decode_response(api_key: int, api_version: int, payload: bytes) -> tuple[Any, bytes]:
    """A response frame (no size prefix) as (kio response, trailing bytes after the body)."""
    offset = _response_header_size(api_key, api_version)
    value: Any
    value, size = entity_reader(response_type(api_key, api_version))(payload, offset)
    return value, payload[offset + size :]


def encode_response_payload(api_key: int, api_version: int, header: bytes, value: Any,
                            trailing: bytes = b"") -> bytes:
    """The frame payload (no size prefix) for a header taken from the original and a body."""
    assert len(header) == _response_header_size(api_key, api_version)
    buf = io.BytesIO()
    buf.write(header)
    entity_writer(type(value))(buf, value)
    buf.write(trailing)
    return buf.getvalue()


def advertised_brokers(api_key: int, value: Any) -> list[tuple[int, Address]]:
    """(broker id, (host, port)) for every broker address a response carries."""
    found: list[tuple[int, Address]] = []
    if api_key == METADATA_KEY:
        found = [(int(b.node_id), (b.host, int(b.port))) for b in value.brokers]
    elif api_key == DESCRIBE_CLUSTER_KEY:
        found = [(int(b.broker_id), (b.host, int(b.port))) for b in value.brokers]
    elif api_key == FIND_COORDINATOR_KEY:
        entries = value.coordinators if hasattr(value, "coordinators") else (value,)
        # A failed lookup carries node id -1 and no address: nothing to map.
        found = [(int(c.node_id), (c.host, int(c.port))) for c in entries if int(c.node_id) >= 0]
    else:
        raise AssertionError(f"api key {api_key} carries no broker addresses")
    return found


def rewrite_addresses(api_key: int, value: Any, addresses: Mapping[int, Address]) -> Any:
    """The response with each broker's host/port replaced by `addresses[broker id]`.

    Brokers missing from `addresses` (and failed FindCoordinator entries) are left as they are.
    """

    def moved(entity: Any, broker_id: int) -> Any:
        if broker_id not in addresses:
            return entity
        host, port = addresses[broker_id]
        return dataclasses.replace(entity, host=host, port=i32(port))

    if api_key == METADATA_KEY:
        brokers = tuple(moved(b, int(b.node_id)) for b in value.brokers)
        return dataclasses.replace(value, brokers=brokers)
    if api_key == DESCRIBE_CLUSTER_KEY:
        brokers = tuple(moved(b, int(b.broker_id)) for b in value.brokers)
        return dataclasses.replace(value, brokers=brokers)
    if api_key == FIND_COORDINATOR_KEY:
        if hasattr(value, "coordinators"):
            coordinators = tuple(moved(c, int(c.node_id)) for c in value.coordinators)
            return dataclasses.replace(value, coordinators=coordinators)
        return moved(value, int(value.node_id))
    raise AssertionError(f"api key {api_key} carries no broker addresses")


# --- statistics ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleStats:
    index: int
    action: str
    api_key: int | None
    seen: int
    fired: int


@dataclass(frozen=True)
class ProxyStats:
    """A snapshot, taken on the proxy's loop thread.

    `requests`: request frames read from clients, by API key (before any fault).
    `responses`: response frames delivered to clients, by API key.
    `faults`: faults carried out, by action (a drop counts when the response is swallowed).
    `rewritten`: responses whose broker addresses were rewritten.
    `unanswered`: requests the broker skipped (answered a later correlation id first).
    """

    requests: dict[int, int]
    responses: dict[int, int]
    faults: dict[str, int]
    rules: tuple[RuleStats, ...]
    connections: int
    rewritten: int
    unanswered: int
    errors: tuple[str, ...]


@dataclass
class _Counters:
    requests: collections.Counter[int] = field(default_factory=collections.Counter)
    responses: collections.Counter[int] = field(default_factory=collections.Counter)
    faults: collections.Counter[str] = field(default_factory=collections.Counter)
    connections: int = 0
    rewritten: int = 0
    unanswered: int = 0
    errors: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=MAX_ERRORS_KEPT)
    )


# --- the asyncio shell ---------------------------------------------------------------------


class _Listener:
    """One proxy port standing for one broker (or, until a response names it, a bootstrap)."""

    def __init__(self, broker_id: int | None, upstream: Address, explicit: bool) -> None:
        self.broker_id = broker_id
        self.upstream = upstream
        # An upstream the test gave stays; one learned from a response follows the broker.
        self.explicit = explicit
        self.server: asyncio.Server | None = None
        self.host = "127.0.0.1"
        self.port = 0

    @property
    def address(self) -> Address:
        return self.host, self.port


@dataclass
class _Pending:
    request: RequestInfo
    rule: Rule | None


class _ConnectionClosed(Exception):
    """A fault ended this connection on purpose."""


class _ProxyConnection:
    """One client connection and its upstream connection; two pumps, one per direction."""

    def __init__(self, proxy: FaultProxy, listener: _Listener,
                 client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.proxy = proxy
        self.listener = listener
        self.client_reader = client_reader
        self.client_writer = client_writer
        self.upstream_reader: asyncio.StreamReader | None = None
        self.upstream_writer: asyncio.StreamWriter | None = None
        self.pending: collections.deque[_Pending] = collections.deque()
        self.room = asyncio.Event()
        self.room.set()
        self.stalled_until = 0.0  # loop time; no byte moves either way before it
        self.client_id: str | None = None  # of the last request read on this connection

    async def run(self) -> None:
        proxy = self.proxy
        try:
            self.upstream_reader, self.upstream_writer = await asyncio.wait_for(
                asyncio.open_connection(*self.listener.upstream, ssl=proxy.upstream_ssl),
                proxy.connect_timeout_ms / 1000
            )
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            proxy.record_error(f"connecting to {self.listener.upstream}: {exc!r}")
            self.client_writer.close()
            return
        pumps = [asyncio.create_task(self._requests()), asyncio.create_task(self._responses())]
        try:
            done, _ = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                failure = task.exception()
                if failure is None or isinstance(failure, (_ConnectionClosed, ConnectionError)):
                    continue
                proxy.record_error(f"connection on port {self.listener.port}: {failure!r}")
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self.close()

    def close(self) -> None:
        self.client_writer.close()
        if self.upstream_writer is not None:
            self.upstream_writer.close()

    def reset_client(self) -> None:
        """Close the client connection with RST (SO_LINGER 0), not FIN."""
        sock = self.client_writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        self.client_writer.transport.abort()

    async def _obey_stall(self) -> None:
        loop = asyncio.get_running_loop()
        while (remaining := self.stalled_until - loop.time()) > 0:
            await asyncio.sleep(remaining)

    async def _requests(self) -> None:
        """Client -> upstream: whole frames, each decided on before it is forwarded."""
        proxy = self.proxy
        upstream = self.upstream_writer
        assert upstream is not None
        decoder = FrameDecoder(proxy.max_frame_bytes)
        while True:
            data = await self.client_reader.read(READ_CHUNK_BYTES)
            if not data:
                return
            decoder.receive_data(data)
            while (frame := decoder.next_frame()) is not None:
                await self._request(bytes(frame), upstream)

    async def _request(self, frame: bytes, upstream: asyncio.StreamWriter) -> None:
        proxy = self.proxy
        if len(frame) < 10:  # not even a header: let the broker judge it
            await self._obey_stall()
            upstream.write(_INT32.pack(len(frame)) + frame)
            await upstream.drain()
            return
        header = parse_prefix(frame)
        request = RequestInfo(
            api_key=header.api_key, api_version=header.api_version,
            correlation_id=header.correlation_id, broker_id=self.listener.broker_id,
            expects_response=expects_response(frame, header.api_key, header.api_version),
            client_id=header.client_id,
        )
        self.client_id = header.client_id
        proxy.counters.requests[request.api_key] += 1
        rule = proxy.rules.decide(request)
        if rule is not None and rule.action == "stall":
            proxy.counters.faults["stall"] += 1
            loop = asyncio.get_running_loop()
            self.stalled_until = max(self.stalled_until, loop.time() + rule.duration_ms / 1000)
        if rule is not None and rule.action == "reset" and rule.when == "before_request":
            proxy.counters.faults["reset"] += 1
            self.reset_client()
            raise _ConnectionClosed("reset before the request")
        await self._obey_stall()
        if request.expects_response:
            while len(self.pending) >= MAX_IN_FLIGHT:
                self.room.clear()
                await self.room.wait()
            self.pending.append(_Pending(request, rule))
        upstream.write(_INT32.pack(len(frame)) + frame)
        await upstream.drain()
        if rule is not None and rule.action == "reset" and not request.expects_response:
            # No response will prove the broker read it; written and drained is the best
            # evidence, and the upstream side is closed gracefully so the broker still reads it.
            proxy.counters.faults["reset"] += 1
            self.reset_client()
            raise _ConnectionClosed("reset after the request")

    def _take_pending(self, correlation_id: int) -> _Pending | None:
        skipped = next(
            (i for i, p in enumerate(self.pending) if p.request.correlation_id == correlation_id), None
        )
        if skipped is None:
            return None
        for _ in range(skipped):  # answered out of turn: the broker will not answer these
            self.pending.popleft()
            self.proxy.counters.unanswered += 1
        self.room.set()
        return self.pending.popleft()

    async def _responses(self) -> None:
        """Upstream -> client: whole frames, in the order the broker sent them."""
        proxy = self.proxy
        reader = self.upstream_reader
        assert reader is not None
        decoder = FrameDecoder(proxy.max_frame_bytes)
        while True:
            data = await reader.read(READ_CHUNK_BYTES)
            if not data:
                return
            decoder.receive_data(data)
            while (frame := decoder.next_frame()) is not None:
                await self._response(bytes(frame))

    async def _response(self, frame: bytes) -> None:
        proxy = self.proxy
        if len(frame) < 4:
            raise FrameError(f"response frame of {len(frame)} bytes has no correlation id")
        (correlation_id,) = _INT32.unpack_from(frame, 0)
        pending = self._take_pending(correlation_id)
        if pending is None:
            await self._obey_stall()
            self.client_writer.write(_INT32.pack(len(frame)) + frame)
            await self.client_writer.drain()
            return
        request, rule = pending.request, pending.rule
        if rule is not None and rule.action == "drop_response":
            proxy.counters.faults["drop_response"] += 1
            if rule.close:
                raise _ConnectionClosed("closed after a dropped response")
            return
        if rule is not None and rule.action == "reset":  # after_request: the broker answered
            proxy.counters.faults["reset"] += 1
            self.reset_client()
            raise _ConnectionClosed("reset after the request")
        if rule is not None and rule.action == "delay_response":
            proxy.counters.faults["delay_response"] += 1
            await asyncio.sleep(rule.delay_ms / 1000)
        if request.api_key in ADDRESS_API_KEYS:
            frame = await proxy.rewrite(request, frame)
        await self._obey_stall()
        self.client_writer.write(_INT32.pack(len(frame)) + frame)
        await self.client_writer.drain()
        proxy.counters.responses[request.api_key] += 1


class FaultProxy:
    """A Kafka-aware TCP proxy with scripted faults, on its own event-loop thread.

    Give either `upstream=(host, port)` (a bootstrap broker; the others are found through
    Metadata) or `upstreams={broker_id: (host, port)}`. All methods are synchronous and may be
    called from any thread; they run on the proxy's loop and wait at most 30 s.
    """

    def __init__(
        self,
        upstream: Address | None = None,
        *,
        upstreams: Mapping[int, Address] | None = None,
        host: str = "127.0.0.1",
        connect_timeout_ms: int = 10_000,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        server_ssl: ssl.SSLContext | None = None,
        upstream_ssl: ssl.SSLContext | None = None,
    ) -> None:
        if (upstream is None) == (upstreams is None):
            raise ValueError("give exactly one of upstream=(host, port) or upstreams={id: (host, port)}")
        self.host = host
        self.connect_timeout_ms = connect_timeout_ms
        self.max_frame_bytes = max_frame_bytes
        self.server_ssl = server_ssl  # TLS towards clients (see "TLS and SASL")
        self.upstream_ssl = upstream_ssl  # TLS towards brokers
        self.rules = RuleBook()
        self.counters = _Counters()
        self._initial: list[_Listener] = []
        if upstream is not None:
            self._initial.append(_Listener(None, upstream, explicit=True))
        for broker_id, address in sorted((upstreams or {}).items()):
            self._initial.append(_Listener(broker_id, address, explicit=True))
        self._listeners: list[_Listener] = []
        self._by_broker: dict[int, _Listener] = {}
        self._listener_lock: asyncio.Lock | None = None
        self._connections: dict[asyncio.Task[None], _ProxyConnection] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        assert self._thread is None, "start() once"

        async def setup() -> None:
            self._loop = asyncio.get_running_loop()
            await self._open_initial()

        self._loop, self._thread = start_loop_thread("ackly-fault-proxy", setup, CALL_TIMEOUT_S)
        return self

    def stop(self) -> None:
        """Close every listener and connection and end the loop thread. Idempotent."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        with contextlib.suppress(RuntimeError, TimeoutError):
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(CALL_TIMEOUT_S)
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(loop.stop)
        thread.join(CALL_TIMEOUT_S)

    def __enter__(self) -> FaultProxy:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- addresses -------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """`host:port,...` of the listeners the proxy was started with (give it to clients)."""
        return ",".join(f"{lst.host}:{lst.port}" for lst in self._initial)

    @property
    def listeners(self) -> dict[int, str]:
        """broker id -> `host:port` of its proxy listener, for every broker known so far."""
        return self._call(lambda: {bid: f"{lst.host}:{lst.port}" for bid, lst in self._by_broker.items()})

    # --- rules -----------------------------------------------------------------------------

    def add_rule(
        self,
        api_key: int | None,
        action: Action,
        *,
        count: int | None = None,
        after: int = 0,
        probability: float = 1.0,
        rng: random.Random | None = None,
        match: RequestPredicate | None = None,
        broker_id: int | None = None,
        client_id: str | None = None,
        delay_ms: int = 0,
        duration_ms: int = 0,
        when: ResetWhen = "before_request",
        close: bool = True,
    ) -> Rule:
        """Script a fault; see `Rule` for when it fires. Returns the rule (its counters live)."""
        rule = Rule(
            action=action, api_key=api_key, match=match, broker_id=broker_id, client_id=client_id, count=count,
            after=after, probability=probability, rng=rng, delay_ms=delay_ms,
            duration_ms=duration_ms, when=when, close=close,
        )
        return self._call(lambda: self.rules.add(rule))

    def remove_rule(self, rule: Rule) -> None:
        """Remove one rule (as `add_rule` returned it); the others stay."""

        def remove() -> None:
            if rule in self.rules.rules:
                self.rules.rules.remove(rule)

        self._call(remove)

    def clear_rules(self) -> None:
        """Remove every rule. Faults already decided for requests in flight still happen."""
        self._call(self.rules.clear)

    def stats(self) -> ProxyStats:
        def snapshot() -> ProxyStats:
            c = self.counters
            return ProxyStats(
                requests=dict(c.requests), responses=dict(c.responses), faults=dict(c.faults),
                rules=tuple(RuleStats(i, r.action, r.api_key, r.seen, r.fired)
                            for i, r in enumerate(self.rules.rules)),
                connections=c.connections, rewritten=c.rewritten, unanswered=c.unanswered,
                errors=tuple(c.errors),
            )

        return self._call(snapshot)

    def disconnect_all(self, reset: bool = False, *, broker_id: int | None = None,
                       client_id: str | None = None) -> int:
        """Close every client connection now (with RST if `reset`); returns how many. With
        `broker_id` and/or `client_id`: only the connections through that broker's listener
        and/or whose last request carried that client id."""

        async def close_all() -> int:
            connections = {
                task: conn for task, conn in self._connections.items()
                if (broker_id is None or conn.listener.broker_id == broker_id)
                and (client_id is None or conn.client_id == client_id)
            }
            for task, conn in connections.items():
                if reset:
                    conn.reset_client()
                task.cancel()
            if connections:
                await asyncio.wait(connections, timeout=CLOSE_TIMEOUT_S)
            return len(connections)

        return self._run(close_all())

    # --- loop-side internals -----------------------------------------------------------------

    def record_error(self, message: str) -> None:
        log.warning("fault proxy: %s", message)
        self.counters.errors.append(message)

    def _call(self, fn: Callable[[], T]) -> T:
        async def wrapper() -> T:
            return fn()

        return self._run(wrapper())

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        loop = self._loop
        assert loop is not None and self._thread is not None, "start() the proxy first"
        assert threading.current_thread() is not self._thread, "would wait on its own loop"
        return asyncio.run_coroutine_threadsafe(coro, loop).result(CALL_TIMEOUT_S)

    async def _open_initial(self) -> None:
        self._listener_lock = asyncio.Lock()
        for listener in self._initial:
            await self._open(listener)

    async def _open(self, listener: _Listener) -> None:
        if len(self._listeners) >= MAX_LISTENERS:
            raise RuntimeError(f"more than {MAX_LISTENERS} proxy listeners")

        async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._serve(listener, reader, writer)

        listener.server = await asyncio.start_server(on_connection, self.host, 0, ssl=self.server_ssl)
        listener.host, listener.port = listener.server.sockets[0].getsockname()[:2]
        self._listeners.append(listener)
        if listener.broker_id is not None:
            self._by_broker[listener.broker_id] = listener

    async def _serve(self, listener: _Listener, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= MAX_CONNECTIONS:
            self.record_error(f"more than {MAX_CONNECTIONS} connections; refusing one")
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self.counters.connections += 1
        conn = _ProxyConnection(self, listener, reader, writer)
        self._connections[task] = conn
        try:
            await conn.run()
        except asyncio.CancelledError:
            conn.close()  # stop() or disconnect_all(): end quietly
        finally:
            del self._connections[task]

    async def _listener_for(self, broker_id: int, advertised: Address) -> _Listener:
        """The listener standing for this broker id, created on first sight."""
        assert self._listener_lock is not None
        async with self._listener_lock:
            listener = self._by_broker.get(broker_id)
            if listener is not None:
                if not listener.explicit:
                    listener.upstream = advertised  # e.g. the broker restarted on another port
                return listener
            for candidate in self._listeners:
                if candidate.broker_id is None and candidate.upstream == advertised:
                    candidate.broker_id = broker_id  # the bootstrap turns out to be this broker
                    self._by_broker[broker_id] = candidate
                    return candidate
            listener = _Listener(broker_id, advertised, explicit=False)
            await self._open(listener)
            return listener

    async def rewrite(self, request: RequestInfo, frame: bytes) -> bytes:
        """A response frame with broker addresses pointing at the proxy's listeners."""
        api_key, version = request.api_key, request.api_version
        if version not in known_versions(api_key):
            return frame  # no schema, so no address a client could read either
        try:
            value, trailing = decode_response(api_key, version, frame)
        except Exception as exc:  # kio raises several types for malformed input
            # E.g. the broker's bare UNSUPPORTED_VERSION answer. A client cannot read an
            # address out of what does not decode, so it cannot bypass the proxy by it.
            self.record_error(f"api {api_key} v{version} response not rewritten: {exc!r}")
            return frame
        addresses: dict[int, Address] = {}
        for broker_id, advertised in advertised_brokers(api_key, value):
            addresses[broker_id] = (await self._listener_for(broker_id, advertised)).address
        rewritten = rewrite_addresses(api_key, value, addresses)
        header = frame[: _response_header_size(api_key, version)]
        self.counters.rewritten += 1
        return encode_response_payload(api_key, version, header, rewritten, trailing)

    async def _shutdown(self) -> None:
        for listener in self._listeners:
            if listener.server is not None:
                listener.server.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT_S)
        for listener in self._listeners:
            if listener.server is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(listener.server.wait_closed(), CLOSE_TIMEOUT_S)


def parse_address(address: str) -> Address:
    """`host:port` -> (host, port)."""
    host, _, port = address.strip().rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"not a host:port address: {address!r}")
    return host, int(port)
