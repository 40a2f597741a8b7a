"""PeerPool against a fake broker socket: pipelining and order, timeouts, disconnects, reconnects.

The fake broker is a plain asyncio server in the test's own loop. It records every request
frame it reads and answers only when the test says so, which lets a test hold answers back,
answer several in one write, answer with the wrong correlation id, or hang up. Every test
runs under a hard deadline; waits are for conditions, never fixed sleeps.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from kio.schema.api_versions.v3.request import ApiVersionsRequest
from kio.schema.metadata.v1.request import MetadataRequest as MetadataRequestV1
from kio.schema.metadata.v9.request import MetadataRequest as MetadataRequestV9

from ackly.protocol.frames import FrameDecoder
from ackly.protocol.headers import parse_prefix
from ackly.protocol.messages import build, encode_response
from ackly.server.peers import PeerConfig, PeerPool

TEST_DEADLINE_S = 20.0

METADATA_V9 = MetadataRequestV9(
    topics=None, allow_auto_topic_creation=False, include_cluster_authorized_operations=False,
    include_topic_authorized_operations=False,
)
METADATA_V1 = MetadataRequestV1(topics=None)
API_VERSIONS_V3 = ApiVersionsRequest(client_software_name="ackly", client_software_version="1")


@dataclass(frozen=True)
class Req:
    request_id: int
    broker_id: int
    request: Any


@dataclass
class Received:
    conn: FakeConnection
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None


class FakeConnection(asyncio.Protocol):
    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self.decoder = FrameDecoder(1 << 20)
        self.transport: asyncio.Transport | None = None
        self.index = len(broker.connections)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.broker.connections.append(self)

    def data_received(self, data: bytes) -> None:
        self.decoder.receive_data(data)
        while (frame := self.decoder.next_frame()) is not None:
            header = parse_prefix(bytes(frame))
            got = Received(self, header.api_key, header.api_version, header.correlation_id,
                           header.client_id)
            self.broker.received.append(got)
            if self.broker.auto_answer:
                self.broker.answer(got)
        self.broker.changed.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.broker.changed.set()


def answer_frame(got: Received, marker: int, correlation_id: int | None = None) -> bytes:
    """A response for the request, carrying `marker` so the test can tell answers apart."""
    cid = got.correlation_id if correlation_id is None else correlation_id
    if got.api_key == 3:
        body = build(3, got.api_version, {"controller_id": marker, "cluster_id": f"c{marker}"})
    else:
        body = build(18, got.api_version, {"error_code": 0, "throttle_time": marker})
    return encode_response(got.api_key, got.api_version, cid, body)


class FakeBroker:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.connections: list[FakeConnection] = []
        self.changed = asyncio.Event()
        self.auto_answer = True
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self, port: int = 0) -> FakeBroker:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: FakeConnection(self), "127.0.0.1", port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def answer(self, got: Received, correlation_id: int | None = None) -> None:
        marker = self.received.index(got)
        assert got.conn.transport is not None
        got.conn.transport.write(answer_frame(got, marker, correlation_id))

    def answer_all(self, items: list[Received]) -> None:
        """Several answers in one write (the client must split the frames)."""
        data = b"".join(answer_frame(got, self.received.index(got)) for got in items)
        assert items[0].conn.transport is not None
        items[0].conn.transport.write(data)

    async def wait_received(self, count: int) -> None:
        while len(self.received) < count:
            self.changed.clear()
            await self.changed.wait()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for conn in self.connections:
            if conn.transport is not None:
                conn.transport.abort()


class Outcomes:
    """Records every callback; fails the test if a request gets two outcomes."""

    def __init__(self) -> None:
        self.responses: dict[int, Any] = {}
        self.failures: dict[int, str] = {}
        self.order: list[int] = []
        self.changed = asyncio.Event()
        self.in_send = False

    def on_response(self, request_id: int, response: Any) -> None:
        assert not self.in_send, "called back from inside send()"
        assert request_id not in self.responses and request_id not in self.failures
        self.responses[request_id] = response
        self.order.append(request_id)
        self.changed.set()

    def on_failure(self, request_id: int, reason: str) -> None:
        assert not self.in_send, "called back from inside send()"
        assert request_id not in self.responses and request_id not in self.failures
        self.failures[request_id] = reason
        self.order.append(request_id)
        self.changed.set()

    def done(self, request_id: int) -> bool:
        return request_id in self.responses or request_id in self.failures

    async def wait(self, request_ids: range | list[int]) -> None:
        while not all(self.done(r) for r in request_ids):
            self.changed.clear()
            await self.changed.wait()


def make_pool(outcomes: Outcomes, addresses: dict[int, tuple[str, int]], **config: Any) -> PeerPool:
    cfg = PeerConfig(client_id="ackly-broker-7", **config)
    pool = PeerPool(cfg, resolve=addresses.get, on_response=outcomes.on_response,
                    on_failure=outcomes.on_failure, rng=random.Random(1))

    original_send = pool.send

    def checked_send(request: Any) -> None:
        outcomes.in_send = True
        try:
            original_send(request)
        finally:
            outcomes.in_send = False

    pool.send = checked_send  # type: ignore[method-assign]
    return pool


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(TEST_DEADLINE_S):
            await scenario()

    asyncio.run(bounded())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- tests ------------------------------------------------------------------------------------


def test_pipelined_requests_are_answered_in_order_on_one_connection() -> None:
    async def scenario() -> None:
        broker = await FakeBroker().start()
        broker.auto_answer = False
        outcomes = Outcomes()
        pool = make_pool(outcomes, {1: broker.address})
        kinds = [METADATA_V9, METADATA_V1, API_VERSIONS_V3]
        for i in range(30):
            pool.send(Req(100 + i, 1, kinds[i % 3]))
        await broker.wait_received(30)
        assert len(broker.connections) == 1
        assert {r.client_id for r in broker.received} == {"ackly-broker-7"}
        assert [r.correlation_id for r in broker.received] == list(range(30))
        # Answer the first ten one by one, the rest in one write.
        for got in broker.received[:10]:
            broker.answer(got)
        broker.answer_all(broker.received[10:])
        await outcomes.wait(range(100, 130))
        assert outcomes.failures == {}
        assert outcomes.order == list(range(100, 130))
        for i in range(30):
            response = outcomes.responses[100 + i]
            if i % 3 == 2:
                assert response.throttle_time.total_seconds() * 1000 == i  # ApiVersions, header v0
            else:
                assert response.controller_id == i
        assert pool.in_flight(1) == 0
        await pool.close()
        await broker.stop()

    run(scenario)


def test_a_request_past_its_deadline_fails_and_closes_the_connection() -> None:
    async def scenario() -> None:
        broker = await FakeBroker().start()
        broker.auto_answer = False
        outcomes = Outcomes()
        pool = make_pool(outcomes, {1: broker.address}, request_timeout_ms=300)
        for i in range(4):
            pool.send(Req(i, 1, METADATA_V9))
        await broker.wait_received(4)
        broker.answer(broker.received[0])  # only the first is answered
        await outcomes.wait(range(4))
        assert 0 in outcomes.responses
        assert "within 300 ms" in outcomes.failures[1]
        assert "timed out" in outcomes.failures[2] and "timed out" in outcomes.failures[3]
        # A late answer to the timed-out request must not be taken for a later one: the
        # connection it would arrive on is gone, and the next request opens a new one.
        pool.send(Req(10, 1, METADATA_V9))
        await broker.wait_received(5)
        assert len(broker.connections) == 2
        broker.answer(broker.received[4])
        await outcomes.wait([10])
        assert outcomes.responses[10].controller_id == 4
        await pool.close()
        await broker.stop()

    run(scenario)


def test_disconnect_fails_every_request_in_flight_exactly_once_then_reconnects() -> None:
    async def scenario() -> None:
        broker = await FakeBroker().start()
        broker.auto_answer = False
        outcomes = Outcomes()
        pool = make_pool(outcomes, {1: broker.address})
        for i in range(5):
            pool.send(Req(i, 1, METADATA_V9))
        await broker.wait_received(5)
        broker.answer(broker.received[0])
        await outcomes.wait([0])
        conn = broker.connections[0]
        assert conn.transport is not None
        conn.transport.close()  # the peer hangs up with four requests unanswered
        await outcomes.wait(range(5))
        assert sorted(outcomes.failures) == [1, 2, 3, 4]
        assert all("broker 1" in reason for reason in outcomes.failures.values())
        pool.send(Req(5, 1, METADATA_V9))
        await broker.wait_received(6)
        broker.answer(broker.received[5])
        await outcomes.wait([5])
        assert 5 in outcomes.responses and len(broker.connections) == 2
        await pool.close()
        await broker.stop()

    run(scenario)


def test_connect_failure_fails_the_waiting_requests_then_retries_after_backoff() -> None:
    async def scenario() -> None:
        port = free_port()  # nothing listens here yet
        outcomes = Outcomes()
        pool = make_pool(outcomes, {2: ("127.0.0.1", port)}, backoff_initial_ms=200,
                         backoff_max_ms=200)
        pool.send(Req(1, 2, METADATA_V9))
        await outcomes.wait([1])
        assert "connect to broker 2" in outcomes.failures[1]
        # Sent during the backoff: it waits for the next attempt instead of failing at once.
        pool.send(Req(2, 2, METADATA_V9))
        broker = await FakeBroker().start(port)
        await outcomes.wait([2])
        assert 2 in outcomes.responses
        assert pool.connected(2)
        await pool.close()
        await broker.stop()

    run(scenario)


def test_unknown_address_full_queue_and_closed_pool_fail_without_calling_back_inside_send() -> None:
    async def scenario() -> None:
        broker = await FakeBroker().start()
        broker.auto_answer = False
        outcomes = Outcomes()
        pool = make_pool(outcomes, {1: broker.address}, max_pending=3)
        pool.send(Req(1, 99, METADATA_V9))  # no address for broker 99
        for i in range(2, 6):
            pool.send(Req(i, 1, METADATA_V9))
        await outcomes.wait([1, 5])
        assert "no known address" in outcomes.failures[1]
        assert "already pending" in outcomes.failures[5]
        await broker.wait_received(3)
        await pool.close()
        await outcomes.wait([2, 3, 4])
        assert all("closed" in outcomes.failures[i] for i in (2, 3, 4))
        pool.send(Req(6, 1, METADATA_V9))
        await outcomes.wait([6])
        assert "closed" in outcomes.failures[6]
        await broker.stop()

    run(scenario)


def test_a_response_with_the_wrong_correlation_id_breaks_the_connection() -> None:
    async def scenario() -> None:
        broker = await FakeBroker().start()
        broker.auto_answer = False
        outcomes = Outcomes()
        pool = make_pool(outcomes, {1: broker.address})
        for i in range(3):
            pool.send(Req(i, 1, METADATA_V9))
        await broker.wait_received(3)
        broker.answer(broker.received[1])  # answers the second first: not Kafka's order
        await outcomes.wait(range(3))
        assert sorted(outcomes.failures) == [0, 1, 2]
        assert "correlation id 1, expected 0" in outcomes.failures[0]
        await pool.close()
        await broker.stop()

    run(scenario)


def test_a_moved_broker_is_reached_at_its_new_address() -> None:
    async def scenario() -> None:
        old = await FakeBroker().start()
        new = await FakeBroker().start()
        old.auto_answer = False
        addresses = {1: old.address}
        outcomes = Outcomes()
        pool = make_pool(outcomes, addresses)
        pool.send(Req(1, 1, METADATA_V9))
        await old.wait_received(1)
        addresses[1] = new.address
        pool.send(Req(2, 1, METADATA_V9))
        await outcomes.wait([1, 2])
        assert "moved" in outcomes.failures[1]
        assert 2 in outcomes.responses and len(new.received) == 1
        await pool.close()
        await old.stop()
        await new.stop()

    run(scenario)


def test_undecodable_response_fails_only_that_request() -> None:
    async def scenario() -> None:
        broker = await FakeBroker().start()
        broker.auto_answer = False
        outcomes = Outcomes()
        pool = make_pool(outcomes, {1: broker.address})
        pool.send(Req(1, 1, METADATA_V9))
        pool.send(Req(2, 1, METADATA_V9))
        await broker.wait_received(2)
        first, second = broker.received
        assert first.conn.transport is not None
        # A well-framed answer whose body is cut short.
        cut = first.correlation_id.to_bytes(4, "big") + b"\x00\x00"
        first.conn.transport.write(len(cut).to_bytes(4, "big") + cut)
        broker.answer(second)
        await outcomes.wait([1, 2])
        assert "undecodable" in outcomes.failures[1]
        assert 2 in outcomes.responses
        await pool.close()
        await broker.stop()

    run(scenario)


@pytest.mark.parametrize("seed", range(5))
def test_random_faults_give_every_request_exactly_one_outcome(seed: int) -> None:
    """A fake broker that answers, stalls or hangs up at random: nothing is lost or doubled,
    and every response that arrives is the answer to its own request."""

    async def scenario() -> None:
        rng = random.Random(seed)
        broker = await FakeBroker().start()
        broker.auto_answer = False
        outcomes = Outcomes()
        pool = make_pool(outcomes, {1: broker.address}, request_timeout_ms=400)
        sent: dict[int, int] = {}  # request id -> index of its frame at the broker
        answered = 0
        for request_id in range(60):
            pool.send(Req(request_id, 1, METADATA_V9))
            # It reaches the broker, or fails first (written to a connection already closing).
            while len(broker.received) == answered and not outcomes.done(request_id):
                broker.changed.clear()
                outcomes.changed.clear()
                waits = [asyncio.ensure_future(broker.changed.wait()),
                         asyncio.ensure_future(outcomes.changed.wait())]
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                for w in waits:
                    w.cancel()
            if len(broker.received) > answered:
                sent[request_id] = len(broker.received) - 1
            pending = [g for g in broker.received[answered:]
                       if g.conn.transport is not None and not g.conn.transport.is_closing()]
            roll = rng.random()
            if roll < 0.6 and pending:
                for got in pending[: rng.randint(1, len(pending))]:
                    broker.answer(got)
            elif roll < 0.7 and broker.connections:
                transport = broker.connections[-1].transport
                assert transport is not None
                transport.close()
            answered = len(broker.received)
            await asyncio.sleep(0)
        await outcomes.wait(range(60))
        for request_id, response in outcomes.responses.items():
            assert response.controller_id == sent[request_id]
        assert outcomes.responses and outcomes.failures  # both paths were taken
        await pool.close()
        await broker.stop()

    run(scenario)


@dataclass(frozen=True)
class ChannelReq:
    request_id: int
    broker_id: int
    request: Any
    channel: str


def test_channels_to_one_broker_use_their_own_connections() -> None:
    """A transaction marker must not wait behind a replica fetch long-polling at the leader."""

    async def scenario() -> None:
        broker = await FakeBroker().start()
        broker.auto_answer = False
        outcomes = Outcomes()
        pool = make_pool(outcomes, {1: broker.address})
        pool.send(ChannelReq(1, 1, METADATA_V9, "replica"))  # the long poll: never answered here
        await broker.wait_received(1)
        pool.send(ChannelReq(2, 1, METADATA_V9, "txn"))
        pool.send(Req(3, 1, METADATA_V1))  # no channel: the replica connection
        await broker.wait_received(3)
        assert len(broker.connections) == 2
        by_id = {r.correlation_id: r for r in broker.received if r.conn is broker.connections[1]}
        assert len(by_id) == 1
        broker.answer(next(iter(by_id.values())))
        await outcomes.wait([2])
        assert not outcomes.done(1) and not outcomes.done(3)
        assert pool.in_flight(1) == 2 and pool.in_flight(1, "txn") == 0
        assert pool.connected(1, "txn")
        await pool.close()
        await broker.stop()

    run(scenario)
