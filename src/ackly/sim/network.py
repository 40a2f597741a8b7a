"""The simulated network: connections between clients and brokers and between brokers.

Owns: every connection (one per (source endpoint, destination broker), opened on first use and
kept until it is reset), the requests in flight on each, and the network faults: per-message
delay, stalled links, resets, and partitions (cut endpoint pairs, both ways).

A request travels as a real frame (`frames.encode_request`) to the destination node's
`handle_frame`, with a `RequestContext` whose sink collects the node's answer as pieces (bytes,
or file ranges that are read when the answer is written, as the server's connection does). As
in `server/connection.py`, answers leave in request order whatever order the node gives them in,
and the requester matches each response to its oldest request in flight (as `server/peers.py`
does), decoding it with kio.

Invariants:
- FIFO per connection and direction: a message is never delivered before one sent earlier on
  the same connection in the same direction (delays only push later messages further back).
- Exactly one outcome per request: `on_response` or `on_failure`, never both, never twice;
  a request whose connection is reset, or that gets no answer within its timeout, fails (and a
  timeout resets its connection, as Kafka's NetworkClient does: a pipelined connection cannot
  skip one answer). A failure means "may or may not have been processed".
- A partition breaks every connection across it, silently: the message that meets the cut is
  lost and so is everything after it on that connection (TCP never delivers a later byte
  without the earlier ones); the requester learns it only by timing out, which resets the
  connection. A short slowdown that TCP would ride out is a stall instead (messages held back).
- Nothing reaches a node incarnation other than the one the connection was opened to.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ackly.broker.context import RequestContext
from ackly.errors import KafkaError
from ackly.protocol.frames import FrameError
from ackly.protocol.headers import parse_prefix
from ackly.sim import frames
from ackly.sim.scheduler import Event, Scheduler

if TYPE_CHECKING:
    from ackly.sim.broker import BrokerHost

ResponseCallback = Callable[[Any], None]
FailureCallback = Callable[[str], None]

API_NAMES = {
    0: "Produce", 1: "Fetch", 3: "Metadata", 18: "ApiVersions", 19: "CreateTopics",
    23: "OffsetsForLeaderEpoch",
}


def broker_endpoint(broker_id: int) -> str:
    return f"b{broker_id}"


@dataclass
class NetworkFaults:
    """This seed's network weather. `delay_rate` of messages get up to `delay_max_ms` extra."""

    latency_ms: int = 1
    delay_rate: float = 0.0
    delay_max_ms: int = 0


@dataclass
class _Request:
    correlation_id: int
    api_key: int
    version: int
    on_response: ResponseCallback
    on_failure: FailureCallback
    timeout: Event | None = None


@dataclass
class _Slot:
    correlation_id: int
    pieces: Sequence[Any] | None = None
    done: bool = False


@dataclass
class Connection:
    conn_id: int
    src: str
    dst: int
    dst_incarnation: int
    client_id: str
    alive: bool = True
    broken: bool = False  # a partition cut it: nothing more gets through, unnoticed until a timeout
    next_correlation_id: int = 1
    inflight: deque[_Request] = field(default_factory=deque)
    slots: deque[_Slot] = field(default_factory=deque)
    last_request_ms: int = 0
    last_response_ms: int = 0
    channel: str = ""  # a broker's second connection to one peer (io.PeerRequest.channel)


