"""The fault proxy against an in-process broker (and a recording fake broker for raw bytes).

Each fault is shown by what a client sees through the proxy and what the broker holds,
checked directly against the broker (ListOffsets latest), not through the proxy.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kio.schema.api_versions.v3.request import ApiVersionsRequest
from kio.schema.describe_cluster.v0.request import DescribeClusterRequest as DescribeClusterRequestV0
from kio.schema.errors import ErrorCode
from kio.schema.metadata.v0.request import MetadataRequest as MetadataRequestV0
from kio.schema.metadata.v0.request import MetadataRequestTopic as MetadataRequestTopicV0
from kio.schema.metadata.v9.request import MetadataRequest as MetadataRequestV9
from tests.integration import wire_requests as rq

from ackly.protocol.messages import build, encode_response
from ackly.testing.fault_proxy import (
    FaultProxy,
    RequestInfo,
    Rule,
    RuleBook,
    advertised_brokers,
    decode_response,
    encode_response_payload,
    expects_response,
    parse_address,
    rewrite_addresses,
)
from ackly.testing.inprocess import InProcessBroker
from ackly.testing.wire import WireClient

API_VERSIONS = ApiVersionsRequest(client_software_name="t", client_software_version="1")


def latest_offset(bootstrap: str, topic: str) -> int:
    """The log end offset, asked of the broker directly (never through the proxy)."""
    with WireClient(bootstrap) as direct:
        part = direct.request(rq.list_offsets(topic, -1)).topics[0].partitions[0]
        assert part.error_code == ErrorCode.none
        return int(part.offset)


def create_topic(bootstrap: str, topic: str) -> None:
    with WireClient(bootstrap) as direct:
        assert direct.request(rq.create_topic(topic)).topics[0].error_code == ErrorCode.none


def cid_of(frame: bytes) -> int:
    return int(struct.unpack_from(">i", frame, 0)[0])


def read_cids_until(client: WireClient, last_cid: int) -> list[int]:
    cids: list[int] = []
    while not cids or cids[-1] != last_cid:
        cids.append(cid_of(client.read_frame()))
        assert len(cids) < 1000
    return cids


@pytest.fixture
def broker(ackly_broker: InProcessBroker) -> InProcessBroker:
    return ackly_broker


@pytest.fixture
def proxy(broker: InProcessBroker, fault_proxy: Callable[..., FaultProxy]) -> FaultProxy:
    return fault_proxy(broker.bootstrap)


# --- pass-through ----------------------------------------------------------------------------


def test_responses_through_the_proxy_are_byte_identical(broker, fault_proxy, tmp_path: Path) -> None:
    # Two brokers in the same state: one asked directly, its twin through the proxy.
    twin = InProcessBroker(str(tmp_path / "twin")).start()
    try:
        proxy = fault_proxy(twin.bootstrap)
        create_topic(broker.bootstrap, "same")
        create_topic(twin.bootstrap, "same")
        with WireClient(broker.bootstrap) as direct, WireClient(proxy.bootstrap) as proxied:
            for request in (API_VERSIONS, rq.produce("same", rq.batch(b"a", b"bc")),
                            rq.produce("same", rq.batch(b"d" * 5000), acks=-1),
                            rq.fetch("same", 0), rq.fetch("same", 2), API_VERSIONS):
                direct.send_raw(direct.frame(request, correlation_id=41))
                proxied.send_raw(proxied.frame(request, correlation_id=41))
                assert proxied.read_frame() == direct.read_frame()
        stats = proxy.stats()
        assert stats.requests == {18: 2, 0: 2, 1: 2} and stats.responses == stats.requests
        assert stats.faults == {} and stats.errors == ()
    finally:
        twin.stop()


class RecordingUpstream:
    """A fake broker: records every request frame; answers each (but Produce) with cid + payload."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.address = self.server.getsockname()[:2]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        with conn:
            buf = b""
            while chunk := conn.recv(65536):
                buf += chunk
                while len(buf) >= 4 and len(buf) >= 4 + (size := struct.unpack_from(">i", buf)[0]):
                    frame, buf = buf[4 : 4 + size], buf[4 + size :]
                    self.frames.append(frame)
                    if struct.unpack_from(">h", frame)[0] != 0:
                        answer = frame[4:8] + b"answer:" + frame
                        conn.sendall(struct.pack(">i", len(answer)) + answer)

    def close(self) -> None:
        self.server.close()


