"""Several BrokerNodes in one test, on a virtual clock: one MemoryStore, peer requests as frames.

The harness is the shell and the network: it carries each node's store commands to a shared
MemoryStore and the store's answers back; it encodes each node's peer requests into request
frames exactly as server/peers.py would, hands them to the destination's `handle_frame`, and
decodes the answer (possibly given later: a follower's fetch long-polls) back into
`on_peer_response`. Flushes run at once (or are held while `hold_flushes` is set). Nothing
here sleeps or reads a clock, so a test is a deterministic sequence of steps.

Clients talk to a node through `call` (any request; answered at once or after `pump`).
"""

from __future__ import annotations

import io
import itertools
import random
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kio.serial import entity_reader, entity_writer

from ackly.broker.context import RequestContext
from ackly.broker.file_writes import run_batch
from ackly.broker.node import BrokerNode
from ackly.cluster.memory_store import MemoryStore
from ackly.config import BrokerConfig
from ackly.log.disk import RealDisk
from ackly.protocol.headers import RequestHeader
from ackly.protocol.messages import header_version, is_flexible, request_type, response_type
from ackly.protocol.record_codec import Record, decode_batch, encode_batch
from ackly.server.peers import decode_response
from ackly.testing.internal_topics import internal_topic_factors

START_MS = 1_700_000_000_000

FAST = {
    "broker.session.timeout.ms": "3000",
    "broker.heartbeat.interval.ms": "1000",
    "replica.lag.time.max.ms": "2000",
    "replica.fetch.wait.max.ms": "200",
    "replica.fetch.backoff.ms": "100",
    "replica.socket.timeout.ms": "2000",
}


@dataclass
class Reply:
    """An answer that may come later (a long-poll, an acks=all produce)."""

    api_key: int
    version: int
    pieces: list[Any] | None = None
    done: bool = False

    def set(self, pieces: Any) -> None:
        assert not self.done, "answered twice"
        self.done = True
        self.pieces = None if pieces is None else list(pieces)

    @property
    def value(self) -> Any:
        assert self.done and self.pieces is not None, "not answered"
        data = b"".join(_piece_bytes(p) for p in self.pieces)
        (size,) = struct.unpack_from(">i", data, 0)
        assert size == len(data) - 4
        return decode_response(self.api_key, self.version, memoryview(data)[4:])


def _piece_bytes(piece: Any) -> bytes:
    if isinstance(piece, (bytes, bytearray, memoryview)):
        return bytes(piece)
    return bytes(piece.file.read(piece.position, piece.size))


def encode_frame(request: Any, correlation_id: int, client_id: bytes = b"test") -> bytes:
    api_key, version = int(request.__api_key__), int(request.__version__)
    frame = io.BytesIO()
    frame.write(struct.pack(">hhih", api_key, version, correlation_id, len(client_id)))
    frame.write(client_id)
    if header_version(api_key, version) >= 2:
        frame.write(b"\x00")
    entity_writer(type(request))(frame, request)
    return frame.getvalue()


@dataclass
class Host:
    broker_id: int
    data_dir: str
    node: BrokerNode | None = None
    incarnation: int = 0
    # Peer requests sent and not yet answered: request id -> Reply
    outgoing: dict[int, tuple[int, Reply]] = field(default_factory=dict)

    @property
    def client(self) -> str:
        return f"broker-{self.broker_id}.{self.incarnation}"


