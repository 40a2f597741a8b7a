"""No fsync on the broker's event-loop thread while real clients create topics, alter the
broker's dynamic configs, produce (flush.policy=always, idempotent), trim with DeleteRecords
and the broker enforces retention: an in-process broker whose `os.fsync` / `os.fdatasync`
record the thread they run on (see docs/architecture.md, "Where fsyncs run")."""

from __future__ import annotations

import os
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)

pytestmark = [pytest.mark.slow, pytest.mark.clients]

TIMEOUT_S = 30


class LoopSyncs:
    def __init__(self) -> None:
        self.serving = False  # start-up syncs (recovery, before the broker listens) count not
        self.on_loop: list[str] = []
        self.off_loop = 0
        self.lock = threading.Lock()

    def wrap(self, real: Callable[[int], None]) -> Callable[[int], None]:
        def recorded(fd: int) -> None:
            if self.serving and threading.current_thread().name == "ackly-broker":
                stack = traceback.extract_stack()
                try:
                    path = os.readlink(f"/proc/self/fd/{fd}")
                except OSError:
                    path = f"fd {fd}"
                with self.lock:
                    self.on_loop.append(path + "\n" + "".join(traceback.format_list(stack[-8:])))
            elif self.serving:
                with self.lock:
                    self.off_loop += 1
            real(fd)

        return recorded


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_clients_never_make_the_broker_fsync_on_its_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ackly.testing.inprocess import InProcessBroker

    syncs = LoopSyncs()
    monkeypatch.setattr(os, "fsync", syncs.wrap(os.fsync))
    if hasattr(os, "fdatasync"):
        monkeypatch.setattr(os, "fdatasync", syncs.wrap(os.fdatasync))
    broker = InProcessBroker(str(tmp_path / "data"), {
        "log.retention.check.interval.ms": "100",
        "log.segment.delete.delay.ms": "0",
    }).start()
    try:
        syncs.serving = True
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        topics = [NewTopic("trim", 1, 1, config={"segment.bytes": "1024"}),
                  NewTopic("kept", 1, 1, config={"segment.bytes": "1024", "retention.bytes": "2048"})]
        for future in admin.create_topics(topics).values():
            future.result(TIMEOUT_S)
        # A dynamic broker config: answered once the file holds it, written off the loop.
        (altered,) = admin.incremental_alter_configs([ConfigResource(
            ConfigResource.Type.BROKER, "0",
            incremental_configs=[ConfigEntry("log.retention.bytes", "987654321",
                                             incremental_operation=AlterConfigOpType.SET)],
        )]).values()
        altered.result(TIMEOUT_S)
        assert b"987654321" in (tmp_path / "data" / "dynamic-broker-configs.properties").read_bytes()
        producer = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True,
                             "acks": "all", "linger.ms": 0})
        failures: list[object] = []
        for i in range(24):
            for topic in ("trim", "kept"):
                producer.produce(topic, value=b"record-%03d-" % i + b"x" * 100, partition=0,
                                 on_delivery=lambda err, _m: failures.append(err) if err else None)
            producer.flush(TIMEOUT_S)  # one batch each: several segments per partition
        assert not failures

        (deleted,) = admin.delete_records([TopicPartition("trim", 0, 16)]).values()
        assert deleted.result(TIMEOUT_S).low_watermark == 16

        consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "w"})
        try:
            def low_watermark(topic: str) -> int:
                low, _high = consumer.get_watermark_offsets(
                    TopicPartition(topic, 0), timeout=TIMEOUT_S, cached=False)
                return int(low)

            assert low_watermark("trim") == 16
            wait_for(lambda: low_watermark("kept") > 0, "retention to trim 'kept'")
        finally:
            consumer.close()
        assert not syncs.on_loop, "fsync on the event loop:\n" + "\n".join(syncs.on_loop[:3])
        assert syncs.off_loop > 0  # the flushes did sync, in the flusher's threads
    finally:
        broker.stop()
