"""SASL with real clients: confluent-kafka, kafka-python, aiokafka, kcat and kafkajs produce and
consume over SASL_PLAINTEXT and SASL_SSL with SCRAM-SHA-512 and with PLAIN, and a wrong password
is refused for each with the broker's error, nothing produced.

One broker for the module: two listeners (SASL_PLAINTEXT and SASL_SSL, a certificate made at
test time with trustme), its first user written offline by `ackly users set` before it starts,
as an operator creates the first admin.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ackly.testing.broker_process import BrokerProcess

pytestmark = [pytest.mark.slow, pytest.mark.clients, pytest.mark.timeout(120)]

USER, PASSWORD = "alice", "alice-secret-1"
CASES = [("SASL_PLAINTEXT", "SCRAM-SHA-512"), ("SASL_PLAINTEXT", "PLAIN"),
         ("SASL_SSL", "SCRAM-SHA-512"), ("SASL_SSL", "PLAIN")]
CASE_IDS = [f"{p}-{m}" for p, m in CASES]
VALUES = [f"v{i}" for i in range(5)]


class SaslBroker:
    def __init__(self, process: BrokerProcess, ca_file: str) -> None:
        self.process = process
        self.ca_file = ca_file

    def bootstrap(self, protocol: str) -> str:
        return f"127.0.0.1:{self.process.listener_ports[protocol]}"


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SaslBroker]:
    import trustme

    root = tmp_path_factory.mktemp("sasl")
    ca = trustme.CA()
    server_pem, ca_pem = root / "server.pem", root / "ca.pem"
    ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(str(server_pem))
    ca.cert_pem.write_to_path(str(ca_pem))
    data_dir = str(root / "data")
    users = subprocess.run(
        [sys.executable, "-m", "ackly", "users", "set", USER, "--mechanism", "SCRAM-SHA-512",
         "--mechanism", "SCRAM-SHA-256", "--password-stdin", "--data-dir", data_dir],
        input=PASSWORD + "\n", capture_output=True, text=True, timeout=60,
    )
    assert users.returncode == 0, users.stderr
    process = BrokerProcess(data_dir, log_level="INFO", configs={
        "listeners": "SASL_PLAINTEXT://127.0.0.1:0,SASL_SSL://127.0.0.1:0",
        "inter.broker.listener.name": "SASL_PLAINTEXT",
        "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-512,SCRAM-SHA-256",
        "ssl.keystore.location": str(server_pem),
    }).start()
    try:
        yield SaslBroker(process, str(ca_pem))
    finally:
        process.kill()


def confluent_conf(broker: SaslBroker, protocol: str, mechanism: str, password: str = PASSWORD) -> dict[str, Any]:
    conf = {"bootstrap.servers": broker.bootstrap(protocol), "security.protocol": protocol,
            "sasl.mechanism": mechanism, "sasl.username": USER, "sasl.password": password}
    if protocol == "SASL_SSL":
        conf["ssl.ca.location"] = broker.ca_file
    return conf


def new_topic(broker: SaslBroker) -> str:
    """A topic of one partition, created by an authenticated admin client."""
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"sasl-{uuid.uuid4().hex[:10]}"
    admin = AdminClient(confluent_conf(broker, "SASL_PLAINTEXT", "SCRAM-SHA-512"))
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    return topic


def end_offset(broker: SaslBroker, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**confluent_conf(broker, "SASL_PLAINTEXT", "SCRAM-SHA-512"), "group.id": "check"})
    try:
        _low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=20)
        return int(high)
    finally:
        consumer.close()


# --- one produce and one consume per client ----------------------------------------------------

def confluent_produce(broker: SaslBroker, protocol: str, mechanism: str, topic: str, password: str) -> None:
    from confluent_kafka import Producer

    errors: list[Any] = []
    producer = Producer({**confluent_conf(broker, protocol, mechanism, password),
                         "message.timeout.ms": 5000, "error_cb": errors.append})
    failed: list[Any] = []
    for value in VALUES:
        producer.produce(topic, value.encode(), partition=0,
                         on_delivery=lambda err, _msg: failed.append(err) if err else None)
    left = producer.flush(15)
    if left or failed:
        raise RuntimeError(f"not delivered: {failed[:1]} {[str(e) for e in errors[:2]]}")


def confluent_consume(broker: SaslBroker, protocol: str, mechanism: str, topic: str) -> list[str]:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({**confluent_conf(broker, protocol, mechanism), "group.id": f"g-{topic}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    got: list[str] = []
    try:
        for _ in range(60):
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                got.append(message.value().decode())
            if len(got) >= len(VALUES):
                break
    finally:
        consumer.close()
    return got


def kafka_python_kwargs(broker: SaslBroker, protocol: str, mechanism: str, password: str = PASSWORD) -> dict:
    kwargs: dict[str, Any] = dict(bootstrap_servers=broker.bootstrap(protocol), security_protocol=protocol,
                                  sasl_mechanism=mechanism, sasl_plain_username=USER, sasl_plain_password=password)
    if protocol == "SASL_SSL":
        kwargs["ssl_cafile"] = broker.ca_file
    return kwargs


def kafka_python_produce(broker: SaslBroker, protocol: str, mechanism: str, topic: str, password: str) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(**kafka_python_kwargs(broker, protocol, mechanism, password), max_block_ms=8000,
                             bootstrap_timeout_ms=8000)
    try:
        for value in VALUES:
            producer.send(topic, value.encode(), partition=0).get(timeout=15)
    finally:
        producer.close()


def kafka_python_consume(broker: SaslBroker, protocol: str, mechanism: str, topic: str) -> list[str]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**kafka_python_kwargs(broker, protocol, mechanism), enable_auto_commit=False)
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    got: list[str] = []
    try:
        for _ in range(30):
            for records in consumer.poll(timeout_ms=500).values():
                got.extend(r.value.decode() for r in records)
            if len(got) >= len(VALUES):
                break
    finally:
        consumer.close()
    return got


def aiokafka_kwargs(broker: SaslBroker, protocol: str, mechanism: str, password: str = PASSWORD) -> dict:
    kwargs: dict[str, Any] = dict(bootstrap_servers=broker.bootstrap(protocol), security_protocol=protocol,
                                  sasl_mechanism=mechanism, sasl_plain_username=USER, sasl_plain_password=password)
    if protocol == "SASL_SSL":
        from aiokafka.helpers import create_ssl_context

        kwargs["ssl_context"] = create_ssl_context(cafile=broker.ca_file)
    return kwargs


def aiokafka_produce(broker: SaslBroker, protocol: str, mechanism: str, topic: str, password: str) -> None:
    from aiokafka import AIOKafkaProducer

    async def run() -> None:
        producer = AIOKafkaProducer(**aiokafka_kwargs(broker, protocol, mechanism, password),
                                    request_timeout_ms=8000)
        try:
            await producer.start()
            for value in VALUES:
                await producer.send_and_wait(topic, value.encode(), partition=0)
        finally:
            await producer.stop()

    asyncio.run(run())


def aiokafka_consume(broker: SaslBroker, protocol: str, mechanism: str, topic: str) -> list[str]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def run() -> list[str]:
        consumer = AIOKafkaConsumer(**aiokafka_kwargs(broker, protocol, mechanism), enable_auto_commit=False)
        await consumer.start()
        got: list[str] = []
        try:
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            for _ in range(30):
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    got.extend(r.value.decode() for r in records)
                if len(got) >= len(VALUES):
                    break
        finally:
            await consumer.stop()
        return got

    return asyncio.run(run())


def kcat_args(broker: SaslBroker, protocol: str, mechanism: str, password: str = PASSWORD) -> list[str]:
    args = ["-b", broker.bootstrap(protocol), "-X", f"security.protocol={protocol}", "-X",
            f"sasl.mechanism={mechanism}", "-X", f"sasl.username={USER}", "-X", f"sasl.password={password}"]
    if protocol == "SASL_SSL":
        args += ["-X", f"ssl.ca.location={broker.ca_file}"]
    return args


def kcat_produce(broker: SaslBroker, protocol: str, mechanism: str, topic: str, password: str) -> None:
    proc = subprocess.run(["kcat", "-P", "-t", topic, "-p", "0", *kcat_args(broker, protocol, mechanism, password)],
                          input="\n".join(VALUES) + "\n", capture_output=True, text=True, timeout=30)
    if proc.returncode != 0 or "ERROR" in proc.stderr:
        raise RuntimeError(proc.stderr)


def kcat_consume(broker: SaslBroker, protocol: str, mechanism: str, topic: str) -> list[str]:
    proc = subprocess.run(["kcat", "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e", "-q",
                           *kcat_args(broker, protocol, mechanism)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def kafkajs_args(broker: SaslBroker, protocol: str, mechanism: str, password: str = PASSWORD) -> dict:
    args: dict[str, Any] = {"brokers": [broker.bootstrap(protocol)],
                            "sasl": {"mechanism": mechanism.lower(), "username": USER, "password": password}}
    if protocol == "SASL_SSL":
        args["ssl"] = {"ca": broker.ca_file}
    return args


PRODUCERS: dict[str, Callable[..., None]] = {
    "confluent": confluent_produce, "kafka-python": kafka_python_produce, "aiokafka": aiokafka_produce,
    "kcat": kcat_produce,
}
CONSUMERS: dict[str, Callable[..., list[str]]] = {
    "confluent": confluent_consume, "kafka-python": kafka_python_consume, "aiokafka": aiokafka_consume,
    "kcat": kcat_consume,
}


@pytest.mark.parametrize("client", sorted(PRODUCERS))
@pytest.mark.parametrize(("protocol", "mechanism"), CASES, ids=CASE_IDS)
def test_produce_and_consume(sasl_broker: SaslBroker, client: str, protocol: str, mechanism: str) -> None:
    topic = new_topic(sasl_broker)
    PRODUCERS[client](sasl_broker, protocol, mechanism, topic, PASSWORD)
    assert CONSUMERS[client](sasl_broker, protocol, mechanism, topic) == VALUES


@pytest.mark.parametrize("client", sorted(PRODUCERS))
def test_wrong_password_is_refused(sasl_broker: SaslBroker, client: str, caplog: pytest.LogCaptureFixture) -> None:
    topic = new_topic(sasl_broker)
    caplog.set_level(logging.INFO)
    for protocol, mechanism in (("SASL_PLAINTEXT", "SCRAM-SHA-512"), ("SASL_SSL", "PLAIN")):
        with pytest.raises(Exception) as refused:  # each client has its own error type
            PRODUCERS[client](sasl_broker, protocol, mechanism, topic, "not-the-password")
        # The broker's message reaches the client (in its error or its log).
        said = str(refused.value) + caplog.text
        assert "Authentication failed" in said or "SaslAuthenticationFailed" in said, said[-2000:]
    assert end_offset(sasl_broker, topic) == 0


@pytest.mark.parametrize(("protocol", "mechanism"), CASES, ids=CASE_IDS)
def test_kafkajs(sasl_broker: SaslBroker, kafkajs: Callable[..., Any], protocol: str, mechanism: str) -> None:
    topic = new_topic(sasl_broker)
    args = kafkajs_args(sasl_broker, protocol, mechanism)
    messages = [{"partition": 0, "key": None, "value": v, "headers": [], "timestamp": 1_700_000_000_000}
                for v in VALUES]
    kafkajs("produce", topic=topic, messages=messages, **args)
    records = kafkajs("fetch", topic=topic, partitions=[0], **args)
    assert [r["value"] for r in records] == VALUES


def test_kafkajs_wrong_password_is_refused(sasl_broker: SaslBroker, kafkajs: Callable[..., Any]) -> None:
    topic = new_topic(sasl_broker)
    for protocol, mechanism in (("SASL_PLAINTEXT", "SCRAM-SHA-512"), ("SASL_SSL", "PLAIN")):
        args = {**kafkajs_args(sasl_broker, protocol, mechanism, "not-the-password"), "retries": 0}
        with pytest.raises(AssertionError, match="Authentication failed"):
            kafkajs("produce", topic=topic, messages=[{"partition": 0, "key": None, "value": "x", "headers": [],
                                                      "timestamp": 1_700_000_000_000}], **args)
    assert end_offset(sasl_broker, topic) == 0


def test_plain_without_tls_is_warned_about(sasl_broker: SaslBroker) -> None:
    """PLAIN is enabled and SASL_PLAINTEXT carries it in clear: the broker says so at start."""
    output = "".join(sasl_broker.process.output)
    assert "PLAIN" in output and "SASL_PLAINTEXT" in output and "clear" in output



def test_users_created_and_removed_online_by_an_admin_client(sasl_broker: SaslBroker) -> None:
    """KIP-554 through confluent-kafka's admin API: a new user can authenticate at once, its
    description shows mechanisms and iterations only, and once deleted it is refused."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import (
        AdminClient,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialDeletion,
        UserScramCredentialUpsertion,
    )

    admin = AdminClient(confluent_conf(sasl_broker, "SASL_SSL", "SCRAM-SHA-512"))
    user = f"carol-{uuid.uuid4().hex[:6]}"
    futures = admin.alter_user_scram_credentials([
        UserScramCredentialUpsertion(user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), b"carol-pw"),
        UserScramCredentialUpsertion(user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), b"carol-pw"),
    ])
    for future in futures.values():
        future.result(30)
    described = admin.describe_user_scram_credentials([user])[user].result(30)
    assert sorted((i.mechanism, i.iterations) for i in described.scram_credential_infos) == [
        (ScramMechanism.SCRAM_SHA_256, 4096), (ScramMechanism.SCRAM_SHA_512, 8192)]
    with pytest.raises(KafkaException, match=r"RESOURCE_NOT_FOUND|does not exist"):
        admin.describe_user_scram_credentials(["nobody-here"])["nobody-here"].result(30)

    topic = new_topic(sasl_broker)
    as_carol = {**confluent_conf(sasl_broker, "SASL_PLAINTEXT", "SCRAM-SHA-256"), "sasl.username": user,
                "sasl.password": "carol-pw"}
    from confluent_kafka import Producer

    producer = Producer({**as_carol, "message.timeout.ms": 10_000})
    producer.produce(topic, b"from carol", partition=0)
    assert producer.flush(15) == 0
    assert end_offset(sasl_broker, topic) == 1

    for future in admin.alter_user_scram_credentials([
        UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_256),
        UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_512),
    ]).values():
        future.result(30)
    errors: list[Any] = []
    refused = Producer({**as_carol, "message.timeout.ms": 4000, "error_cb": errors.append})
    failed: list[Any] = []
    refused.produce(topic, b"again", partition=0, on_delivery=lambda err, _msg: failed.append(err))
    refused.flush(10)
    assert failed and failed[0] is not None
    assert any("Authentication failed" in str(e) for e in errors), errors
    assert end_offset(sasl_broker, topic) == 1