def test_frames_cross_whole_and_unchanged_whatever_the_chunking() -> None:
    upstream = RecordingUpstream()
    proxy = FaultProxy(upstream=upstream.address).start()
    try:
        # acks=0 Produce gets no answer; a response rule must not wait for one.
        silent = proxy.add_rule(0, "drop_response")
        client = WireClient(proxy.bootstrap)
        # A frame with an unknown api key and odd bytes goes through untouched too.
        odd_payload = struct.pack(">hhih", 999, 3, 5, -1) + bytes(range(256))
        frames = [client.frame(API_VERSIONS, correlation_id=1),
                  client.frame(rq.produce("t", rq.batch(b"x" * 3000), acks=0), correlation_id=2),
                  client.frame(rq.fetch("t", 7), correlation_id=3),
                  struct.pack(">i", len(odd_payload)) + odd_payload]
        stream = b"".join(frames)
        rng = random.Random(7)
        pos = 0
        while pos < len(stream):
            step = rng.randint(1, 700)
            client.send_raw(stream[pos : pos + step])
            pos += step
        answers = [client.read_frame() for _ in range(3)]
        assert answers == [f[8:12] + b"answer:" + f[4:] for f in frames if f != frames[1]]
        assert [cid_of(a) for a in answers] == [1, 3, 5]
        assert upstream.frames == [f[4:] for f in frames]
        assert expects_response(frames[1][4:], 0, 9) is False
        assert silent.seen == 0 and silent.fired == 0
        assert proxy.stats().unanswered == 0
        client.close()
    finally:
        proxy.stop()
        upstream.close()


def test_an_undecodable_address_response_is_forwarded_and_reported() -> None:
    upstream = RecordingUpstream()  # answers Metadata with bytes that are no MetadataResponse
    try:
        with FaultProxy(upstream=upstream.address) as proxy, WireClient(proxy.bootstrap) as c:
            request = c.frame(rq.metadata("t"), correlation_id=9)
            c.send_raw(request)
            assert c.read_frame() == request[8:12] + b"answer:" + request[4:]
            stats = proxy.stats()
            assert stats.rewritten == 0 and len(stats.errors) == 1
            assert "not rewritten" in stats.errors[0]
    finally:
        upstream.close()


# --- broker addresses ------------------------------------------------------------------------


def test_metadata_and_describe_cluster_advertise_the_proxy(broker, proxy) -> None:
    create_topic(broker.bootstrap, "meta")
    proxy_host, proxy_port = parse_address(proxy.bootstrap)
    _, broker_port = parse_address(broker.bootstrap)
    requests = [
        MetadataRequestV0(topics=(MetadataRequestTopicV0(name="meta"),)),  # header v0, not flexible
        MetadataRequestV9(topics=None, allow_auto_topic_creation=False,
                          include_cluster_authorized_operations=False,
                          include_topic_authorized_operations=False),  # first flexible version
        rq.metadata("meta"),  # v12
        DescribeClusterRequestV0(include_cluster_authorized_operations=False),
    ]
    with WireClient(broker.bootstrap) as direct, WireClient(proxy.bootstrap) as proxied:
        for request in requests:
            want = direct.request(request)
            got = proxied.request(request)
            assert [(b.host, b.port) for b in want.brokers] == [("127.0.0.1", broker_port)]
            assert [(b.host, b.port) for b in got.brokers] == [(proxy_host, proxy_port)]
            # Nothing else changed.
            assert rewrite_addresses(int(request.__api_key__), want,
                                     {0: (proxy_host, proxy_port)}) == got
    assert proxy.listeners == {0: proxy.bootstrap}  # the bootstrap listener is broker 0's
    assert proxy.stats().rewritten == len(requests)


