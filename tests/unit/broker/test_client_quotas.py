"""Client quotas: the rate and throttle math against hand-computed values (Kafka's Rate over
11 samples of 1 s, QuotaUtils' throttle time), the precedence of the eight quota entities,
their storage in the cluster metadata, and DescribeClientQuotas / AlterClientQuotas and the
throttle time of Produce and Fetch through an in-process node."""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import Any

import pytest
from kio.serial import entity_writer

from ackly.broker.client_quotas import ClientQuotas, SampledRate, throttle_time_ms
from ackly.broker.context import RequestContext
from ackly.cluster.metadata import ClusterMetadata, KeyKind, KeySpace, MetadataDecodeError
from ackly.cluster.quotas import (
    CONSUMER_BYTE_RATE,
    PRODUCER_BYTE_RATE,
    REQUEST_PERCENTAGE,
    QuotaEntity,
    QuotaError,
    check_value,
    encode_values,
    precedence,
    resolve,
)
from ackly.cluster.store import KeyValue
from ackly.errors import ErrorCode
from ackly.protocol.headers import RequestHeader
from ackly.protocol.messages import build_request
from ackly.protocol.record_codec import Record, encode_batch

from .acl_harness import ADMIN, NOW_MS, ask, decode, make_node

DESCRIBE, ALTER = 48, 49


# --- the rate -------------------------------------------------------------------------------


def test_a_first_record_is_spread_over_samples_minus_one_windows() -> None:
    rate = SampledRate(samples=11, window_ms=1000)
    rate.record(1000, now_ms=0)
    # Rate.windowSize: 0 ms elapsed, fewer than 10 full windows -> 10 windows = 10 s.
    assert rate.window_size_ms(0) == 10_000
    assert rate.measure(0) == pytest.approx(100.0)
    # Half a second later: 500 ms + 10 windows (0 full windows so far).
    assert rate.window_size_ms(500) == 10_500
    assert rate.measure(500) == pytest.approx(1000 / 10.5)


def test_samples_are_reused_in_a_ring_and_purged_when_older_than_the_window() -> None:
    rate = SampledRate(samples=11, window_ms=1000)
    for second in range(11):
        rate.record(100, now_ms=second * 1000)
    # 11 samples of 100 from t=0; the oldest began 10 s ago = 10 full windows.
    assert rate.total(10_000) == pytest.approx(1100)
    assert rate.measure(10_000) == pytest.approx(110.0)
    # t=11 s: the next sample reuses the oldest's slot (t=0 is gone), oldest now t=1 s.
    rate.record(100, now_ms=11_000)
    assert rate.total(11_000) == pytest.approx(1100)
    assert rate.window_size_ms(11_000) == 10_000
    # 11 s after the last record every sample is older than 11 windows: purged.
    assert rate.total(22_000) == 0.0


def test_throttle_time_is_the_excess_over_the_bound_times_the_window() -> None:
    # (rate - bound) / bound * window, rounded half up, at most max.
    assert throttle_time_ms(100.0, 50.0, 10_000, 11_000) == 10_000
    assert throttle_time_ms(100.0, 100.0, 10_000, 11_000) == 0
    assert throttle_time_ms(50.0, 100.0, 10_000, 11_000) == 0
    assert throttle_time_ms(100.25, 100.0, 10_000, 11_000) == 25
    assert throttle_time_ms(100.0, 80.0, 10_001, 11_000) == 2500  # 2500.25 -> 2500
    assert throttle_time_ms(1e9, 1.0, 10_000, 11_000) == 11_000


def quotas_of(entries: dict[QuotaEntity, dict[str, float]]) -> ClientQuotas:
    return ClientQuotas(lambda: entries, samples=11, window_size_seconds=1)


