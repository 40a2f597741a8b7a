"""Real clients over TLS listeners: confluent-kafka, kafka-python, aiokafka, kcat, kafkajs.

Each broker here has a PLAINTEXT listener (the test kit's) and an SSL one; the clients only
ever talk to the SSL one, so the addresses they learn from Metadata are the SSL listener's
(a client that followed a plaintext address would fail its TLS handshake). Certificates are
made at test time (tests/clients/tlskit.py). Over TLS a fetch cannot use sendfile: the
records read back here are large enough to take the broker's read-and-write path.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import TopicPartition as AioTopicPartition
from aiokafka.helpers import create_ssl_context
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KpTopicPartition

from ackly.testing.broker_process import BrokerProcess
from tests.clients.clientkit import ck_consume, ck_produce, unique_topic, wait_for
from tests.clients.tlskit import ClientCert, TlsFiles, make_tls_files

pytestmark = [pytest.mark.slow, pytest.mark.clients, pytest.mark.timeout(120)]

LISTENERS = {"listeners": "PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0"}
# Values big enough that one partition's fetch answer exceeds the broker's inline range size.
VALUE = b"v" * 2000
COUNT = 60
RULES = "RULE:^CN=([^,]+),OU=clients,.*$/$1/L,DEFAULT"


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return make_tls_files(tmp_path / "tls")


def ssl_broker(broker_factory: Callable[..., BrokerProcess], tls: TlsFiles, **configs: str) -> BrokerProcess:
    return broker_factory(configs={**LISTENERS, **tls.broker_configs(), **configs}, log_level="INFO")


def values(tag: str, value: bytes = VALUE) -> list[bytes]:
    return [tag.encode() + b"-%03d-" % i + value for i in range(COUNT)]


# --- per-client produce and consume ------------------------------------------------------

def ck_config(tls: TlsFiles, cert: ClientCert | None) -> dict[str, str]:
    config = {"security.protocol": "SSL", "ssl.ca.location": tls.ca}
    if cert is not None:
        config.update({"ssl.certificate.location": cert.cert, "ssl.key.location": cert.key})
    return config


def confluent_round_trip(bootstrap: str, tls: TlsFiles, cert: ClientCert | None) -> None:
    config = ck_config(tls, cert)
    admin = AdminClient({"bootstrap.servers": bootstrap, **config})
    topic = unique_topic("tls-ck")
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)],
                        operation_timeout=10)[topic].result(timeout=15)
    from tests.clients.clientkit import Rec

    records = [Rec(partition=0, key=None, value=v, headers=(), timestamp_ms=int(time.time() * 1000))
               for v in values("ck")]
    offsets = ck_produce(bootstrap, topic, records, acks="all", **config)
    assert [o for _, o in offsets] == list(range(COUNT))
    got = ck_consume(bootstrap, topic, 1, COUNT, **{**config, "fetch.queue.backoff.ms": 0})
    assert [r.value for r in got] == [r.value for r in records]


def kafka_python_round_trip(bootstrap: str, tls: TlsFiles, cert: ClientCert | None) -> None:
    config: dict[str, Any] = {"security_protocol": "SSL", "ssl_cafile": tls.ca}
    if cert is not None:
        config.update(ssl_certfile=cert.cert, ssl_keyfile=cert.key)
    topic = unique_topic("tls-kp")
    producer = KafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, acks="all",
                             linger_ms=5, **config)
    try:
        futures = [producer.send(topic, value=v, partition=0) for v in values("kp")]
        producer.flush(timeout=15)
        assert [f.get(timeout=15).offset for f in futures] == list(range(COUNT))
    finally:
        producer.close(timeout=5)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             fetch_max_wait_ms=100, **config)
    try:
        tp = KpTopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        got: list[bytes] = []
        deadline = time.monotonic() + 15
        while len(got) < COUNT and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                got.extend(m.value for m in batch)
        assert got == values("kp")
    finally:
        consumer.close()


async def _aiokafka_round_trip(bootstrap: str, tls: TlsFiles, cert: ClientCert | None) -> None:
    context = create_ssl_context(cafile=tls.ca, certfile=cert.cert if cert else None,
                                 keyfile=cert.key if cert else None)
    topic = unique_topic("tls-aio")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, security_protocol="SSL", ssl_context=context,
                                acks="all", enable_idempotence=False, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value=v, partition=0) for v in values("aio")]
        metas = await asyncio.wait_for(asyncio.gather(*futures), 15)
        assert [m.offset for m in metas] == list(range(COUNT))
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, security_protocol="SSL", ssl_context=context,
                                group_id=None, enable_auto_commit=False, fetch_max_wait_ms=100)
    await consumer.start()
    try:
        tp = AioTopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        got: list[bytes] = []
        deadline = time.monotonic() + 15
        while len(got) < COUNT and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                got.extend(m.value for m in batch)
        assert got == values("aio")
    finally:
        await consumer.stop()


def aiokafka_round_trip(bootstrap: str, tls: TlsFiles, cert: ClientCert | None) -> None:
    asyncio.run(_aiokafka_round_trip(bootstrap, tls, cert))


def kcat_args(kcat: str, bootstrap: str, tls: TlsFiles, cert: ClientCert | None) -> list[str]:
    args = [kcat, "-b", bootstrap, "-X", "security.protocol=ssl", "-X", f"ssl.ca.location={tls.ca}"]
    if cert is not None:
        args += ["-X", f"ssl.certificate.location={cert.cert}", "-X", f"ssl.key.location={cert.key}"]
    return args


def kcat_round_trip(kcat: str, bootstrap: str, tls: TlsFiles, cert: ClientCert | None) -> None:
    topic = unique_topic("tls-kcat")
    base = kcat_args(kcat, bootstrap, tls, cert)
    lines = [v.decode() for v in values("kcat")]
    produced = subprocess.run([*base, "-P", "-t", topic, "-p", "0", "-X", "acks=all"],
                              input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=30)
    assert produced.returncode == 0, produced.stderr
    consumed = subprocess.run([*base, "-C", "-t", topic, "-p", "0", "-o", "beginning", "-c", str(COUNT),
                               "-e", "-f", "%s\\n"], capture_output=True, text=True, timeout=30)
    assert consumed.returncode == 0, consumed.stderr
    assert consumed.stdout.splitlines() == lines


def kafkajs_round_trip(kafkajs: Callable[..., Any], bootstrap: str, tls: TlsFiles,
                       cert: ClientCert | None) -> None:
    ssl = {"ca": tls.ca, **({"cert": cert.cert, "key": cert.key} if cert else {})}
    topic = unique_topic("tls-js")
    created = kafkajs("createTopic", brokers=[bootstrap], ssl=ssl, topic=topic, partitions=1)
    assert created["created"] is True
    # Short values: the driver prints its result as one line, which node may cut at 64 KiB.
    sent = values("js", b"v" * 100)
    messages = [{"partition": 0, "key": None, "value": v.decode(), "headers": [],
                 "timestamp": int(time.time() * 1000)} for v in sent]
    results = kafkajs("produce", brokers=[bootstrap], ssl=ssl, topic=topic, acks=-1, messages=messages)
    assert [(r["partition"], r["errorCode"]) for r in results] == [(0, 0)]
    got = kafkajs("fetch", brokers=[bootstrap], ssl=ssl, topic=topic, partitions=[0])
    assert [m["value"].encode() for m in got] == sent


# --- the tests --------------------------------------------------------------------------

def test_every_client_produces_and_consumes_over_an_ssl_listener(
    broker_factory: Callable[..., BrokerProcess], tls: TlsFiles, kcat: str, kafkajs: Callable[..., Any],
) -> None:
    broker = ssl_broker(broker_factory, tls)
    bootstrap = broker.listener_bootstrap("SSL")
    confluent_round_trip(bootstrap, tls, None)
    kafka_python_round_trip(bootstrap, tls, None)
    aiokafka_round_trip(bootstrap, tls, None)
    kcat_round_trip(kcat, bootstrap, tls, None)
    kafkajs_round_trip(kafkajs, bootstrap, tls, None)
    # A plaintext client on the TLS port gets nowhere (its bytes are no TLS handshake).
    reports: list[Any] = []
    producer = Producer({"bootstrap.servers": bootstrap, "message.timeout.ms": 2000, "log_level": 0})
    producer.produce("plain-on-tls", b"x", on_delivery=lambda err, _msg: reports.append(err))
    producer.flush(10)
    assert len(reports) == 1 and reports[0] is not None, reports


def test_mtls_every_client_with_a_certificate_is_served_as_its_principal(
    broker_factory: Callable[..., BrokerProcess], tls: TlsFiles, kcat: str, kafkajs: Callable[..., Any],
) -> None:
    broker = ssl_broker(broker_factory, tls, **{"ssl.client.auth": "required",
                                                "ssl.principal.mapping.rules": RULES})
    bootstrap = broker.listener_bootstrap("SSL")
    confluent_round_trip(bootstrap, tls, tls.alice)
    kafka_python_round_trip(bootstrap, tls, tls.alice)
    aiokafka_round_trip(bootstrap, tls, tls.alice)
    kcat_round_trip(kcat, bootstrap, tls, tls.alice)
    kafkajs_round_trip(kafkajs, bootstrap, tls, tls.alice)
    # The broker saw the certificate's subject, mapped by the rule (CN, lower case).
    wait_for(lambda: any("principal User:alice" in line for line in broker.output), timeout_s=5,
             what="the broker to log the client's principal")
    assert not any("principal User:CN=" in line for line in broker.output)


@pytest.mark.parametrize("who", ["no certificate", "a certificate from an unknown CA"])
def test_mtls_refuses_a_client_without_a_trusted_certificate(
    broker_factory: Callable[..., BrokerProcess], tls: TlsFiles, kcat: str, who: str,
) -> None:
    broker = ssl_broker(broker_factory, tls, **{"ssl.client.auth": "required"})
    bootstrap = broker.listener_bootstrap("SSL")
    cert = None if who == "no certificate" else tls.stranger
    admin = AdminClient({"bootstrap.servers": bootstrap, **ck_config(tls, cert)})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=3)
    listed = subprocess.run([*kcat_args(kcat, bootstrap, tls, cert), "-L", "-m", "3"],
                            capture_output=True, text=True, timeout=30)
    assert listed.returncode != 0
    # The same client with alice's certificate is served (the refusal was the certificate's).
    AdminClient({"bootstrap.servers": bootstrap, **ck_config(tls, tls.alice)}).list_topics(timeout=10)


def test_requested_client_auth_serves_clients_with_and_without_a_certificate(
    broker_factory: Callable[..., BrokerProcess], tls: TlsFiles,
) -> None:
    broker = ssl_broker(broker_factory, tls, **{"ssl.client.auth": "requested"})
    bootstrap = broker.listener_bootstrap("SSL")
    confluent_round_trip(bootstrap, tls, None)
    confluent_round_trip(bootstrap, tls, tls.alice)
    wait_for(lambda: any("principal User:CN=alice,OU=clients,O=ackly tests" in line
                         for line in broker.output), timeout_s=5,
             what="the broker to log the DEFAULT principal")


def test_inline_pem_key_store_per_listener(
    broker_factory: Callable[..., BrokerProcess], tls: TlsFiles,
) -> None:
    """Kafka's inline keys (ssl.keystore.certificate.chain / ssl.keystore.key), set for the
    SSL listener only with the listener.name.ssl. prefix."""
    broker = broker_factory(configs={
        **LISTENERS, "listener.name.ssl.ssl.keystore.certificate.chain": tls.broker_chain,
        "listener.name.ssl.ssl.keystore.key": tls.broker_key,
    })
    bootstrap = broker.listener_bootstrap("SSL")
    AdminClient({"bootstrap.servers": bootstrap, **ck_config(tls, None)}).list_topics(timeout=10)


def test_a_tls_listener_without_a_key_store_is_refused_at_start(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*BrokerProcess(str(tmp_path / "data")).command(), "--config", "listeners=SSL://127.0.0.1:0"],
        capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode != 0
    assert "ssl.keystore.location" in proc.stderr and "needs a key store" in proc.stderr


def test_a_fetch_answer_of_megabytes_arrives_whole_over_tls(
    broker_factory: Callable[..., BrokerProcess], tls: TlsFiles,
) -> None:
    """One partition's answer of ~6 MB goes out through the TLS transport in many pieces
    (tests/integration/test_tls_fetch.py makes the writer wait between them); librdkafka
    must read every record back in order."""
    broker = ssl_broker(broker_factory, tls)
    bootstrap = broker.listener_bootstrap("SSL")
    config = ck_config(tls, None)
    from tests.clients.clientkit import Rec

    topic = unique_topic("tls-big")
    now = int(time.time() * 1000)
    records = [Rec(partition=0, key=b"%d" % i, value=bytes([i % 251]) * 20_000 + b"%06d" % i, headers=(),
                   timestamp_ms=now) for i in range(300)]
    ck_produce(bootstrap, topic, records, acks="all", **config)
    got = ck_consume(bootstrap, topic, 1, len(records), **{
        **config, "fetch.queue.backoff.ms": 0, "max.partition.fetch.bytes": 32 * 1024 * 1024,
        "fetch.max.bytes": 64 * 1024 * 1024, "fetch.min.bytes": 6_000_000, "fetch.wait.max.ms": 2000})
    assert [(r.key, r.value) for r in got] == [(r.key, r.value) for r in records]