def test_each_reported_broker_gets_a_listener(broker) -> None:
    # The proxy was told of broker 7 only; the broker reports itself as broker 0.
    with FaultProxy(upstreams={7: parse_address(broker.bootstrap)}) as proxy:
        with WireClient(proxy.bootstrap) as c:
            (advertised,) = c.request(rq.metadata()).brokers
        listeners = proxy.listeners
        assert set(listeners) == {0, 7}
        assert f"{advertised.host}:{advertised.port}" == listeners[0] != listeners[7]
        with WireClient(listeners[0]) as c:
            assert c.request(API_VERSIONS).error_code == ErrorCode.none
        assert proxy.stats().connections == 2


@pytest.mark.parametrize("version", [0, 3, 4])
def test_find_coordinator_responses_are_rewritten(version: int) -> None:
    found = {"node_id": 2, "host": "broker-2", "port": 9092, "error_code": ErrorCode.none}
    failed = {"node_id": -1, "host": "", "port": -1, "error_code": ErrorCode.coordinator_not_available}
    data = ({"coordinators": [{"key": "g", **found}, {"key": "h", **failed}]} if version >= 4
            else found)
    frame = encode_response(10, version, 77, build(10, version, data))[4:]
    value, trailing = decode_response(10, version, frame)
    assert trailing == b""
    assert advertised_brokers(10, value) == [(2, ("broker-2", 9092))]
    moved = rewrite_addresses(10, value, {2: ("127.0.0.1", 4242)})
    header = frame[: 5 if version >= 3 else 4]
    again, _ = decode_response(10, version, encode_response_payload(10, version, header, moved))
    entries = again.coordinators if version >= 4 else (again,)
    assert (entries[0].host, entries[0].port) == ("127.0.0.1", 4242)
    if version >= 4:
        assert (entries[1].node_id, entries[1].host, entries[1].port) == (-1, "", -1)


# --- faults ----------------------------------------------------------------------------------


def test_drop_response_lands_the_request_then_closes(broker, proxy) -> None:
    create_topic(broker.bootstrap, "drop")
    rule = proxy.add_rule(0, "drop_response", count=1)
    with WireClient(proxy.bootstrap) as c:
        c.send_raw(c.frame(rq.produce("drop", rq.batch(b"v"))))
        with pytest.raises(ConnectionError) as closed:
            c.read_frame()
        assert not isinstance(closed.value, ConnectionResetError), "a clean close, not a reset"
    assert latest_offset(broker.bootstrap, "drop") == 1
    assert rule.fired == 1 and proxy.stats().faults == {"drop_response": 1}
    with WireClient(proxy.bootstrap) as c:  # count=1: the next one goes through
        resp = c.request(rq.produce("drop", rq.batch(b"w")))
        assert resp.responses[0].partition_responses[0].base_offset == 1


def test_drop_response_can_keep_the_connection(broker, proxy) -> None:
    create_topic(broker.bootstrap, "keep")
    proxy.add_rule(0, "drop_response", count=1, close=False)
    with WireClient(proxy.bootstrap) as c:
        c.send_raw(c.frame(rq.produce("keep", rq.batch(b"v")), correlation_id=1)
                   + c.frame(API_VERSIONS, correlation_id=2))
        assert cid_of(c.read_frame()) == 2
    assert latest_offset(broker.bootstrap, "keep") == 1


def test_delay_response_holds_it_and_those_behind_it(broker, proxy) -> None:
    proxy.add_rule(18, "delay_response", delay_ms=400, count=1)
    with WireClient(proxy.bootstrap) as c:
        started = time.monotonic()
        c.send_raw(c.frame(API_VERSIONS, correlation_id=1) + c.frame(rq.metadata(), correlation_id=2))
        assert cid_of(c.read_frame()) == 1
        assert time.monotonic() - started >= 0.39
        assert cid_of(c.read_frame()) == 2
    assert proxy.stats().faults == {"delay_response": 1}


@pytest.mark.parametrize(("when", "landed"), [("before_request", 0), ("after_request", 1)])
def test_reset_before_or_after_the_broker_gets_the_request(broker, proxy, when: str,
                                                          landed: int) -> None:
    create_topic(broker.bootstrap, "rst")
    proxy.add_rule(0, "reset", when=when, count=1)  # type: ignore[arg-type]
    with WireClient(proxy.bootstrap) as c:
        c.send_raw(c.frame(rq.produce("rst", rq.batch(b"v"))))
        with pytest.raises(ConnectionResetError):
            c.read_frame()
    assert latest_offset(broker.bootstrap, "rst") == landed
    assert proxy.stats().faults == {"reset": 1}
    assert proxy.stats().requests == {0: 1}


