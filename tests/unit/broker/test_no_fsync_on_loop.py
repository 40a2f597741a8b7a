"""No fsync on the event loop: three BrokerNodes (a virtual clock, real files) run produce,
a follower's truncation by leader epoch, DeleteRecords, retention, a log clean and a topic
deletion, and a single broker creates topics and alters its dynamic configs, while every
`os.fsync` / `os.fdatasync`
is recorded with where it ran. The shell runs flush jobs, clean jobs and small-file writes
(broker/file_writes.py) in its threads, and start-up before it serves; any other fsync would
run on the event loop and stall every connection while the disk is slow."""

from __future__ import annotations

import datetime
import functools
import os
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ackly.broker.admin import DEFAULT_TIMEOUT_MS
from ackly.broker.dynamic_config import DYNAMIC_CONFIG_FILE
from ackly.broker.file_writes import FileWrite
from ackly.broker.node import BrokerNode
from ackly.cluster.durable_store import METADATA_FILE
from ackly.errors import ErrorCode
from ackly.log.cleaner import CleanJob
from ackly.log.partition_log import FlushJob

from .core_cluster import CoreCluster, batch, log_bytes, log_values
from .test_admin_apis import BROKER, NOW_MS, SET, decode_answer, entity, make_node, send, write_round
from .test_cluster_core import _schema, create, produce, result
from .test_compaction_cluster import COMPACT, clean, keyed

DELETE_RECORDS = 21


