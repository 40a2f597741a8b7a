"""Outbound connections from this broker to the other brokers (replica fetches, forwarded
requests): the shell side of the core's `PeerRequest`s.

One connection per destination broker and channel (the request's `channel`: "replica" for
fetches, "txn" for transaction markers and verifications), opened when the first request for
it arrives and kept open. Requests are pipelined: each is written at once with the next
correlation id, and since a Kafka broker answers one connection's requests in order,
responses are matched to the oldest request in flight; a response whose correlation id is
not that one breaks the connection (the peer is confused, nothing after it can be trusted).

Exactly one outcome per request, always delivered from a loop callback, never from inside
`send()` (so the node is never re-entered while it hands out its outputs):
- `on_response(request_id, response)`: the peer answered; `response` is the kio object.
- `on_failure(request_id, reason)`: no answer will come. The peer may or may not have
  processed the request (it was written, then the connection closed or the request timed
  out), or it surely did not (connect failed, queue full, unknown address, pool closed).

Time limits: every request has a deadline `request_timeout_ms` after `send()`, whether it is
still waiting for a connection or already written. A written request that passes its deadline
closes its connection (Kafka's NetworkClient does the same: a pipelined connection cannot skip
one answer), so every other request in flight on it fails too.

Reconnecting: a connection that closes is reopened when the next request comes. A connect that
fails fails every request waiting for it, then the link waits (exponential backoff with jitter,
`backoff_initial_ms` doubling up to `backoff_max_ms`) before it tries again; requests sent
meanwhile wait in its queue. So a node that resends at once on failure is paced by the backoff
instead of spinning. If the destination's address changes (it restarted elsewhere), the old
connection is closed and a new one opened to the new address.

Security: connections go to each broker's inter-broker listener (its registered address)
with that listener's protocol; with TLS (`ssl_context`) the peer's certificate is checked
and this broker's own is presented; with SASL (`sasl`) a new connection authenticates before
it carries a request, and a failed exchange counts as a failed connect.

Bounds: at most `max_pending` requests per destination, queued plus in flight; beyond that
`send()` fails the request. A response frame is at most `max_frame_bytes`.
"""

from __future__ import annotations

import asyncio
import io
import logging
import random
import ssl
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from kio.serial import entity_reader, entity_writer

from ackly.protocol.frames import FrameDecoder, FrameError
from ackly.protocol.headers import API_VERSIONS_KEY, skip_tagged_fields
from ackly.protocol.messages import header_version, is_flexible, response_type
from ackly.protocol.request_shape import check_shape
from ackly.server.peer_sasl import PeerSasl, authenticate

log = logging.getLogger("ackly.peers")

Address = tuple[str, int]
ResponseCallback = Callable[[int, Any], None]
FailureCallback = Callable[[int, str], None]
AddressResolver = Callable[[int], Address | None]

_HEADER = struct.Struct(">ihhih")  # size, api key, api version, correlation id, client id length
_INT32 = struct.Struct(">i")
_MAX_CORRELATION_ID = 2**31 - 1
DEFAULT_CHANNEL = "replica"


class OutboundRequest(Protocol):
    """What the pool needs of a request (the core's `PeerRequest` has these fields)."""

    @property
    def request_id(self) -> int: ...

    @property
    def broker_id(self) -> int: ...

    @property
    def request(self) -> Any: ...

    @property
    def channel(self) -> str: ...


@dataclass(frozen=True)
class PeerConfig:
    client_id: str  # "ackly-broker-<id>", so the peer's logs say who asked
    request_timeout_ms: int = 30_000
    connect_timeout_ms: int = 10_000
    backoff_initial_ms: int = 50
    backoff_max_ms: int = 1_000
    max_pending: int = 1_000  # per destination: waiting for a connection plus in flight
    max_frame_bytes: int = 256 * 1024 * 1024

    def __post_init__(self) -> None:
        assert self.request_timeout_ms > 0 and self.connect_timeout_ms > 0
        assert 0 < self.backoff_initial_ms <= self.backoff_max_ms
        assert self.max_pending > 0 and self.max_frame_bytes > 0


def encode_request_body(request: Any) -> bytes:
    buf = io.BytesIO()
    entity_writer(type(request))(buf, request)
    return buf.getvalue()