def test_stall_holds_bytes_in_both_directions(broker, proxy) -> None:
    create_topic(broker.bootstrap, "stall")
    proxy.add_rule(18, "stall", duration_ms=1000, count=1)
    with WireClient(proxy.bootstrap) as c:
        started = time.monotonic()
        # The Fetch is forwarded before the stall starts; its answer (due at ~200 ms) is held,
        # and so is the ApiVersions that started the stall.
        c.send_raw(c.frame(rq.fetch("stall", 0, max_wait_ms=200), correlation_id=1)
                   + c.frame(API_VERSIONS, correlation_id=2))
        assert cid_of(c.read_frame()) == 1
        assert time.monotonic() - started >= 0.95
        assert cid_of(c.read_frame()) == 2
        # Over: the link is back to normal.
        assert c.request(API_VERSIONS).error_code == ErrorCode.none
    assert proxy.stats().faults == {"stall": 1}


def test_after_and_count_pick_which_requests_fire(proxy) -> None:
    rule = proxy.add_rule(18, "drop_response", after=2, count=2, close=False)
    with WireClient(proxy.bootstrap) as c:
        c.send_raw(b"".join(c.frame(API_VERSIONS, correlation_id=i) for i in range(1, 7))
                   + c.frame(rq.metadata(), correlation_id=7))
        assert read_cids_until(c, 7) == [1, 2, 5, 6, 7]
    assert (rule.seen, rule.fired) == (6, 2)


def test_probability_draws_from_the_seeded_rng(proxy) -> None:
    proxy.add_rule(18, "drop_response", probability=0.3, rng=random.Random(1234), close=False)
    model = random.Random(1234)
    expect_dropped = {cid for cid in range(1, 41) if model.random() < 0.3}
    assert 0 < len(expect_dropped) < 40
    with WireClient(proxy.bootstrap) as c:
        c.send_raw(b"".join(c.frame(API_VERSIONS, correlation_id=i) for i in range(1, 41))
                   + c.frame(rq.metadata(), correlation_id=41))
        got = read_cids_until(c, 41)
    assert got == [cid for cid in range(1, 42) if cid not in expect_dropped]
    assert proxy.stats().faults == {"drop_response": len(expect_dropped)}


def test_predicate_first_rule_wins_and_clear_rules(proxy) -> None:
    evens = proxy.add_rule(None, "drop_response", close=False,
                           match=lambda key, version, cid: key == 18 and cid % 2 == 0)
    others = proxy.add_rule(18, "delay_response", delay_ms=1)
    with WireClient(proxy.bootstrap) as c:
        c.send_raw(b"".join(c.frame(API_VERSIONS, correlation_id=i) for i in range(1, 9))
                   + c.frame(rq.metadata(), correlation_id=9))
        assert read_cids_until(c, 9) == [1, 3, 5, 7, 9]
        assert (evens.seen, evens.fired) == (4, 4)
        assert (others.seen, others.fired) == (8, 4)  # it saw all, fired on what was left
        proxy.clear_rules()
        c.send_raw(c.frame(API_VERSIONS, correlation_id=10))
        assert cid_of(c.read_frame()) == 10
    stats = proxy.stats()
    assert stats.rules == ()
    assert stats.requests == {18: 9, 3: 1}
    assert stats.responses == {18: 5, 3: 1}
    assert stats.faults == {"drop_response": 4, "delay_response": 4}


def test_disconnect_all_and_stop_close_every_connection(broker, fault_proxy) -> None:
    proxy = fault_proxy(broker.bootstrap)
    reset_client, quiet_client = WireClient(proxy.bootstrap), WireClient(proxy.bootstrap)
    assert reset_client.request(API_VERSIONS).error_code == ErrorCode.none
    assert quiet_client.request(API_VERSIONS).error_code == ErrorCode.none
    assert proxy.disconnect_all(reset=True) == 2
    with pytest.raises(ConnectionResetError):
        reset_client.read_frame()
    survivor = WireClient(proxy.bootstrap)
    assert survivor.request(API_VERSIONS).error_code == ErrorCode.none
    proxy.stop()
    with pytest.raises(ConnectionError):
        survivor.read_frame()
    with pytest.raises(OSError):
        WireClient(proxy.bootstrap, timeout_s=2)
    proxy.stop()  # idempotent
    for c in (reset_client, quiet_client, survivor):
        c.close()