class SyncRecorder:
    """Counts fsyncs made off the loop; keeps the stack of every other one."""

    def __init__(self) -> None:
        self.depth = 0
        self.off_loop = 0
        self.on_loop: list[str] = []

    def sync(self, real: Callable[[int], None]) -> Callable[[int], None]:
        def recorded(fd: int) -> None:
            if self.depth:
                self.off_loop += 1
            else:
                self.on_loop.append("".join(traceback.format_stack(limit=12)))
            real(fd)

        return recorded

    def runs_off_loop(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            self.depth += 1
            try:
                return fn(*args, **kwargs)
            finally:
                self.depth -= 1

        return wrapped

    def check(self, what: str) -> None:
        assert not self.on_loop, f"{what}: fsync on the event loop at\n" + "\n".join(
            self.on_loop[:3]
        )


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Iterator[SyncRecorder]:
    r = SyncRecorder()
    monkeypatch.setattr(os, "fsync", r.sync(os.fsync))
    if hasattr(os, "fdatasync"):
        monkeypatch.setattr(os, "fdatasync", r.sync(os.fdatasync))
    # Where the shell runs them: the sync pool, the cleaner thread, start-up (before the
    # broker listens).
    monkeypatch.setattr(FlushJob, "run", r.runs_off_loop(FlushJob.run))
    monkeypatch.setattr(CleanJob, "run", r.runs_off_loop(CleanJob.run))
    monkeypatch.setattr(FileWrite, "run", r.runs_off_loop(FileWrite.run))
    monkeypatch.setattr(CoreCluster, "start", r.runs_off_loop(CoreCluster.start))
    yield r


def delete_records(c: CoreCluster, broker: int, topic: str, offset: int) -> tuple[int, int]:
    mod = _schema(DELETE_RECORDS, 2)
    reply = c.call(broker, DELETE_RECORDS, 2, timeout=datetime.timedelta(seconds=10), topics=(
        mod.DeleteRecordsTopic(name=topic, partitions=(
            mod.DeleteRecordsPartition(partition_index=0, offset=offset),)),))
    (t,) = c.wait(reply).topics
    (p,) = t.partitions
    return int(p.error_code), int(p.low_watermark)


def test_no_fsync_on_the_event_loop(tmp_path: Path, recorder: SyncRecorder) -> None:
    c = CoreCluster(tmp_path, [1, 2, 3], {"log.retention.check.interval.ms": "500"})
    create(c, 1, "t", configs={"min.insync.replicas": "2", "segment.bytes": "300"})
    c.settle()
    old = c.leader("t")
    for i in range(6):
        assert result(c.wait(produce(c, old, "t", batch(b"c%d" % i))))[0] == ErrorCode.none
    c.settle()
    recorder.check("produce")

    # A follower's truncation: the old leader takes acks=1 writes nobody sees, comes back as a
    # follower and truncates them by leader epoch.
    c.partitioned = {old}
    for i in range(3):
        assert result(c.wait(produce(c, old, "t", batch(b"lost%d" % i), acks=1)))[0] == ErrorCode.none
    c.kill(old)
    c.partitioned = set()
    c.until(lambda: c.leader("t") not in (-1, old))
    new = c.leader("t")
    c.until(lambda: c.node(new).partition("t", 0).is_leader)
    assert result(c.wait(produce(c, new, "t", batch(b"n0"))))[0] == ErrorCode.none
    c.start(old)
    c.until(lambda: old in c.state("t").isr)
    c.settle()
    assert log_values(c.node(old), "t") == [b"c%d" % i for i in range(6)] + [b"n0"]
    assert log_bytes(c.node(old), "t") == log_bytes(c.node(new), "t")
    recorder.check("a follower's truncation")

    # DeleteRecords: answered once the new log start is durable, and followers follow it.
    assert delete_records(c, c.leader("t"), "t", 4) == (ErrorCode.none, 4)
    c.until(lambda: all(c.node(b).partition("t", 0).log_start_offset == 4 for b in (1, 2, 3)))
    recorder.check("DeleteRecords")

    # Retention: every segment but the active one goes.
    create(c, 1, "r", configs={"segment.bytes": "300", "retention.bytes": "1"})
    c.settle()
    leader = c.leader("r")
    for i in range(8):
        assert result(c.wait(produce(c, leader, "r", batch(b"r%d" % i))))[0] == ErrorCode.none
    c.until(lambda: all(c.node(b).partition("r", 0).log_start_offset > 0 for b in (1, 2, 3)))
    c.advance(2_000)
    recorder.check("retention")

    # Not vacuous: the flushes and their syncs did happen, off the loop.
    assert recorder.off_loop > 0


def test_a_single_brokers_metadata_and_dynamic_configs_are_written_off_the_loop(
    tmp_path: Path, recorder: SyncRecorder
) -> None:
    data = tmp_path / "data"
    node = recorder.runs_off_loop(make_node)(data)  # start-up, before it serves
    node.file_writes_off_loop = True  # as the shell sets it

    # A topic: its creation is reported only once metadata.json holds it.
    outcome: list[ErrorCode] = []
    node.admin.create_topic("kept-topic", 2, 1, {}, None, NOW_MS, DEFAULT_TIMEOUT_MS,
                            lambda code, message: outcome.append(code))
    node.pump(NOW_MS)
    assert outcome == [] and "kept-topic" not in node.topics
    assert b"kept-topic" not in (data / METADATA_FILE).read_bytes()
    assert node.has_file_writes
    rounds = 0
    while node.has_file_writes:
        write_round(node)
        rounds += 1
    assert outcome == [ErrorCode.none] and "kept-topic" in node.topics
    assert b"kept-topic" in (data / METADATA_FILE).read_bytes()
    assert rounds <= 3, "the topic's records and its partitions' states coalesce"
    recorder.check("CreateTopics on a single broker")

    # Two IncrementalAlterConfigs in a row: neither is answered or applied before the file
    # holds it; one write carries both, in order.
    first, first_id = _alter_broker(node, ("log.retention.bytes", SET, "1111"))
    second, second_id = _alter_broker(node, ("log.retention.bytes", SET, "2222"),
                                      ("log.retention.ms", SET, "3333"))
    assert first == [] and second == []
    assert node.config.get("log.retention.bytes") != 1111
    batch = node.take_file_writes()
    assert [w.path.rsplit("/", 1)[1] for w in batch] == [DYNAMIC_CONFIG_FILE]
    assert node.take_file_writes() == [], "one writer: nothing more while a batch is out"
    batch[0].run()
    node.complete_file_writes(batch, None, NOW_MS)
    for answers, correlation_id in ((first, first_id), (second, second_id)):
        (r,) = decode_answer(44, 1, answers, correlation_id).responses
        assert r.error_code == ErrorCode.none
    assert node.config.get("log.retention.bytes") == 2222
    assert node.config.get("log.retention.ms") == 3333
    recorder.check("IncrementalAlterConfigs on a broker")
    assert recorder.off_loop > 0

    # What was answered is what a restart finds.
    node.close()
    again = recorder.runs_off_loop(make_node)(data)
    assert again.topics["kept-topic"].partition_count == 2
    assert again.config.get("log.retention.bytes") == 2222
    again.close()


def _alter_broker(node: BrokerNode, *ops: tuple[str, int, str]) -> tuple[list[Any], int]:
    """IncrementalAlterConfigs of broker 0, sent; its answer goes to the list, later."""
    resource = entity(44, 1, "AlterConfigsResource", resource_type=BROKER, resource_name="0",
                      configs=tuple(entity(44, 1, "AlterableConfig", name=k, config_operation=op, value=v)
                                    for k, op, v in ops))
    return send(node, 44, 1, validate_only=False, resources=(resource,))


def test_a_clean_swap_makes_no_fsync_on_the_event_loop(
    tmp_path: Path, recorder: SyncRecorder
) -> None:
    c = CoreCluster(tmp_path, [1, 2, 3])
    create(c, 1, "c", configs=COMPACT)
    c.settle()
    leader = c.leader("c")
    for i in range(60):
        value = b"v%d-" % i + b"x" * 40
        code = result(c.wait(produce(c, leader, "c", keyed(b"k%d" % (i % 4), value))))[0]
        assert code == ErrorCode.none
    c.settle()
    recorder.check("produce")
    cleaner = c.node(leader).cleaner
    assert clean(c, leader) >= 1
    assert cleaner.cleans_applied >= 1, "the swap ran (after the flush it waits for)"
    assert log_values(c.node(leader), "c")[-4:] == [b"v%d-" % i + b"x" * 40 for i in range(56, 60)]
    assert len(log_values(c.node(leader), "c")) < 60, "superseded values went"
    recorder.check("a clean")
    assert recorder.off_loop > 0


DELETE_TOPICS = 20


def delete_topic(c: CoreCluster, broker: int, name: str) -> int:
    reply = c.call(broker, DELETE_TOPICS, 4, topic_names=(name,),
                   timeout=datetime.timedelta(seconds=10))
    (r,) = c.wait(reply).responses
    return int(r.error_code)


def test_a_topic_deletion_makes_no_fsync_on_the_event_loop_and_stays_deleted(
    tmp_path: Path, recorder: SyncRecorder
) -> None:
    c = CoreCluster(tmp_path, [1, 2, 3], start=False)
    c.file_writes_off_loop = True  # as the shell sets it
    for b in (1, 2, 3):
        c.start(b)
    c.settle()
    create(c, 1, "gone", configs={"segment.bytes": "300"})
    c.settle()
    for i in range(6):
        assert result(c.wait(produce(c, c.leader("gone"), "gone", batch(b"old%d" % i))))[0] == ErrorCode.none
    c.settle()
    data_dirs = {b: Path(c.hosts[b].data_dir) for b in (1, 2, 3)}
    assert all((d / "gone-0").is_dir() for d in data_dirs.values())
    recorder.check("produce")

    # The directories are renamed away on the loop and removed by the writer: held here, so
    # a broker can be killed with its removal not done.
    c.hold_file_writes = True
    assert delete_topic(c, 1, "gone") == ErrorCode.none
    c.until(lambda: all(not (d / "gone-0").exists() for d in data_dirs.values()))
    for d in data_dirs.values():
        assert [n.name for n in d.iterdir() if n.name.startswith("gone")] == ["gone-0.0-delete"]
    recorder.check("a topic deletion")
    c.kill(3)
    synced = recorder.off_loop
    c.hold_file_writes = False
    c.pump()
    assert recorder.off_loop > synced, "the removals synced the data directories, off the loop"
    for b in (1, 2):
        assert not [n for n in data_dirs[b].iterdir() if n.name.startswith("gone")]
    recorder.check("the removal of a deleted topic's directories")

    # The killed broker removes what it left at start-up (before it serves), and the topic
    # stays deleted: a new topic of the same name starts empty on every replica.
    c.start(3)
    c.settle()
    assert not [n for n in data_dirs[3].iterdir() if n.name.startswith("gone")]
    create(c, 1, "gone", configs={"segment.bytes": "300"})
    c.settle()
    assert result(c.wait(produce(c, c.leader("gone"), "gone", batch(b"new"))))[0] == ErrorCode.none
    c.until(lambda: all(log_values(c.node(b), "gone") == [b"new"] for b in (1, 2, 3)))
    recorder.check("a topic made again")
