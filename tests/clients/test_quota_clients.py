"""Client quotas with real clients: quotas set and read by AlterClientQuotas /
DescribeClientQuotas (KIP-546) on the wire (none of the Python clients' admin APIs offers
them), then a confluent-kafka producer under producer_byte_rate and a kafka-python consumer
under consumer_byte_rate, each bounded near its quota and told of the throttle (KIP-219).

The brokers measure over 3 samples of 1 s (quota.window.num / quota.window.size.seconds),
so that the burst a fresh client may send before the first throttle, (samples - 1) windows
of its quota, is small next to what the tests move. The bounds are generous: unthrottled,
these clients move the same bytes on this machine many times faster than the quota."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer, TopicPartition

from ackly.protocol.messages import build_request
from ackly.testing.broker_process import BrokerProcess
from ackly.testing.wire import WireClient

pytestmark = [pytest.mark.slow, pytest.mark.clients, pytest.mark.timeout(180)]

TIMEOUT_S = 60
QUOTA_BYTES_PER_S = 256 * 1024
TOTAL_BYTES = 2 * 1024 * 1024
MESSAGE_BYTES = 8 * 1024
WINDOW_CONFIGS = {"quota.window.num": "3", "quota.window.size.seconds": "1"}


@pytest.fixture(scope="module")
def shared_broker_configs() -> dict[str, str]:
    return WINDOW_CONFIGS


@pytest.fixture
def broker(shared_broker: BrokerProcess) -> BrokerProcess:
    """One broker for the module: each test sets quotas for client ids of its own."""
    return shared_broker


def alter_quotas(bootstrap: str, entity: dict[str, str | None], ops: dict[str, float | None]) -> None:
    with WireClient(bootstrap) as wire:
        response = wire.request(build_request(49, 1, {"validate_only": False, "entries": [{
            "entity": [{"entity_type": t, "entity_name": n} for t, n in entity.items()],
            "ops": [{"key": k, "value": v or 0.0, "remove": v is None} for k, v in ops.items()],
        }]}))
    assert [(int(e.error_code), e.error_message) for e in response.entries] == [(0, None)]


def describe_quotas(bootstrap: str, client_id: str) -> dict[str, float]:
    with WireClient(bootstrap) as wire:
        response = wire.request(build_request(48, 1, {"strict": True, "components": [
            {"entity_type": "client-id", "match_type": 0, "match": client_id}]}))
    assert response.error_code == 0, response.error_message
    assert len(response.entries) <= 1
    return {v.key: v.value for e in response.entries for v in e.values}


def create(bootstrap: str, name: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, 1, 1)])[name].result(TIMEOUT_S)


def produce(bootstrap: str, topic: str, client_id: str, total_bytes: int,
            on_throttle: Callable[[Any], None] | None = None, **extra: str) -> float:
    """Produce total_bytes in MESSAGE_BYTES messages, acks=1; seconds until all are acked."""
    config: dict[str, Any] = {"bootstrap.servers": bootstrap, "client.id": client_id, "acks": 1,
                              "linger.ms": 5, "batch.size": 64 * 1024, **extra}
    if on_throttle is not None:
        config["throttle_cb"] = on_throttle
    producer = Producer(config)
    errors: list[Any] = []
    start = time.monotonic()
    for _ in range(total_bytes // MESSAGE_BYTES):
        while True:
            try:
                producer.produce(topic, b"q" * MESSAGE_BYTES,
                                 on_delivery=lambda err, _msg: err is not None and errors.append(err))
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(TIMEOUT_S * 2) == 0, "not every message was acknowledged"
    elapsed_s = time.monotonic() - start
    assert not errors, errors[:3]
    return elapsed_s


def test_quotas_are_set_and_described_on_the_wire(broker: BrokerProcess) -> None:
    alter_quotas(broker.bootstrap, {"client-id": "c1"}, {"producer_byte_rate": 1024.0, "request_percentage": 25.0})
    assert describe_quotas(broker.bootstrap, "c1") == {"producer_byte_rate": 1024.0, "request_percentage": 25.0}
    alter_quotas(broker.bootstrap, {"client-id": "c1"}, {"request_percentage": None})
    assert describe_quotas(broker.bootstrap, "c1") == {"producer_byte_rate": 1024.0}
    alter_quotas(broker.bootstrap, {"client-id": "c1"}, {"producer_byte_rate": None})
    assert describe_quotas(broker.bootstrap, "c1") == {}


def test_a_producer_is_held_near_its_byte_rate_and_told_of_the_throttle(broker: BrokerProcess) -> None:
    topic = f"quota-{uuid.uuid4().hex[:8]}"
    create(broker.bootstrap, topic)
    alter_quotas(broker.bootstrap, {"client-id": "throttled-producer"},
                 {"producer_byte_rate": float(QUOTA_BYTES_PER_S)})
    throttles: list[Any] = []
    elapsed_s = produce(broker.bootstrap, topic, "throttled-producer", TOTAL_BYTES, throttles.append)
    rate = TOTAL_BYTES / elapsed_s
    # At the quota, after a burst of 2 windows' worth: ~(2 MiB - 0.5 MiB) / 256 KiB/s = 6 s.
    assert rate < 1.8 * QUOTA_BYTES_PER_S, f"{rate / 1024:.0f} KiB/s in {elapsed_s:.1f} s"
    # librdkafka's throttle callback reports the broker's throttle_time_ms.
    assert throttles and max(t.throttle_time for t in throttles) > 0, throttles[:3]


def test_a_consumer_is_held_near_its_byte_rate_and_told_of_the_throttle(broker: BrokerProcess) -> None:
    topic = f"quota-{uuid.uuid4().hex[:8]}"
    create(broker.bootstrap, topic)
    produce(broker.bootstrap, topic, "unlimited-producer", TOTAL_BYTES)
    alter_quotas(broker.bootstrap, {"client-id": "throttled-consumer"},
                 {"consumer_byte_rate": float(QUOTA_BYTES_PER_S)})
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, client_id="throttled-consumer",
                             enable_auto_commit=False, max_partition_fetch_bytes=256 * 1024,
                             fetch_max_bytes=256 * 1024)
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    want = TOTAL_BYTES // MESSAGE_BYTES
    got = 0
    start = time.monotonic()
    deadline = start + TIMEOUT_S * 2
    try:
        while got < want and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                got += len(records)
        elapsed_s = time.monotonic() - start
        metrics = consumer.metrics()
    finally:
        consumer.close()
    assert got == want, f"consumed {got} of {want}"
    rate = TOTAL_BYTES / elapsed_s
    assert rate < 1.8 * QUOTA_BYTES_PER_S, f"{rate / 1024:.0f} KiB/s in {elapsed_s:.1f} s"
    # kafka-python records the throttle_time_ms of every response in its connection metrics.
    throttle_max = max((value for group in metrics.values() for name, value in group.items()
                        if name == "throttle-time-max" and value is not None), default=0)
    assert throttle_max > 0, {g: v for g, v in metrics.items() if "throttle-time-max" in v}


def test_request_percentage_mutes_a_connection_over_it(broker: BrokerProcess) -> None:
    # A share of a thread far below what any request's handler takes: every request is over
    # it by so much that the throttle is the longest there is, the whole window (3 x 1 s).
    alter_quotas(broker.bootstrap, {"client-id": "busy"}, {"request_percentage": 0.0001})
    metadata = build_request(3, 9, {"topics": [], "allow_auto_topic_creation": False})
    with WireClient(broker.bootstrap) as wire:
        wire.send_raw(wire.frame(metadata, client_id="busy"))
        wire.read_frame()  # the first answer comes at once; then the connection is muted
        start = time.monotonic()
        wire.send_raw(wire.frame(metadata, client_id="busy"))
        wire.read_frame()
        waited_s = time.monotonic() - start
    assert waited_s >= 2.0, f"the second request was answered after {waited_s:.2f} s"


def test_a_user_quota_follows_the_authenticated_principal(broker_factory: Callable[..., BrokerProcess],
                                                          tmp_path: Any) -> None:
    """user=alice's quota throttles alice (SASL/SCRAM), not an anonymous client that uses the
    same client id on a PLAINTEXT listener of the same broker."""
    data_dir = tmp_path / "data"
    users = subprocess.run(
        [sys.executable, "-m", "ackly", "users", "set", "alice", "--mechanism", "SCRAM-SHA-512",
         "--password-stdin", "--data-dir", str(data_dir)],
        input="alice-secret\n", capture_output=True, text=True, timeout=60)
    assert users.returncode == 0, users.stderr
    broker = broker_factory(configs={
        **WINDOW_CONFIGS, "listeners": "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0",
        "inter.broker.listener.name": "PLAINTEXT",
    })
    plain = f"127.0.0.1:{broker.listener_ports['PLAINTEXT']}"
    sasl = f"127.0.0.1:{broker.listener_ports['SASL_PLAINTEXT']}"
    topic = f"quota-{uuid.uuid4().hex[:8]}"
    create(plain, topic)
    alter_quotas(plain, {"user": "alice"}, {"producer_byte_rate": 128 * 1024.0})
    anonymous: list[Any] = []
    produce(plain, topic, "shared-id", 768 * 1024, anonymous.append)
    assert not anonymous, anonymous[:3]  # no quota for User:ANONYMOUS: never throttled
    alice: list[Any] = []
    produce(sasl, topic, "shared-id", 768 * 1024, alice.append, **{
        "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "alice", "sasl.password": "alice-secret"})
    assert alice and max(t.throttle_time for t in alice) > 0