def test_rules_refuse_nonsense() -> None:
    with pytest.raises(ValueError):
        Rule(action="explode")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Rule(action="drop_response", probability=0.5)  # no rng: not reproducible
    with pytest.raises(ValueError):
        Rule(action="stall")  # no duration
    with pytest.raises(ValueError):
        Rule(action="drop_response", count=0)
    with pytest.raises(ValueError):
        FaultProxy()


# --- rule decisions without a network ----------------------------------------------------------


def _request(cid: int, api_key: int = 0) -> RequestInfo:
    return RequestInfo(api_key=api_key, api_version=9, correlation_id=cid, broker_id=None,
                       expects_response=True)


@given(after=st.integers(0, 20), count=st.none() | st.integers(1, 20), n=st.integers(0, 60))
def test_after_and_count_model(after: int, count: int | None, n: int) -> None:
    book = RuleBook()
    rule = book.add(Rule(action="drop_response", api_key=0, after=after, count=count))
    other = [_request(cid, api_key=1) for cid in range(n)]
    fired = [cid for cid in range(n) if book.decide(_request(cid)) is rule]
    assert all(book.decide(r) is None for r in other)
    stop = n if count is None else min(n, after + count)
    assert fired == list(range(min(after, n), stop))
    assert rule.seen == n


@pytest.fixture(autouse=True)
def _no_stray_threads() -> Iterator[None]:
    yield
    alive = [t for t in threading.enumerate() if t.name == "ackly-fault-proxy" and t.is_alive()]
    assert not alive, "a proxy thread outlived its test"


def test_tls_on_both_sides_keeps_frames_rewrites_and_faults(tmp_path: Path, fault_proxy) -> None:
    """With server_ssl and upstream_ssl the proxy terminates TLS towards the client and opens
    TLS to the broker: Metadata is still rewritten to the proxy's listener and a reset rule
    still acts, on a broker whose only listener is SSL."""
    import ssl

    from tests.clients.tlskit import make_tls_files

    tls = make_tls_files(tmp_path / "tls")
    secured = InProcessBroker(str(tmp_path / "tls-broker"), {
        "listeners": "SSL://127.0.0.1:0", **tls.broker_configs(),
    }).start()
    try:
        server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ssl.load_cert_chain(tls.broker_keystore)
        proxy = fault_proxy(secured.bootstrap, server_ssl=server_ssl,
                            upstream_ssl=ssl.create_default_context(cafile=tls.ca))
        client_ssl = ssl.create_default_context(cafile=tls.ca)
        with WireClient(proxy.bootstrap) as client:
            client.sock = client_ssl.wrap_socket(client.sock, server_hostname="127.0.0.1")
            assert client.request(API_VERSIONS).error_code == ErrorCode.none
            meta = client.request(MetadataRequestV9(topics=None, allow_auto_topic_creation=False,
                                                    include_cluster_authorized_operations=False,
                                                    include_topic_authorized_operations=False))
            assert [f"{b.host}:{b.port}" for b in meta.brokers] == [proxy.bootstrap]
            proxy.add_rule(18, "reset", count=1)
            client.send_raw(client.frame(API_VERSIONS))
            with pytest.raises((ConnectionError, OSError, AssertionError, struct.error)):
                client.read_frame()
        stats = proxy.stats()
        assert stats.rewritten == 1 and stats.faults and stats.errors == ()
        # The proxy's listener is TLS only: a plaintext request gets no Kafka answer.
        with WireClient(proxy.bootstrap, timeout_s=5) as plain:
            plain.send_raw(plain.frame(API_VERSIONS))
            with pytest.raises((ConnectionError, OSError, AssertionError, struct.error)):
                plain.read_frame()
    finally:
        secured.stop()