def encode_request_header(api_key: int, api_version: int, correlation_id: int, client_id: bytes,
                          body_size: int) -> bytes:
    """The size prefix and request header (v1, or v2 with empty tagged fields)."""
    tagged = b"\x00" if header_version(api_key, api_version) >= 2 else b""
    size = _HEADER.size - 4 + len(client_id) + len(tagged) + body_size
    return _HEADER.pack(size, api_key, api_version, correlation_id, len(client_id)) + client_id + tagged


def decode_response(api_key: int, api_version: int, frame: bytes | memoryview) -> Any:
    """The kio response in a response frame (no size prefix; correlation id already checked).

    Response header v1 (with tagged fields) for flexible versions, except ApiVersions, whose
    response header is always v0 (KIP-511)."""
    offset = 4
    if is_flexible(api_key, api_version) and api_key != API_VERSIONS_KEY:
        offset = skip_tagged_fields(frame, offset)
    value: Any
    cls = response_type(api_key, api_version)
    check_shape(cls, frame, offset)  # a declared length past the frame: refused, not allocated
    value, _size = entity_reader(cls)(frame, offset)
    return value


class _Pending:
    __slots__ = ("api_key", "api_version", "body", "correlation_id", "deadline", "request_id")

    def __init__(self, request_id: int, api_key: int, api_version: int, body: bytes,
                 deadline: float) -> None:
        self.request_id = request_id
        self.api_key = api_key
        self.api_version = api_version
        self.body = body
        self.deadline = deadline  # loop.time() seconds
        self.correlation_id = -1