class Network:
    def __init__(
        self, scheduler: Scheduler, rng: random.Random, hosts: Callable[[int], BrokerHost | None],
        faults: NetworkFaults,
    ) -> None:
        self.scheduler = scheduler
        self.rng = rng
        self.hosts = hosts
        self.faults = faults
        self.cuts: set[frozenset[str]] = set()
        self.stalled_until: dict[tuple[str, str], int] = {}  # (from, to) endpoint -> time
        self._connections: dict[tuple[str, int, str], Connection] = {}
        self._next_conn_id = 1
        self.messages_sent = 0
        self.messages_dropped = 0
        self.resets = 0

    # --- faults ------------------------------------------------------------------------------

    def is_cut(self, a: str, b: str) -> bool:
        return frozenset((a, b)) in self.cuts

    def cut(self, a: str, b: str) -> None:
        self.cuts.add(frozenset((a, b)))

    def heal(self, a: str, b: str) -> None:
        self.cuts.discard(frozenset((a, b)))

    def heal_all(self) -> None:
        self.cuts.clear()
        self.stalled_until.clear()

    def stall(self, a: str, b: str, until_ms: int) -> None:
        """Hold every message from a to b sent before `until_ms` until then (a slow link)."""
        self.stalled_until[(a, b)] = max(self.stalled_until.get((a, b), 0), until_ms)

    def connections(self) -> list[Connection]:
        return list(self._connections.values())

    def reset(self, conn: Connection, reason: str) -> None:
        """Close a connection: every request in flight on it fails; late messages are dropped."""
        if not conn.alive:
            return
        conn.alive = False
        self.resets += 1
        if self._connections.get((conn.src, conn.dst, conn.channel)) is conn:
            del self._connections[(conn.src, conn.dst, conn.channel)]
        failed = list(conn.inflight)
        conn.inflight.clear()
        conn.slots.clear()
        for req in failed:
            if req.timeout is not None:
                req.timeout.cancel()
            req.on_failure(reason)

    def drop_endpoint(self, endpoint: str, broker_id: int | None = None) -> None:
        """A process died: every connection from it, and (for a broker) to it, is reset."""
        for conn in list(self._connections.values()):
            if conn.src == endpoint:
                # Its own requests die with it: no callbacks into a node that no longer exists.
                for req in conn.inflight:
                    if req.timeout is not None:
                        req.timeout.cancel()
                conn.inflight.clear()
                self.reset(conn, "process died")
            elif broker_id is not None and conn.dst == broker_id:
                self.reset(conn, "connection reset by peer")

    def _delay_ms(self) -> int:
        faults = self.faults
        delay = faults.latency_ms
        if faults.delay_rate > 0 and self.rng.random() < faults.delay_rate:
            delay += self.rng.randint(0, max(faults.delay_max_ms, 0))
        return delay

    def _arrival_ms(self, a: str, b: str, fifo_floor_ms: int) -> int:
        t = self.scheduler.now_ms + self._delay_ms()
        t = max(t, fifo_floor_ms, self.stalled_until.get((a, b), 0))
        return t

    # --- requests ------------------------------------------------------------------------------

    def request(
        self, src: str, dst: int, request: Any, *, client_id: str, timeout_ms: int,
        on_response: ResponseCallback, on_failure: FailureCallback, channel: str = "",
    ) -> None:
        """Send a kio request from endpoint `src` to broker `dst` on their connection (a broker
        keeps one per `channel`, as the shell's peer pool does, so a transaction marker never
        waits behind a long-polling replica fetch)."""
        conn = self._connections.get((src, dst, channel))
        if conn is None:
            host = self.hosts(dst)
            if host is None or not host.running:
                # Connection refused: tell the requester from the next event, never from here.
                self.scheduler.after(1, f"refused {src}->b{dst}", lambda: on_failure("connection refused"))
                return
            conn = Connection(self._next_conn_id, src, dst, host.incarnation, client_id, channel=channel)
            self._next_conn_id += 1
            self._connections[(src, dst, channel)] = conn
        api_key, version = frames.api_of(request)
        correlation_id = conn.next_correlation_id
        conn.next_correlation_id += 1
        req = _Request(correlation_id, api_key, version, on_response, on_failure)
        conn.inflight.append(req)
        req.timeout = self.scheduler.after(
            timeout_ms, f"timeout {src}->b{dst} #{conn.conn_id}.{correlation_id}",
            lambda: self._on_timeout(conn, req),
        )
        frame = frames.encode_request(request, correlation_id, client_id)
        self.messages_sent += 1
        if self._lost(conn, src, broker_endpoint(dst)):
            return
        dst_name = broker_endpoint(dst)
        t = self._arrival_ms(src, dst_name, conn.last_request_ms)
        conn.last_request_ms = t
        name = API_NAMES.get(api_key, str(api_key))
        self.scheduler.at(
            t, f"req {src}->b{dst} {name} #{conn.conn_id}.{correlation_id}",
            lambda: self._deliver_request(conn, frame),
        )

    def _lost(self, conn: Connection, a: str, b: str) -> bool:
        """Whether a message from a to b on `conn` is lost (breaking the connection if cut now)."""
        if not conn.broken and self.is_cut(a, b):
            conn.broken = True
        if conn.broken:
            self.messages_dropped += 1
        return conn.broken

    def _on_timeout(self, conn: Connection, req: _Request) -> None:
        req.timeout = None
        if conn.alive and req in conn.inflight:
            self.reset(conn, "request timed out")

    def _deliver_request(self, conn: Connection, frame: bytes) -> None:
        if not conn.alive or self._lost(conn, conn.src, broker_endpoint(conn.dst)):
            return
        host = self.hosts(conn.dst)
        if host is None or not host.running or host.incarnation != conn.dst_incarnation:
            self.reset(conn, "connection reset by peer")
            return
        payload = frames.split_frame(frame)
        host.deliver(conn.dst_incarnation, lambda node: self._serve(conn, payload, node))

    def _serve(self, conn: Connection, payload: bytes, node: Any) -> None:
        if not conn.alive:
            return  # reset while the node was paused
        header = parse_prefix(payload)
        slot = _Slot(header.correlation_id)
        conn.slots.append(slot)
        ctx = RequestContext(
            header=header, now_ms=self.scheduler.now_ms,
            sink=lambda pieces: self._answer(conn, slot, pieces),
            connection_id=conn.conn_id, client_host=conn.src,
        )
        try:
            node.handle_frame(ctx, payload)
        except (FrameError, KafkaError) as exc:
            # The server closes a connection whose frame it cannot read; the node lives on.
            self.reset(conn, f"closed by the broker: {exc}")

    def _answer(self, conn: Connection, slot: _Slot, pieces: Sequence[Any] | None) -> None:
        assert not slot.done, f"request {slot.correlation_id} answered twice"
        slot.pieces = pieces
        slot.done = True
        while conn.alive and conn.slots and conn.slots[0].done:
            head = conn.slots.popleft()
            if head.pieces is None:
                continue  # acks=0: no answer
            # File ranges are read now, when the server would write them to the socket.
            data = b"".join(
                bytes(p) if isinstance(p, bytes | bytearray | memoryview) else p.file.read(p.position, p.size)
                for p in head.pieces
            )
            self._send_response(conn, data)

    def _send_response(self, conn: Connection, frame: bytes) -> None:
        self.messages_sent += 1
        src_name = broker_endpoint(conn.dst)
        if self._lost(conn, src_name, conn.src):
            return
        t = self._arrival_ms(src_name, conn.src, conn.last_response_ms)
        conn.last_response_ms = t
        self.scheduler.at(
            t, f"resp b{conn.dst}->{conn.src} #{conn.conn_id}", lambda: self._deliver_response(conn, frame)
        )

    def _deliver_response(self, conn: Connection, frame: bytes) -> None:
        if not conn.alive or self._lost(conn, broker_endpoint(conn.dst), conn.src):
            return
        assert conn.inflight, f"response on connection {conn.conn_id} with nothing in flight"
        req = conn.inflight[0]
        payload = frames.split_frame(frame)
        correlation_id, response = frames.decode_response(req.api_key, req.version, payload)
        assert correlation_id == req.correlation_id, (
            f"connection {conn.conn_id}: response {correlation_id} while {req.correlation_id} is the oldest"
        )
        conn.inflight.popleft()
        if req.timeout is not None:
            req.timeout.cancel()
        req.on_response(response)