def test_a_producer_over_its_quota_gets_the_throttle_kafka_computes() -> None:
    q = quotas_of({QuotaEntity(False, None, True, "app"): {PRODUCER_BYTE_RATE: 1000.0}})
    # 10 000 bytes at once: 1000 B/s over the 10 s window, exactly the bound.
    assert q.record_produce("User:ANONYMOUS", "app", 10_000, 0) == 0
    # 5000 more: 1500 B/s -> (1500 - 1000) / 1000 * 10 000 ms = 5000 ms.
    assert q.record_produce("User:ANONYMOUS", "app", 5_000, 0) == 5_000
    # Another client id has no quota: never measured.
    assert q.record_produce("User:ANONYMOUS", "other", 10**9, 0) == 0
    assert q.measured_rate(PRODUCER_BYTE_RATE, "", "other", 0) is None


def test_request_percentage_counts_handler_time_as_a_share_of_one_thread() -> None:
    q = quotas_of({QuotaEntity(True, None, False, None): {REQUEST_PERCENTAGE: 10.0}})
    # 1 s of handler time = 100 (% of a thread for one second) over a 10 s window = 10 %/s.
    assert q.record_request_time("User:alice", "c", 1_000_000_000, 0) == 0
    # 0.5 s more: 15 -> (15 - 10) / 10 * 10 000 = 5000 ms.
    assert q.record_request_time("User:alice", "c", 500_000_000, 0) == 5_000
    # A <default> user's quota is per user: bob has his own.
    assert q.record_request_time("User:bob", "c", 1_000_000_000, 0) == 0
    # What the next answer carries, without recording anything: alice is still 5 s over.
    assert q.request_throttle_ms("User:alice", "c", 0) == 5_000
    # 1 s later the window is still 10 s (at least samples - 1 whole windows): unchanged.
    assert q.request_throttle_ms("User:alice", "c", 1_000) == 5_000
    # At 10.5 s it is 10.5 s: 150 / 10.5 = 14.29 %/s -> (14.29 - 10) / 10 * 10 500 = 4500 ms.
    assert q.request_throttle_ms("User:alice", "c", 10_500) == 4_500
    assert q.request_throttle_ms("User:carol", "c", 0) == 0  # nothing recorded for her yet


def test_a_user_quota_is_shared_by_all_the_users_clients() -> None:
    q = quotas_of({QuotaEntity(True, "alice", False, None): {CONSUMER_BYTE_RATE: 100.0}})
    q.record_fetch("User:alice", "a", 600, 0)
    q.record_fetch("User:alice", "b", 400, 0)
    assert q.measured_rate(CONSUMER_BYTE_RATE, "alice", "", 0) == pytest.approx(100.0)
    assert q.record_fetch("User:alice", "c", 100, 0) == 1_000  # 110 B/s: 10 % over -> 1 s


# --- precedence -----------------------------------------------------------------------------


def test_the_most_specific_of_the_eight_entities_wins_per_key() -> None:
    user, client = "alice", "app"
    entities = precedence(user, client)
    assert [str(e) for e in entities] == [
        "user=alice,client-id=app", "user=alice,client-id=<default>", "user=alice",
        "user=<default>,client-id=app", "user=<default>,client-id=<default>", "user=<default>",
        "client-id=app", "client-id=<default>",
    ]
    quotas = {e: {PRODUCER_BYTE_RATE: float(i + 1)} for i, e in enumerate(entities)}
    for i, entity in enumerate(entities):
        resolved = resolve(quotas, user, client, PRODUCER_BYTE_RATE)
        assert resolved is not None and resolved.entity == entity and resolved.bound == i + 1
        del quotas[entity]
    assert resolve(quotas, user, client, PRODUCER_BYTE_RATE) is None