class _LinkProtocol(asyncio.BufferedProtocol):
    """Bytes from one peer connection into frames, handed to its link."""

    def __init__(self, link: _PeerLink, max_frame_bytes: int) -> None:
        self.link: _PeerLink | None = link
        self.decoder = FrameDecoder(max_frame_bytes)
        self.transport: asyncio.Transport | None = None
        self.lost = False
        # While the connection authenticates (SASL), its frames go here, not to the link;
        # None marks the end of the connection.
        self.auth_frames: asyncio.Queue[bytes | None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.decoder.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self.decoder.buffer_updated(nbytes)
        try:
            while self.link is not None and (frame := self.decoder.next_frame()) is not None:
                if self.auth_frames is not None:
                    self.auth_frames.put_nowait(bytes(frame))
                    continue
                self.link.on_frame(self, frame)
        except FrameError as exc:
            if self.link is not None:
                self.link.on_broken(self, f"bad framing: {exc}")

    def eof_received(self) -> bool | None:
        self.lost = True
        if self.auth_frames is not None:
            self.auth_frames.put_nowait(None)
        if self.link is not None:
            self.link.on_broken(self, "closed by the peer")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.auth_frames is not None:
            self.auth_frames.put_nowait(None)
        if self.link is not None:
            self.link.on_broken(self, f"connection lost: {exc}" if exc else "connection closed")


class _PeerLink:
    """The connection to one destination broker and the requests waiting on it.

    States: idle (no connection), connecting, connected, backoff (after a failed connect).
    While connected the queue is empty: requests are written as they come.
    """

    def __init__(self, pool: PeerPool, broker_id: int) -> None:
        self.pool = pool
        self.broker_id = broker_id
        self.state = "idle"
        self.address: Address | None = None
        self.protocol: _LinkProtocol | None = None
        self.queue: deque[_Pending] = deque()  # not yet written
        self.in_flight: deque[_Pending] = deque()  # written, in correlation-id order
        self.next_correlation_id = 0
        self.failed_connects = 0
        self.connect_task: asyncio.Task[None] | None = None
        self.backoff_handle: asyncio.TimerHandle | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.timer_due: float | None = None

    @property
    def pending(self) -> int:
        return len(self.queue) + len(self.in_flight)

    # --- requests in ---------------------------------------------------------------------

    def submit(self, pending: _Pending, address: Address) -> None:
        if self.state == "connected" and address != self.address:
            # Inside send(): the requests in flight fail on the next loop turn, not from here.
            self.disconnect(f"broker {self.broker_id} moved to {address[0]}:{address[1]}", soon=True)
        self.address = address if self.state in ("idle", "backoff") else self.address
        if self.state == "connected":
            self.write(pending)
        else:
            self.queue.append(pending)
            if self.state == "idle":
                self.connect()
        self.arm_timer()

    def write(self, pending: _Pending) -> None:
        protocol = self.protocol
        assert protocol is not None and protocol.transport is not None
        pending.correlation_id = self.next_correlation_id
        self.next_correlation_id = (self.next_correlation_id + 1) % _MAX_CORRELATION_ID
        header = encode_request_header(
            pending.api_key, pending.api_version, pending.correlation_id, self.pool.client_id,
            len(pending.body),
        )
        protocol.transport.writelines((header, pending.body))
        pending.body = b""  # written: no need to hold it
        self.in_flight.append(pending)

    # --- connecting ----------------------------------------------------------------------

    def connect(self) -> None:
        assert self.state == "idle" and self.address is not None
        self.state = "connecting"
        self.connect_task = asyncio.get_running_loop().create_task(self._connect(self.address))

    async def _connect(self, address: Address) -> None:
        loop = asyncio.get_running_loop()
        protocol = _LinkProtocol(self, self.pool.config.max_frame_bytes)
        try:
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: protocol, address[0], address[1], ssl=self.pool.ssl_context,
                    server_hostname=address[0] if self.pool.ssl_context is not None else None,
                ),
                self.pool.config.connect_timeout_ms / 1000,
            )
        except asyncio.CancelledError:
            protocol.link = None  # the pool is closing; a connection made meanwhile goes too
            if protocol.transport is not None:
                protocol.transport.abort()
            raise
        except (OSError, TimeoutError) as exc:
            self.connect_task = None
            self.on_connect_failed(address, exc)
            return
        self.connect_task = None
        if self.state != "connecting":  # the pool closed meanwhile
            protocol.link = None
            if protocol.transport is not None:
                protocol.transport.abort()
            return
        if protocol.transport is None or protocol.transport.is_closing() or protocol.lost:
            protocol.link = None
            self.on_connect_failed(address, ConnectionError("closed by the peer on connect"))
            return
        if self.pool.sasl is not None:
            try:
                await asyncio.wait_for(self._authenticate(protocol, self.pool.sasl),
                                       self.pool.config.connect_timeout_ms / 1000)
            except asyncio.CancelledError:
                protocol.link = None
                protocol.transport.abort()
                raise
            except (ConnectionError, OSError, TimeoutError) as exc:
                protocol.link = None
                protocol.transport.abort()
                self.on_connect_failed(address, exc)
                return
            if self.state != "connecting":  # the pool closed meanwhile
                protocol.link = None
                protocol.transport.abort()
                return
        self.state = "connected"
        self.protocol = protocol
        self.failed_connects = 0
        queued, self.queue = self.queue, deque()
        for pending in queued:
            self.write(pending)
        self.arm_timer()

    async def _authenticate(self, protocol: _LinkProtocol, sasl: PeerSasl) -> None:
        """The SASL exchange on a new connection (server/peer_sasl.py), before any request."""
        transport = protocol.transport
        assert transport is not None
        frames: asyncio.Queue[bytes | None] = asyncio.Queue()
        protocol.auth_frames = frames
        correlation_id = 0

        async def exchange(request: Any) -> Any:
            nonlocal correlation_id
            api_key, api_version = int(request.__api_key__), int(request.__version__)
            body = encode_request_body(request)
            transport.writelines((encode_request_header(api_key, api_version, correlation_id,
                                                        self.pool.client_id, len(body)), body))
            frame = await frames.get()
            if frame is None:
                raise ConnectionError("closed by the peer during SASL authentication")
            if len(frame) < 4 or _INT32.unpack_from(frame, 0)[0] != correlation_id:
                raise ConnectionError("a SASL answer with the wrong correlation id")
            correlation_id += 1
            return decode_response(api_key, api_version, frame)

        try:
            await authenticate(exchange, sasl)
        finally:
            protocol.auth_frames = None
        self.next_correlation_id = correlation_id

    def on_connect_failed(self, address: Address, exc: BaseException) -> None:
        reason = f"connect to broker {self.broker_id} at {address[0]}:{address[1]} failed: {exc!r}"
        log.info("%s", reason)
        self.failed_connects += 1
        config = self.pool.config
        backoff_ms = min(config.backoff_initial_ms * 2 ** min(self.failed_connects - 1, 20),
                         config.backoff_max_ms)
        backoff_ms *= 0.8 + 0.4 * self.pool.rng.random()  # jitter: brokers do not retry in step
        self.state = "backoff"
        self.backoff_handle = asyncio.get_running_loop().call_later(backoff_ms / 1000, self.end_backoff)
        queued, self.queue = self.queue, deque()
        self.pool.fail_all(queued, reason)
        self.arm_timer()

    def end_backoff(self) -> None:
        self.backoff_handle = None
        if self.state != "backoff":
            return
        self.state = "idle"
        if self.queue:
            address = self.pool.resolve(self.broker_id)
            if address is None:
                queued, self.queue = self.queue, deque()
                self.pool.fail_all(queued, f"broker {self.broker_id} has no known address")
                return
            self.address = address
            self.connect()

    # --- responses in --------------------------------------------------------------------

    def on_frame(self, protocol: _LinkProtocol, frame: bytes | memoryview) -> None:
        if protocol is not self.protocol:
            return
        if len(frame) < 4:
            self.on_broken(protocol, "a response frame shorter than its header")
            return
        (correlation_id,) = _INT32.unpack_from(frame, 0)
        if not self.in_flight or self.in_flight[0].correlation_id != correlation_id:
            expected = self.in_flight[0].correlation_id if self.in_flight else None
            self.on_broken(
                protocol, f"response with correlation id {correlation_id}, expected {expected}"
            )
            return
        pending = self.in_flight.popleft()
        try:
            response = decode_response(pending.api_key, pending.api_version, frame)
        except Exception as exc:  # kio raises several types for malformed input
            # The framing still holds, so the connection does; only this answer is lost.
            self.pool.fail(pending, f"undecodable response (api {pending.api_key} "
                                    f"v{pending.api_version}): {exc!r}")
        else:
            self.pool.respond(pending, response)
        self.arm_timer()

    def on_broken(self, protocol: _LinkProtocol, reason: str) -> None:
        if protocol is self.protocol:
            self.disconnect(f"connection to broker {self.broker_id}: {reason}")

    def disconnect(self, reason: str, *, soon: bool = False) -> None:
        """Close the connection now; every request in flight on it fails with `reason` (on the
        next loop turn if `soon`)."""
        protocol, self.protocol = self.protocol, None
        if protocol is not None:
            protocol.link = None
            if protocol.transport is not None:
                protocol.transport.abort()
        if self.state == "connected":
            self.state = "idle"
        in_flight, self.in_flight = self.in_flight, deque()
        if soon:
            asyncio.get_running_loop().call_soon(self.pool.fail_all, in_flight, reason)
        else:
            self.pool.fail_all(in_flight, reason)
        if self.queue and self.state == "idle":
            self.connect()
        self.arm_timer()

    # --- deadlines -----------------------------------------------------------------------

    def arm_timer(self) -> None:
        heads = [d[0].deadline for d in (self.queue, self.in_flight) if d]
        due = min(heads, default=None)
        if due == self.timer_due:
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.timer_due = due
        if due is not None:
            self.timer = asyncio.get_running_loop().call_at(due, self.on_timer)

    def on_timer(self) -> None:
        self.timer = None
        self.timer_due = None
        now = asyncio.get_running_loop().time()
        timeout_ms = self.pool.config.request_timeout_ms
        expired: list[_Pending] = []
        while self.queue and self.queue[0].deadline <= now:
            expired.append(self.queue.popleft())
        self.pool.fail_all(expired, f"timed out after {timeout_ms} ms waiting for a connection "
                                    f"to broker {self.broker_id}")
        if self.in_flight and self.in_flight[0].deadline <= now:
            head = self.in_flight.popleft()
            self.pool.fail(head, f"no response from broker {self.broker_id} within {timeout_ms} ms")
            # Pipelined: the late answer would still come first, so the connection is done.
            self.disconnect(f"connection to broker {self.broker_id} closed after a request timed out")
        self.arm_timer()

    def close(self, reason: str) -> None:
        self.state = "closed"
        if self.connect_task is not None:
            self.connect_task.cancel()
            self.connect_task = None
        if self.backoff_handle is not None:
            self.backoff_handle.cancel()
            self.backoff_handle = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        queued, self.queue = self.queue, deque()
        self.disconnect(reason)
        self.pool.fail_all(queued, reason)


