"""Idempotent producers (KIP-98) against a real `ackly serve`: exactly once, in order.

docs/guarantees.md rules 15-17. Each test sends numbered records to one partition through the
fault proxy, which costs the producer its Produce responses (swallowed, or the connection
reset before or after the broker read the request), or kills the broker with kill -9 after
it appended a batch and before its answer reached the producer. The producer retries; the
broker must recognise every retry of a batch it already holds. The partition is then read
back directly (assign, no group) and must hold every record exactly once, in send order.

Without idempotence the same faults leave duplicates (tests/integration/
test_fault_proxy_clients.py shows it), so a clean result here is the broker's doing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from kafka import KafkaProducer
from kio.schema.errors import ErrorCode

from ackly.testing.broker_process import BrokerProcess
from ackly.testing.fault_proxy import FaultProxy
from ackly.testing.wire import WireClient
from tests.clients.clientkit import unique_topic, wait_for
from tests.integration import wire_requests as rq

pytestmark = [pytest.mark.slow, pytest.mark.clients, pytest.mark.timeout(150)]

PRODUCE = 0
RECORDS = 3000
PRODUCE_TIMEOUT_S = 90


def create_topic(bootstrap: str, topic: str) -> None:
    with WireClient(bootstrap) as direct:
        assert direct.request(rq.create_topic(topic)).topics[0].error_code == ErrorCode.none


def latest_offset(bootstrap: str, topic: str) -> int:
    with WireClient(bootstrap) as direct:
        part = direct.request(rq.list_offsets(topic, -1)).topics[0].partitions[0]
        assert part.error_code == ErrorCode.none
        return int(part.offset)


def consume_all(bootstrap: str, topic: str) -> list[bytes]:
    """Every record of partition 0, read directly from the broker with assign()."""
    end = latest_offset(bootstrap, topic)
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": "ackly-tests-unused",
        "enable.auto.commit": False, "enable.auto.offset.store": False,
        "auto.offset.reset": "error", "fetch.wait.max.ms": 100,
    })
    values: list[bytes] = []
    next_offset = 0
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + 30
        while next_offset < end and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(err)
                values.append(msg.value())
                next_offset = msg.offset() + 1
    finally:
        consumer.close()
    assert next_offset == end, f"read up to offset {next_offset} of {end}"
    return values


def assert_exactly_once_in_order(consumed: list[bytes], sent: list[bytes]) -> None:
    copies = Counter(consumed)
    duplicated = sorted(v for v, n in copies.items() if n > 1)
    missing = sorted(set(sent) - set(copies))
    assert not duplicated, f"{len(duplicated)} records twice or more, e.g. {duplicated[:5]}"
    assert not missing, f"{len(missing)} records missing, e.g. {missing[:5]}"
    assert consumed == sent, "every record once, but not in send order"


def values(n: int = RECORDS) -> list[bytes]:
    return [b"record-%06d" % i for i in range(n)]


def script_produce_faults(proxy: FaultProxy) -> list[Any]:
    """Lost answers and resets at fixed points of the Produce stream (first match wins, and
    every rule counts every Produce, so the points do not depend on timing)."""
    return [
        proxy.add_rule(PRODUCE, "drop_response", after=3, count=2),
        proxy.add_rule(PRODUCE, "reset", when="after_request", after=12, count=2),
        proxy.add_rule(PRODUCE, "reset", when="before_request", after=22, count=2),
        proxy.add_rule(PRODUCE, "drop_response", after=32, count=3),
        proxy.add_rule(PRODUCE, "reset", when="after_request", after=50, count=1),
    ]


# --- the two clients, driven the same way --------------------------------------------------


class ConfluentSender:
    """confluent-kafka (librdkafka) with enable.idempotence=True."""

    def __init__(self, bootstrap: str, **overrides: Any) -> None:
        self.producer = Producer({
            "bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
            "linger.ms": 2, "batch.num.messages": 20, "max.in.flight.requests.per.connection": 5,
            "retry.backoff.ms": 50, "reconnect.backoff.ms": 20, "reconnect.backoff.max.ms": 250,
            "request.timeout.ms": 30_000, "message.timeout.ms": PRODUCE_TIMEOUT_S * 1000,
            **overrides,
        })
        self.delivered: list[bytes] = []
        self.errors: list[KafkaError] = []

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self.errors.append(err)
        else:
            self.delivered.append(msg.value())

    def send(self, topic: str, payloads: list[bytes]) -> None:
        for value in payloads:
            self.producer.produce(topic, value=value, partition=0, on_delivery=self._on_delivery)
            self.producer.poll(0)

    def pump(self) -> None:
        self.producer.poll(0.05)

    def finish(self) -> None:
        remaining = self.producer.flush(PRODUCE_TIMEOUT_S)
        assert remaining == 0, f"{remaining} records undelivered after {PRODUCE_TIMEOUT_S} s"
        assert not self.errors, f"delivery errors: {self.errors[:5]}"


class KafkaPythonSender:
    """kafka-python with enable_idempotence=True (its default; set here to say so)."""

    def __init__(self, bootstrap: str, **overrides: Any) -> None:
        self.producer = KafkaProducer(**{
            "bootstrap_servers": bootstrap, "enable_idempotence": True, "acks": "all",
            "linger_ms": 2, "batch_size": 400, "max_in_flight_requests_per_connection": 5,
            "retry_backoff_ms": 50, "reconnect_backoff_ms": 20, "reconnect_backoff_max_ms": 250,
            "request_timeout_ms": 30_000, "delivery_timeout_ms": PRODUCE_TIMEOUT_S * 1000,
            **overrides,
        })
        self.futures: list[Any] = []

    def send(self, topic: str, payloads: list[bytes]) -> None:
        self.futures += [self.producer.send(topic, value=v, partition=0) for v in payloads]

    def pump(self) -> None:
        time.sleep(0.05)  # its I/O thread does the work

    def finish(self) -> None:
        try:
            self.producer.flush(timeout=PRODUCE_TIMEOUT_S)
            for future in self.futures:
                future.get(timeout=1)
        finally:
            self.producer.close(timeout=5)


class AiokafkaSender:
    """aiokafka with enable_idempotence=True: InitProducerId v0, Produce v7 (pre-flexible).
    Its asyncio loop runs in a thread of its own so the test drives it like the others."""

    def __init__(self, bootstrap: str, **overrides: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        config = {
            "bootstrap_servers": bootstrap, "enable_idempotence": True, "acks": "all",
            "linger_ms": 2, "max_batch_size": 400, "retry_backoff_ms": 50,
            "request_timeout_ms": 30_000, **overrides,
        }
        self.producer = self._run(self._start(config))
        self.pending: concurrent.futures.Future[list[Any]] | None = None

    async def _start(self, config: dict[str, Any]) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(**config)
        await producer.start()
        return producer

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(PRODUCE_TIMEOUT_S)

    def send(self, topic: str, payloads: list[bytes]) -> None:
        async def send_all() -> list[Any]:
            futures = [await self.producer.send(topic, value=v, partition=0) for v in payloads]
            return list(await asyncio.gather(*futures))

        self.pending = asyncio.run_coroutine_threadsafe(send_all(), self.loop)

    def pump(self) -> None:
        time.sleep(0.05)

    def finish(self) -> None:
        try:
            assert self.pending is not None
            self.pending.result(PRODUCE_TIMEOUT_S)
        finally:
            self._run(self.producer.stop())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


def confluent_one_message_batches(bootstrap: str, **overrides: Any) -> ConfluentSender:
    """librdkafka keeps an idempotent partition's requests in flight while fewer than 5
    *messages* are (rdkafka_broker.c), so with batches of 20 it sends one request at a time.
    With one message per batch it really has 5 requests in flight (rule 17's case): a lost
    answer then makes it retry several batches, the older ones already in the log."""
    return ConfluentSender(bootstrap, **{"batch.num.messages": 1, "linger.ms": 0, **overrides})


Sender = ConfluentSender | KafkaPythonSender | AiokafkaSender
SENDERS: dict[str, Callable[..., Sender]] = {
    "confluent": ConfluentSender, "confluent-5-in-flight": confluent_one_message_batches,
    "kafka-python": KafkaPythonSender, "aiokafka": AiokafkaSender,
}
IN_FLIGHT_ONE = {
    "confluent": {"max.in.flight.requests.per.connection": 1},
    "kafka-python": {"max_in_flight_requests_per_connection": 1},
}


@contextmanager
def proxied_broker(broker: BrokerProcess, fault_proxy: Callable[..., FaultProxy], prefix: str
                   ) -> Iterator[tuple[BrokerProcess, FaultProxy, str]]:
    topic = unique_topic(prefix)
    create_topic(broker.bootstrap, topic)
    yield broker, fault_proxy(broker.bootstrap), topic


# --- tests -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_broker_configs() -> dict[str, str]:
    return {"log.segment.bytes": "32768"}


@pytest.mark.parametrize("client", sorted(SENDERS))
def test_lost_answers_and_resets_leave_every_record_once_in_order(
    client: str, shared_broker: BrokerProcess, fault_proxy: Callable[..., FaultProxy]
) -> None:
    """One broker for every client (a topic and a proxy of each test's own): the faults are the
    proxy's, the broker is never killed."""
    with proxied_broker(shared_broker, fault_proxy, f"idem-{client}") as (broker, proxy, topic):
        rules = script_produce_faults(proxy)
        sent = values()
        sender = SENDERS[client](proxy.bootstrap)
        sender.send(topic, sent)
        sender.finish()

        stats = proxy.stats()
        print(f"{client}: proxy {stats}")
        assert [r.fired for r in rules] == [r.count for r in rules], "every scripted fault fired"
        # A fault decided for a request on a connection that an earlier one closed never acts.
        assert stats.faults.get("drop_response", 0) >= 1 and stats.faults.get("reset", 0) >= 1
        assert stats.requests[PRODUCE] > stats.responses[PRODUCE], "the producer had to retry"
        assert stats.errors == ()
        assert_exactly_once_in_order(consume_all(broker.bootstrap, topic), sent)


@pytest.mark.parametrize("client", sorted(IN_FLIGHT_ONE))
def test_kill_9_between_append_and_answer_leaves_one_copy(
    client: str, broker_factory: Callable[..., BrokerProcess], fault_proxy: Callable[..., FaultProxy]
) -> None:
    """The proxy swallows one Produce answer (the broker appended and flushed the batch, then
    answered); the broker is killed at that moment and restarted on the same port; the
    producer's retry meets a broker whose producer state comes from recovery alone.

    One request in flight, so that no later request can overtake the one whose answer is
    held back (with more in flight, swallowing an answer while later ones pass is something
    no TCP connection does, and would confuse any client)."""
    with proxied_broker(broker_factory(configs={"log.segment.bytes": "16384"}), fault_proxy,
                        f"idem-kill-{client}") as (broker, proxy, topic):
        proxy.add_rule(PRODUCE, "drop_response", after=20, count=1, close=False)
        sent = values(1500)
        sender = SENDERS[client](proxy.bootstrap, **IN_FLIGHT_ONE[client])
        sender.send(topic, sent)

        def answer_swallowed() -> bool:
            sender.pump()
            return proxy.stats().faults.get("drop_response", 0) == 1

        wait_for(answer_swallowed, timeout_s=60, what="a swallowed Produce answer")
        in_log = latest_offset(broker.bootstrap, topic)  # includes the unanswered batch
        broker.kill()
        broker.start()
        sender.finish()

        consumed = consume_all(broker.bootstrap, topic)
        assert_exactly_once_in_order(consumed, sent)
        assert 0 < in_log < len(sent)