def test_each_key_resolves_on_its_own_and_the_winner_says_who_shares_it() -> None:
    quotas = {
        QuotaEntity(True, "alice", False, None): {PRODUCER_BYTE_RATE: 10.0},
        QuotaEntity(False, None, True, None): {PRODUCER_BYTE_RATE: 99.0, CONSUMER_BYTE_RATE: 20.0},
        QuotaEntity(True, None, True, "app"): {REQUEST_PERCENTAGE: 50.0},
    }
    produce = resolve(quotas, "alice", "app", PRODUCER_BYTE_RATE)
    consume = resolve(quotas, "alice", "app", CONSUMER_BYTE_RATE)
    request = resolve(quotas, "alice", "app", REQUEST_PERCENTAGE)
    assert produce is not None and (produce.bound, produce.user_tag, produce.client_tag) == (10.0, "alice", "")
    assert consume is not None and (consume.bound, consume.user_tag, consume.client_tag) == (20.0, "", "app")
    assert request is not None and (request.bound, request.user_tag, request.client_tag) == (50.0, "alice", "app")
    assert resolve(quotas, "bob", "other", REQUEST_PERCENTAGE) is None


# --- storage ----------------------------------------------------------------------------------


def test_quotas_round_trip_through_the_store_with_any_names() -> None:
    keys = KeySpace()
    entity = QuotaEntity(True, "a/b,c=*", True, None)
    key = keys.quota(entity)
    parsed = keys.parse(key)
    assert parsed is not None and parsed.kind is KeyKind.QUOTA and parsed.quota == entity
    view = ClusterMetadata.from_kvs(
        [KeyValue(key, encode_values(entity, {PRODUCER_BYTE_RATE: 5.0}), 3, 3, None)], 3, keys)
    assert dict(view.client_quotas[entity]) == {PRODUCER_BYTE_RATE: 5.0}
    other = QuotaEntity(False, None, True, "")
    bad = encode_values(other, {PRODUCER_BYTE_RATE: 5.0})
    with pytest.raises(MetadataDecodeError):
        ClusterMetadata.from_kvs([KeyValue(key, bad, 3, 3, None)], 3, keys)


def test_bad_entities_and_values_are_refused() -> None:
    with pytest.raises(QuotaError):
        QuotaEntity.of({})
    with pytest.raises(QuotaError):
        QuotaEntity.of({"ip": "10.0.0.1"})
    with pytest.raises(QuotaError):
        check_value("nope", 1.0)
    with pytest.raises(QuotaError):
        check_value(PRODUCER_BYTE_RATE, 1.5)
    with pytest.raises(QuotaError):
        check_value(REQUEST_PERCENTAGE, 0.0)
    check_value(REQUEST_PERCENTAGE, 12.5)


# --- the APIs ---------------------------------------------------------------------------------


@pytest.fixture
def node(tmp_path: Path) -> Any:
    n = make_node(tmp_path / "data")
    yield n
    n.close()


def alter(node: Any, entries: list[tuple[dict[str, str | None], dict[str, float | None]]],
          validate_only: bool = False) -> list[tuple[int, str | None]]:
    response = ask(node, ALTER, 1, "User:admin", {"validate_only": validate_only, "entries": [
        {"entity": [{"entity_type": t, "entity_name": n} for t, n in entity.items()],
         "ops": [{"key": k, "value": v or 0.0, "remove": v is None} for k, v in ops.items()]}
        for entity, ops in entries]})
    return [(int(e.error_code), e.error_message) for e in response.entries]


def describe(node: Any, components: list[tuple[str, int, str | None]], strict: bool = False
             ) -> dict[str, dict[str, float]]:
    response = ask(node, DESCRIBE, 1, "User:admin", {"strict": strict, "components": [
        {"entity_type": t, "match_type": m, "match": n} for t, m, n in components]})
    assert response.error_code == ErrorCode.none, response.error_message
    return {
        ",".join(f"{e.entity_type}={'<default>' if e.entity_name is None else e.entity_name}" for e in entry.entity):
            {v.key: v.value for v in entry.values}
        for entry in response.entries
    }