class PeerPool:
    """Connections to every other broker this one talks to; see the module docstring.

    Call every method on the event loop's thread. `resolve(broker_id)` gives a broker's
    current address (the node's `broker_address`), or None if it is not known.
    """

    def __init__(
        self,
        config: PeerConfig,
        *,
        resolve: AddressResolver,
        on_response: ResponseCallback,
        on_failure: FailureCallback,
        rng: random.Random | None = None,
        ssl_context: ssl.SSLContext | None = None,
        sasl: PeerSasl | None = None,
    ) -> None:
        """`ssl_context`: connect with TLS (the inter-broker listener's protocol uses it);
        `sasl`: authenticate every new connection first (server/peer_sasl.py)."""
        self.config = config
        self.ssl_context = ssl_context
        self.sasl = sasl
        self.client_id = config.client_id.encode()
        self.resolve = resolve
        self._on_response = on_response
        self._on_failure = on_failure
        self.rng = rng or random.Random()
        # One link per (broker, channel): a marker or a verification request never waits
        # behind a replica fetch long-polling on the same broker's "replica" connection.
        self._links: dict[tuple[int, str], _PeerLink] = {}
        self._closed = False

    def send(self, request: OutboundRequest) -> None:
        """Queue one request for its broker. Never raises for the peer's sake and never calls
        back from inside: a request that cannot even be queued fails on the next loop turn."""
        loop = asyncio.get_running_loop()
        kio_request = request.request
        api_key = int(kio_request.__api_key__)
        api_version = int(kio_request.__version__)
        pending = _Pending(
            request.request_id, api_key, api_version, encode_request_body(kio_request),
            loop.time() + self.config.request_timeout_ms / 1000,
        )
        if self._closed:
            self._fail_soon(pending, "the peer pool is closed")
            return
        address = self.resolve(request.broker_id)
        if address is None:
            self._fail_soon(pending, f"broker {request.broker_id} has no known address")
            return
        key = (request.broker_id, getattr(request, "channel", DEFAULT_CHANNEL))
        link = self._links.get(key)
        if link is None:
            link = self._links[key] = _PeerLink(self, request.broker_id)
        if link.pending >= self.config.max_pending:
            self._fail_soon(pending, f"{link.pending} requests already pending for broker "
                                     f"{request.broker_id}")
            return
        link.submit(pending, address)

    def in_flight(self, broker_id: int, channel: str = DEFAULT_CHANNEL) -> int:
        """Requests queued or written to `broker_id` and not yet answered (for tests)."""
        link = self._links.get((broker_id, channel))
        return 0 if link is None else link.pending

    def connected(self, broker_id: int, channel: str = DEFAULT_CHANNEL) -> bool:
        link = self._links.get((broker_id, channel))
        return link is not None and link.state == "connected"

    async def close(self) -> None:
        """Close every connection; every request not yet answered fails ("pool closed")."""
        self._closed = True
        links = list(self._links.values())
        self._links.clear()
        for link in links:
            link.close("the peer pool is closed")
        await asyncio.sleep(0)  # let aborted transports run connection_lost

    # --- outcomes (exactly one per request) ----------------------------------------------

    def respond(self, pending: _Pending, response: Any) -> None:
        try:
            self._on_response(pending.request_id, response)
        except Exception:
            log.exception("on_peer_response failed for request %d", pending.request_id)

    def fail(self, pending: _Pending, reason: str) -> None:
        try:
            self._on_failure(pending.request_id, reason)
        except Exception:
            log.exception("on_peer_failure failed for request %d", pending.request_id)

    def fail_all(self, pendings: list[_Pending] | deque[_Pending], reason: str) -> None:
        for pending in pendings:
            self.fail(pending, reason)

    def _fail_soon(self, pending: _Pending, reason: str) -> None:
        asyncio.get_running_loop().call_soon(self.fail, pending, reason)
