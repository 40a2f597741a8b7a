"""The service: consume lines, count words, produce `word -> count` (the key is the word, so
every update of one word lands in one partition, in order).

`run(...)` is the synchronous service loop (confluent-kafka): it processes until `max_lines`
lines were read or the source stayed idle for `idle_s`, and commits its offsets only after the
counts they produced are acknowledged (at-least-once: a restart may repeat counts, never lose
them). `publish_lines(...)` is an asyncio producer (aiokafka) for callers that live on a loop.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer
from confluent_kafka import Consumer, KafkaException, Producer


def words(line: str) -> list[str]:
    return [w.strip(".,;:!?\"'()").lower() for w in line.split() if w.strip(".,;:!?\"'()")]


def run(bootstrap: str, source: str, sink: str, *, group_id: str = "word-count",
        max_lines: int | None = None, idle_s: float = 2.0) -> Counter[str]:
    """Count the words of `source` into `sink`; returns the counts this run produced."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": group_id, "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                         "linger.ms": 5})
    counts: Counter[str] = Counter()
    lines = 0
    try:
        consumer.subscribe([source])
        idle_since = time.monotonic()
        while max_lines is None or lines < max_lines:
            message = consumer.poll(0.1)
            if message is None:
                if time.monotonic() - idle_since > idle_s:
                    break
                continue
            if message.error() is not None:
                raise KafkaException(message.error())
            idle_since = time.monotonic()
            lines += 1
            for word in words(message.value().decode()):
                counts[word] += 1
                producer.produce(sink, key=word.encode(), value=str(counts[word]).encode())
            if producer.flush(10) != 0:
                raise RuntimeError("counts not acknowledged within 10 s")
            consumer.commit(message=message, asynchronous=False)
    finally:
        consumer.close()
    return counts


async def publish_lines(bootstrap: str, topic: str, lines: Iterable[str]) -> int:
    """Send each line (acks=all); returns how many were acknowledged."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        sent = 0
        for line in lines:
            await producer.send_and_wait(topic, line.encode())
            sent += 1
        return sent
    finally:
        await producer.stop()