def test_alter_then_describe_with_filters(node: Any) -> None:
    assert alter(node, [
        ({"user": "alice"}, {PRODUCER_BYTE_RATE: 1024.0}),
        ({"user": "alice", "client-id": "app"}, {CONSUMER_BYTE_RATE: 2048.0, REQUEST_PERCENTAGE: 50.0}),
        ({"user": None}, {PRODUCER_BYTE_RATE: 512.0}),
        ({"client-id": None}, {CONSUMER_BYTE_RATE: 1.0}),
    ]) == [(0, None)] * 4
    everything = describe(node, [])
    assert everything == {
        "user=alice": {PRODUCER_BYTE_RATE: 1024.0},
        "user=alice,client-id=app": {CONSUMER_BYTE_RATE: 2048.0, REQUEST_PERCENTAGE: 50.0},
        "user=<default>": {PRODUCER_BYTE_RATE: 512.0},
        "client-id=<default>": {CONSUMER_BYTE_RATE: 1.0},
    }
    assert set(describe(node, [("user", 0, "alice")])) == {"user=alice", "user=alice,client-id=app"}
    assert set(describe(node, [("user", 0, "alice")], strict=True)) == {"user=alice"}
    assert set(describe(node, [("user", 1, None)])) == {"user=<default>"}
    assert set(describe(node, [("user", 2, None)])) == {"user=alice", "user=alice,client-id=app"}
    assert set(describe(node, [("client-id", 1, None)])) == {"client-id=<default>"}
    # Removing one key keeps the others; removing the last deletes the entity.
    assert alter(node, [({"user": "alice", "client-id": "app"}, {REQUEST_PERCENTAGE: None}),
                        ({"user": "alice"}, {PRODUCER_BYTE_RATE: None})]) == [(0, None)] * 2
    after = describe(node, [("user", 0, "alice")])
    assert after == {"user=alice,client-id=app": {CONSUMER_BYTE_RATE: 2048.0}}


def test_validate_only_and_bad_entries(node: Any) -> None:
    results = alter(node, [
        ({"user": "ok"}, {PRODUCER_BYTE_RATE: 100.0}),
        ({"ip": "10.0.0.1"}, {"connection_creation_rate": 5.0}),
        ({"user": "x"}, {"no_such_quota": 1.0}),
        ({"user": "x"}, {PRODUCER_BYTE_RATE: 10.5}),
        ({"user": "x"}, {CONSUMER_BYTE_RATE: -1.0}),
        ({}, {PRODUCER_BYTE_RATE: 1.0}),
    ], validate_only=True)
    assert results[0] == (0, None)
    for code, message in results[1:]:
        assert code == ErrorCode.invalid_request and message, (code, message)
    assert "Long" in str(results[3][1])
    assert describe(node, []) == {}  # validate_only wrote nothing
    response = ask(node, DESCRIBE, 1, "User:admin", {"strict": False, "components": [
        {"entity_type": "user", "match_type": 0, "match": "a"},
        {"entity_type": "user", "match_type": 1, "match": None}]})
    assert response.error_code == ErrorCode.invalid_request and response.error_message


def produce_throttle(node: Any, client_id: str, value_bytes: int) -> tuple[int, int]:
    """(throttle time of the answer, size of the request frame)."""
    request = build_request(0, 8, {"acks": 1, "timeout": 1000, "topic_data": [
        {"name": "t", "partition_data": [
            {"index": 0, "records": encode_batch([Record(key=None, value=b"x" * value_bytes)], now_ms=NOW_MS)}]}]})
    frame = io.BytesIO()
    frame.write(struct.pack(">hhih", 0, 8, 7, len(client_id)) + client_id.encode())
    entity_writer(type(request))(frame, request)
    answers: list[Any] = []
    ctx = RequestContext(header=RequestHeader(0, 8, 7, client_id), now_ms=NOW_MS, sink=answers.append,
                         principal=ADMIN)
    node.handle_frame(ctx, frame.getvalue())
    response = decode(0, 8, answers)
    assert [int(p.error_code) for r in response.responses for p in r.partition_responses] == [0]
    assert ctx.throttle_time_ms == response.throttle_time.total_seconds() * 1000
    return ctx.throttle_time_ms, len(frame.getvalue())


