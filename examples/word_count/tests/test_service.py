"""The service against a real Kafka broker: ackly's in-process broker, one a test.

Fixtures from ackly's pytest plugin (loaded by ackly's `pytest11` entry point):
`bootstrap_servers`, `create_topic`, `read_topic`, `ackly_broker`, `ackly_session_broker`,
and the `ackly_config` marker. Runs as it is, and with `-n 2` (pytest-xdist).
"""

from __future__ import annotations

import asyncio

import pytest
from ackly.testing.topics import create_topic as create_topic_on
from ackly.testing.topics import read_topic as read_topic_on
from confluent_kafka import Producer

from word_count.service import publish_lines, run, words


def produce_lines(bootstrap: str, topic: str, lines: list[str]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for line in lines:
        producer.produce(topic, line.encode())
    assert producer.flush(10) == 0


def latest_counts(records) -> dict[str, int]:
    return {r.key.decode(): int(r.value) for r in records}


def test_words() -> None:
    assert words("The cat, the hat!") == ["the", "cat", "the", "hat"]


def test_counts_words_into_the_sink(bootstrap_servers, create_topic, read_topic) -> None:
    source = create_topic(partitions=1)
    sink = create_topic(partitions=3)
    produce_lines(bootstrap_servers, source, ["the cat", "the hat", "a cat"])

    counts = run(bootstrap_servers, source, sink, max_lines=3)

    assert counts == {"the": 2, "cat": 2, "hat": 1, "a": 1}
    assert latest_counts(read_topic(sink)) == counts
    # One word's updates stay in one partition, in order.
    updates = [int(r.value) for r in read_topic(sink) if r.key == b"the"]
    assert updates == [1, 2]


def test_a_restart_resumes_after_the_committed_offset(bootstrap_servers, create_topic, read_topic) -> None:
    source, sink = create_topic(), create_topic()
    produce_lines(bootstrap_servers, source, ["one"])
    assert run(bootstrap_servers, source, sink, max_lines=1) == {"one": 1}
    produce_lines(bootstrap_servers, source, ["two"])
    # The second run reads only the line after the first run's committed offset.
    assert run(bootstrap_servers, source, sink, max_lines=1) == {"two": 1}
    assert [r.key for r in read_topic(sink)] == [b"one", b"two"]


@pytest.mark.ackly_config({"log.flush.policy": "never"})
def test_asyncio_producer(bootstrap_servers, create_topic, read_topic) -> None:
    """aiokafka on an event loop of the test's own (the broker runs on a thread of its own)."""
    topic = create_topic()
    sent = asyncio.run(asyncio.wait_for(publish_lines(bootstrap_servers, topic, ["a b", "c"]), 30))
    assert sent == 2
    assert [r.value for r in read_topic(topic)] == [b"a b", b"c"]


@pytest.mark.parametrize("lines", [["x"], ["x y", "y"]])
def test_on_the_session_broker(ackly_session_broker, lines: list[str]) -> None:
    """One broker for every test of the session (per xdist worker); each test its own topics."""
    bootstrap = ackly_session_broker.bootstrap
    source, sink = create_topic_on(bootstrap), create_topic_on(bootstrap)
    produce_lines(bootstrap, source, lines)
    counts = run(bootstrap, source, sink, max_lines=len(lines))
    assert latest_counts(read_topic_on(bootstrap, sink)) == counts