class CoreCluster:
    def __init__(self, root: Path, broker_ids: list[int], props: dict[str, str] | None = None,
                 seed: int = 0, *, start: bool = True,
                 broker_props: dict[int, dict[str, str]] | None = None) -> None:
        """`start=False`: no broker is started yet (start them with `start`, move messages
        one round at a time with `step`). `broker_props`: one broker's own (e.g. broker.rack)."""
        self.root = root
        self.store = MemoryStore(now_ms=START_MS)
        self.now_ms = START_MS  # the monotonic clock every node input carries
        # The wall clock is now_ms + wall_offset_ms: a test steps it as NTP would.
        self.wall_offset_ms = 0
        self.props = {**FAST, **internal_topic_factors(len(broker_ids)), **(props or {})}
        self.broker_props = broker_props or {}
        self.rng = random.Random(seed)
        self.hosts = {b: Host(b, str(root / f"b{b}")) for b in broker_ids}
        self.hold_flushes = False
        # As the shell runs them: small-file writes and removals in a writer (run by `step`
        # unless held), not at once inside the node's input.
        self.file_writes_off_loop = False
        self.hold_file_writes = False
        # Advertised listeners by broker (none: one PLAINTEXT listener at its address).
        self.endpoints: dict[int, tuple[Any, ...]] = {}
        self.partitioned: set[int] = set()  # brokers cut from their peers (not from the store)
        self._correlation = itertools.count(1)
        # (requester, responder, request id, reply)
        self._responses: deque[tuple[int, int, int, Reply]] = deque()
        if start:
            for b in broker_ids:
                self.start(b)
            self.settle()

    # --- processes ------------------------------------------------------------------------

    def start(self, broker_id: int) -> BrokerNode:
        host = self.hosts[broker_id]
        assert host.node is None
        host.incarnation += 1
        config = BrokerConfig.from_properties(
            {**self.props, **self.broker_props.get(broker_id, {}), "broker.id": str(broker_id)})
        host.node = BrokerNode(
            config=config, disk=RealDisk(), data_dir=host.data_dir, host="127.0.0.1",
            port=19000 + broker_id, now_ms=self.now_ms, rng=random.Random(self.rng.getrandbits(64)),
            external_metadata=True, wall_clock=self.wall_clock,
            endpoints=self.endpoints.get(broker_id, ()),
        )
        host.node.file_writes_off_loop = self.file_writes_off_loop
        host.outgoing = {}
        return host.node

    def wall_clock(self, now_ms: int) -> int:
        return now_ms + self.wall_offset_ms

    def kill(self, broker_id: int, *, revoke: bool = True) -> None:
        """Stop a broker abruptly: no controlled shutdown, logs not closed (unflushed data is
        in the page cache of this test process, so nothing is lost: a kill, not a power loss).
        With `revoke`, its lease is revoked at once (as if it had timed out)."""
        host = self.hosts[broker_id]
        node = host.node
        assert node is not None
        lease = node.member.lease_id
        self.store.disconnect(host.client)
        if revoke and lease is not None and self.store.lease_alive(lease):
            from ackly.cluster.store import RevokeLease

            self.store.submit("harness", RevokeLease(next(self._correlation), lease))
            self.store.drain("harness")
        for segment_owner in node.all_partitions():
            for segment in segment_owner.log.segments:
                segment.close()
        host.node = None
        # Answers in flight to or from it are lost: the requesters see a failure.
        for other in self.hosts.values():
            if other.node is None:
                continue
            for rid, (dst, _reply) in list(other.outgoing.items()):
                if dst == broker_id:
                    del other.outgoing[rid]
                    other.node.on_peer_failure(rid, "connection closed", self.now_ms)

    def node(self, broker_id: int) -> BrokerNode:
        node = self.hosts[broker_id].node
        assert node is not None
        return node

    @property
    def running(self) -> list[int]:
        return [b for b, h in self.hosts.items() if h.node is not None]

    # --- the network, the store and the clock ----------------------------------------------

    def pump(self, max_rounds: int = 10_000) -> None:
        """Move every message until nothing moves."""
        for _ in range(max_rounds):
            if not self.step():
                return
        raise AssertionError("the cluster did not quiesce")

    def step(self) -> bool:
        """One round: every node's outputs go out, the store's answers and the peers' responses
        come back. False when nothing moved."""
        moved = False
        for b in self.running:
            host = self.hosts[b]
            node = host.node
            assert node is not None
            peers, commands = node.take_outputs()
            for command in commands:
                self.store.submit(host.client, command)
                moved = True
            for request in peers:
                moved = True
                self._send(host, request)
            if not self.hold_flushes and node.has_flush_work:
                jobs = node.take_flush_jobs()
                for _, job in jobs:
                    job.run()
                node.complete_flush(jobs, self.now_ms)
                moved = True
            if not self.hold_file_writes and node.has_file_writes:
                batch = node.take_file_writes()
                run_batch(batch)
                node.complete_file_writes(batch, None, self.now_ms)
                moved = True
        for b in self.running:
            host = self.hosts[b]
            items = self.store.drain(host.client)
            if items:
                assert host.node is not None
                host.node.on_store_inputs(items, self.now_ms)
                moved = True
        while self._responses:
            src, dst, rid, reply = self._responses.popleft()
            host = self.hosts[src]
            if host.node is None or rid not in host.outgoing:
                continue
            del host.outgoing[rid]
            moved = True
            if reply.pieces is None or src in self.partitioned or dst in self.partitioned:
                host.node.on_peer_failure(rid, "no answer", self.now_ms)
            else:
                host.node.on_peer_response(rid, reply.value, self.now_ms)
        return moved

    def _send(self, src: Host, request: Any) -> None:
        dst = self.hosts.get(request.broker_id)
        reply = Reply(int(request.request.__api_key__), int(request.request.__version__))
        src.outgoing[request.request_id] = (request.broker_id, reply)
        if dst is None or dst.node is None or request.broker_id in self.partitioned \
                or src.broker_id in self.partitioned:
            # Connection refused / no route: fails on the next round.
            reply.done = True
            self._responses.append((src.broker_id, request.broker_id, request.request_id, reply))
            return
        correlation_id = next(self._correlation)
        frame = encode_frame(request.request, correlation_id, b"ackly-broker")
        src_id, dst_id, rid = src.broker_id, request.broker_id, request.request_id

        def sink(pieces: Any) -> None:
            reply.set(pieces)
            self._responses.append((src_id, dst_id, rid, reply))

        header = RequestHeader(reply.api_key, reply.version, correlation_id, "ackly-broker")
        dst.node.handle_frame(RequestContext(header=header, now_ms=self.now_ms, sink=sink), frame)

    def advance(self, ms: int, step_ms: int = 50) -> None:
        """Move the clock on, ticking the store and every node on the way."""
        end = self.now_ms + ms
        while self.now_ms < end:
            self.now_ms = min(end, self.now_ms + step_ms)
            self.store.tick(self.now_ms)
            for b in self.running:
                node = self.node(b)
                due = node.next_deadline_ms()
                if due is not None and due <= self.now_ms:
                    node.tick(self.now_ms)
            self.pump()

    def settle(self, ms: int = 500) -> None:
        self.pump()
        self.advance(ms)

    def until(self, condition: Callable[[], bool], limit_ms: int = 60_000, step_ms: int = 50) -> None:
        waited = 0
        self.pump()
        while not condition():
            assert waited < limit_ms, "condition not reached in virtual time"
            self.advance(step_ms, step_ms)
            waited += step_ms

    # --- clients ---------------------------------------------------------------------------

    def call(self, broker_id: int, api_key: int, version: int, listener_name: str = "",
             **fields: Any) -> Reply:
        request = request_type(api_key, version)(**fields)
        correlation_id = next(self._correlation)
        reply = Reply(api_key, version)
        header = RequestHeader(api_key, version, correlation_id, "client")
        self.node(broker_id).handle_frame(
            RequestContext(header=header, now_ms=self.now_ms, sink=reply.set, listener_name=listener_name),
            encode_frame(request, correlation_id, b"client"),
        )
        return reply

    def send_as(self, broker_id: int, request: Any, principal: str, host: str = "10.9.9.9") -> Reply:
        """A client request (a kio request object) from `principal` at `host`."""
        api_key, version = int(request.__api_key__), int(request.__version__)
        correlation_id = next(self._correlation)
        reply = Reply(api_key, version)
        header = RequestHeader(api_key, version, correlation_id, "client")
        self.node(broker_id).handle_frame(
            RequestContext(header=header, now_ms=self.now_ms, sink=reply.set, client_host=host,
                           principal=principal),
            encode_frame(request, correlation_id, b"client"),
        )
        return reply

    def wait(self, reply: Reply, limit_ms: int = 30_000) -> Any:
        self.until(lambda: reply.done, limit_ms)
        return reply.value

    # --- views -----------------------------------------------------------------------------

    def state(self, topic: str, partition: int = 0) -> Any:
        from ackly.types import TopicPartition

        for b in self.running:
            st = self.node(b).metadata.partition(TopicPartition(topic, partition))
            if st is not None:
                return st
        return None

    def leader(self, topic: str, partition: int = 0) -> int:
        st = self.state(topic, partition)
        return -1 if st is None else int(st.leader)


def batch(*values: bytes, producer_id: int = -1, producer_epoch: int = -1, base_sequence: int = -1,
          now_ms: int = START_MS) -> bytes:
    return encode_batch(
        [Record(key=None, value=v) for v in values], now_ms=now_ms, producer_id=producer_id,
        producer_epoch=producer_epoch, base_sequence=base_sequence,
    )


def log_bytes(node: BrokerNode, topic: str, partition: int = 0) -> bytes:
    p = node.partition(topic, partition)
    out = b""
    for segment in p.log.segments:
        out += segment.file.read(0, segment.size)
    return out


def log_values(node: BrokerNode, topic: str, partition: int = 0) -> list[bytes]:
    data = log_bytes(node, topic, partition)
    from ackly.protocol.records import iter_batches

    values: list[bytes] = []
    for pos, header in iter_batches(data):
        _, records = decode_batch(data[pos : pos + header.size])
        values.extend(r.value or b"" for r in records)
    return values


def response_type_of(api_key: int, version: int) -> Any:
    return response_type(api_key, version)


def reader(cls: Any) -> Any:
    return entity_reader(cls)


def flexible(api_key: int, version: int) -> bool:
    return is_flexible(api_key, version)