def test_a_produce_over_the_quota_carries_the_throttle_time(node: Any) -> None:
    node.create_topic("t", 1, {}, NOW_MS)
    assert alter(node, [({"client-id": "slow"}, {PRODUCER_BYTE_RATE: 200.0})]) == [(0, None)]
    # One request of n bytes is n / 10 B/s over the 10 s window: within 200 B/s.
    first, size = produce_throttle(node, "slow", 1000)
    assert first == 0 and 1000 < size < 2000
    # Two: 2n / 10 B/s, over by (2n / 10 - 200) / 200 of the window.
    second, _ = produce_throttle(node, "slow", 1000)
    assert second == int((2 * size / 10 - 200) / 200 * 10_000 + 0.5)
    third, _ = produce_throttle(node, "slow", 1000)
    assert third > second
    assert produce_throttle(node, "fast", 1000)[0] == 0  # no quota for this client id


def test_quotas_survive_a_restart(tmp_path: Path) -> None:
    node = make_node(tmp_path / "data")
    assert alter(node, [({"user": "carol", "client-id": None}, {CONSUMER_BYTE_RATE: 4096.0})]) == [(0, None)]
    node.close()
    again = make_node(tmp_path / "data")
    try:
        assert dict(again.member.metadata.client_quotas[QuotaEntity(True, "carol", True, None)]) == {
            CONSUMER_BYTE_RATE: 4096.0}
    finally:
        again.close()


def test_an_alteration_on_one_broker_applies_on_every_broker_within_a_second(tmp_path: Path) -> None:
    from .core_cluster import CoreCluster

    c = CoreCluster(tmp_path, [1, 2, 3])
    reply = c.send_as(1, build_request(ALTER, 1, {"validate_only": False, "entries": [
        {"entity": [{"entity_type": "client-id", "entity_name": "app"}],
         "ops": [{"key": PRODUCER_BYTE_RATE, "value": 100.0, "remove": False}]}]}), "User:admin")
    response = c.wait(reply)
    assert [int(e.error_code) for e in response.entries] == [0]
    entity = QuotaEntity(False, None, True, "app")
    assert entity in c.node(1).member.metadata.client_quotas  # answered once its own view shows it
    c.until(lambda: all(entity in c.node(b).member.metadata.client_quotas for b in (2, 3)), limit_ms=1000)
    # Broker 3 now measures the client against it: 10 000 bytes is 1000 B/s over 10 s, 9 times
    # the bound: 90 s of throttle, held to the whole window (11 samples of 1 s).
    assert c.node(3).quotas.record_produce("User:ANONYMOUS", "app", 10_000, c.now_ms) == 11_000
    assert c.node(3).quotas.record_produce("User:ANONYMOUS", "other", 10_000, c.now_ms) == 0


def test_any_answer_carries_the_throttle_time_the_context_holds(node: Any) -> None:
    """The shell sets the request_percentage throttle on the context before the handler runs;
    a kio-built answer (here Metadata) carries it."""
    request = build_request(3, 9, {"topics": [], "allow_auto_topic_creation": False})
    frame = io.BytesIO()
    frame.write(struct.pack(">hhih", 3, 9, 5, 1) + b"c" + b"\x00")
    entity_writer(type(request))(frame, request)
    answers: list[Any] = []
    ctx = RequestContext(header=RequestHeader(3, 9, 5, "c"), now_ms=NOW_MS, sink=answers.append,
                         principal=ADMIN)
    ctx.throttle_time_ms = 1234
    node.handle_frame(ctx, frame.getvalue())
    assert decode(3, 9, answers).throttle_time.total_seconds() * 1000 == 1234
