"""/metrics as real clients drive one `ackly serve`: per-topic traffic, request errors by
API and code (DeleteTopics, Fetch), a consumer group's lag, and open transactions
(confluent-kafka)."""

from __future__ import annotations

import re
import urllib.request
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families

from ackly.testing.cluster_processes import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.clients]

_ADMIN = re.compile(r"admin on (http://[^\s;)]+)")


def samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def value(url: str, name: str, **labels: str) -> float | None:
    return samples(url).get((name, tuple(sorted(labels.items()))))


def test_traffic_errors_lag_and_transactions_are_counted(broker_factory: Any) -> None:
    broker = broker_factory(configs={"admin.listener": "127.0.0.1:0", "group.initial.rebalance.delay.ms": "0",
                                     "transaction.state.log.num.partitions": "1",
                                     "offsets.topic.num.partitions": "1"})
    url = next(m.group(1) for line in broker.output if (m := _ADMIN.search(line)))

    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    for i in range(10):
        producer.produce("events", value=b"v%d" % i, partition=0)
    assert producer.flush(30) == 0
    assert value(url, "ackly_topic_records_in_total", topic="events") == 10
    bytes_in = value(url, "ackly_topic_bytes_in_total", topic="events")
    assert bytes_in is not None and bytes_in > 20
    assert (value(url, "ackly_requests_total", request="Produce") or 0) >= 1
    produce_count = value(url, "ackly_request_total_time_seconds_count", request="Produce")
    assert produce_count == value(url, "ackly_requests_total", request="Produce")

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    with pytest.raises(Exception, match="UNKNOWN_TOPIC_OR_PART"):
        admin.delete_topics(["no-such-topic"], operation_timeout=10)["no-such-topic"].result(30)
    assert value(url, "ackly_request_errors_total", request="DeleteTopics",
                 error="UNKNOWN_TOPIC_OR_PARTITION") == 1

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "lagging",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        consumer.commit(offsets=[TopicPartition("events", 0, 4)], asynchronous=False)
    finally:
        consumer.close()
    assert wait_until(lambda: value(url, "ackly_group_lag", group="lagging", topic="events", partition="0") == 6,
                      30, "the group's lag of 6 records (HW 10, committed 4)")

    txn = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": "metrics-txn"})
    txn.init_transactions(30)
    txn.begin_transaction()
    txn.produce("in-txn", value=b"pending", partition=0)
    assert txn.flush(30) == 0
    wait_until(lambda: value(url, "ackly_open_transactions") == 1, 30, "one open transaction")
    assert value(url, "ackly_hanging_transactions") == 0
    txn.commit_transaction(30)
    wait_until(lambda: value(url, "ackly_open_transactions") == 0, 30, "the transaction closed")
    assert (value(url, "ackly_producer_ids") or 0) >= 1
    # Both internal topics were created (one partition each) and their shards loaded here.
    assert value(url, "ackly_coordinator_load_seconds_count", coordinator="group") == 1
    assert value(url, "ackly_coordinator_load_seconds_count", coordinator="transaction") == 1
    bytes_out_before = value(url, "ackly_topic_bytes_out_total", topic="events") or 0

    reader = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "reader",
                       "auto.offset.reset": "earliest", "enable.auto.commit": False,
                       "fetch.wait.max.ms": 5000})
    try:
        # Past the end: the first fetch is answered OFFSET_OUT_OF_RANGE, then the consumer
        # resets to the earliest offset and reads.
        reader.assign([TopicPartition("events", 0, 1000)])
        wait_until(lambda: got_one(reader), 30, "a consumed record")
        # At the end of the partition the consumer's fetch waits in the purgatory (long poll).
        wait_until(lambda: (value(url, "ackly_purgatory_size", operation="Fetch") or 0) >= 1, 30,
                   "a fetch waiting in the purgatory")
    finally:
        reader.close()
    assert (value(url, "ackly_topic_bytes_out_total", topic="events") or 0) > bytes_out_before
    assert (value(url, "ackly_request_errors_total", request="Fetch", error="OFFSET_OUT_OF_RANGE") or 0) >= 1


def got_one(consumer: Consumer) -> bool:
    message = consumer.poll(0.2)
    return message is not None and not message.error()
