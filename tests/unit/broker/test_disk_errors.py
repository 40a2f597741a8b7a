"""A failed write or fsync takes the log directory offline (Kafka's LogDirFailureChannel).

Against in-process BrokerNodes: one on a SimDisk (whose fsync fails on command and then drops
the unflushed writes, as Linux does), and three on a virtual clock (core_cluster.py) where the
leader's fsync fails and the others take over. Nothing appended after the last good flush is
acknowledged, and every acknowledged record survives a restart.
"""

from __future__ import annotations

import datetime
import errno
import random
import sys
from pathlib import Path
from typing import Any

import pytest

from ackly.broker.context import RequestContext
from ackly.broker.node import BrokerNode
from ackly.config import BrokerConfig
from ackly.errors import ErrorCode, StorageError
from ackly.log import disk as disk_module
from ackly.log.disk import SimDisk
from ackly.protocol.headers import RequestHeader
from ackly.protocol.messages import request_type

from .core_cluster import CoreCluster, Reply, batch, encode_frame, log_values

PRODUCE, FETCH = 0, 1
NOW_MS = 1_700_000_000_000
TOPIC = "t"


def _schema(api_key: int, version: int) -> Any:
    return sys.modules[request_type(api_key, version).__module__]


def produce_request(data: bytes, acks: int) -> Any:
    mod = _schema(PRODUCE, 9)
    return request_type(PRODUCE, 9)(
        transactional_id=None, acks=acks, timeout=datetime.timedelta(seconds=10),
        topic_data=(mod.TopicProduceData(name=TOPIC, partition_data=(
            mod.PartitionProduceData(index=0, records=data),)),),
    )


def fetch_request(offset: int) -> Any:
    mod = _schema(FETCH, 12)
    return request_type(FETCH, 12)(
        replica_id=-1, max_wait=datetime.timedelta(0), min_bytes=0, max_bytes=1 << 20,
        isolation_level=0, session_id=0, session_epoch=-1,
        topics=(mod.FetchTopic(topic=TOPIC, partitions=(mod.FetchPartition(
            partition=0, current_leader_epoch=-1, fetch_offset=offset, last_fetched_epoch=-1,
            log_start_offset=-1, partition_max_bytes=1 << 20),)),),
        forgotten_topics_data=(), rack_id="",
    )


_correlation = iter(range(1, 1_000_000))


def send(node: BrokerNode, request: Any) -> Reply:
    correlation_id = next(_correlation)
    reply = Reply(int(request.__api_key__), int(request.__version__))
    header = RequestHeader(reply.api_key, reply.version, correlation_id, "client")
    node.handle_frame(RequestContext(header=header, now_ms=NOW_MS, sink=reply.set),
                      encode_frame(request, correlation_id, b"client"))
    return reply


def produce_code(reply: Reply) -> ErrorCode:
    (t,) = reply.value.responses
    (p,) = t.partition_responses
    return ErrorCode(p.error_code)


def fetch_code(reply: Reply) -> ErrorCode:
    (t,) = reply.value.responses
    (p,) = t.partitions
    return ErrorCode(p.error_code)


def flush(node: BrokerNode) -> None:
    """What the shell does: run the group flush, report success or failure."""
    jobs = node.take_flush_jobs()
    try:
        for _, job in jobs:
            job.run()
    except Exception as exc:  # the shell hands any failure to the node
        node.flush_failed(exc, NOW_MS)
    else:
        node.complete_flush(jobs, NOW_MS)


def sim_node(disk: SimDisk) -> BrokerNode:
    config = BrokerConfig.from_properties({"log.flush.policy": "always"})
    return BrokerNode(config=config, disk=disk, data_dir="/data", host="127.0.0.1", port=9092,
                      now_ms=NOW_MS, rng=random.Random(0))


@pytest.mark.parametrize("acks", [1, -1])
def test_a_failed_fsync_is_never_followed_by_an_acknowledgement(acks: int) -> None:
    disk = SimDisk(random.Random(0))
    node = sim_node(disk)
    node.create_topic(TOPIC, 1, {}, NOW_MS)
    first = send(node, produce_request(batch(b"acked"), acks))
    assert not first.done  # waits for the flush (flush.policy=always)
    flush(node)
    assert produce_code(first) == ErrorCode.none

    waiting = send(node, produce_request(batch(b"lost-1"), acks))
    disk.fail_next("fsync", suffix=".log")
    flush(node)  # the fsync fails: Linux drops the pages, SimDisk the unflushed writes
    assert produce_code(waiting) == ErrorCode.kafka_storage_error
    failure = node.log_dir_failure
    assert failure is not None and failure.errno == errno.EIO
    assert failure.path.endswith("t-0/00000000000000000000.log")

    # Offline for good: later produces and fetches are refused, no flush is ever taken again
    # (a retried fsync would succeed and prove nothing).
    later = send(node, produce_request(batch(b"lost-2"), acks))
    assert produce_code(later) == ErrorCode.kafka_storage_error
    assert fetch_code(send(node, fetch_request(0))) == ErrorCode.kafka_storage_error
    assert node.take_flush_jobs() == [] and not node.has_flush_work
    with pytest.raises(StorageError, match="offline since fsync"):
        disk.write_atomic("/data/anything", b"x")

    node.close()  # leaves the logs for recovery: no clean-shutdown marker
    assert not disk.exists("/data/t-0/clean-shutdown")
    disk.crash()
    again = sim_node(disk)
    flush(again)  # what recovery accepted is flushed in the first round, as the shell runs it
    p = again.partition(TOPIC, 0)
    assert (p.log_end_offset, p.high_watermark) == (1, 1)
    again.close()


def test_a_failed_append_takes_the_log_directory_offline() -> None:
    disk = SimDisk(random.Random(1))
    node = sim_node(disk)
    node.create_topic(TOPIC, 1, {}, NOW_MS)
    disk.fail_next("append to", suffix=".log", errno_code=errno.ENOSPC)
    reply = send(node, produce_request(batch(b"x"), -1))
    assert produce_code(reply) == ErrorCode.kafka_storage_error
    failure = node.log_dir_failure
    assert failure is not None and failure.errno == errno.ENOSPC
    # Space came back, but the directory stays offline until a restart recovers it.
    assert produce_code(send(node, produce_request(batch(b"y"), -1))) == ErrorCode.kafka_storage_error
    node.close()
    disk.crash()
    again = sim_node(disk)
    assert again.partition(TOPIC, 0).log_end_offset == 0
    reply = send(again, produce_request(batch(b"z"), -1))
    flush(again)
    assert produce_code(reply) == ErrorCode.none
    again.close()


def test_an_offline_broker_keeps_ticking_and_writes_nothing() -> None:
    disk = SimDisk(random.Random(2))
    node = sim_node(disk)
    node.create_topic(TOPIC, 1, {"retention.ms": "1"}, NOW_MS)
    disk.fail_next("append to", suffix=".log")
    send(node, produce_request(batch(b"x"), 1))
    assert node.log_dir_failure is not None
    # Retention, the metadata store in the data directory, deletions: nothing is attempted,
    # so nothing raises out of the timer.
    node.tick(NOW_MS + 10_000_000)
    assert node.next_deadline_ms() is not None
    node.close()


# ------------------------------------------------------------------ three brokers


def test_three_brokers_the_leader_whose_fsync_fails_steps_down_and_loses_nothing_acknowledged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from .test_cluster_core import create, produce, result

    c = CoreCluster(tmp_path, [1, 2, 3], props={"log.flush.policy": "always"})
    response = create(c, 1, TOPIC, configs={"min.insync.replicas": "2"})
    assert response.topics[0].error_code == ErrorCode.none
    c.settle()
    leader = c.leader(TOPIC)
    assert result(c.wait(produce(c, leader, TOPIC, batch(b"acked")))) == (ErrorCode.none, 0)

    # Hold the leader's flush, let the followers copy and flush the next batch.
    c.hold_flushes = True
    pending = produce(c, leader, TOPIC, batch(b"in-doubt"))
    c.pump()
    for b in c.running:
        if b != leader:
            flush_now(c.node(b))
    c.pump()
    assert not pending.done

    def eio(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(disk_module, "_fdatasync", eio)
    node = c.node(leader)
    jobs = node.take_flush_jobs()
    with pytest.raises(StorageError):
        for _, job in jobs:
            job.run()
    monkeypatch.undo()
    node.flush_failed(node.disk.failure or AssertionError("no failure"), c.now_ms)
    assert result(pending.value)[0] == ErrorCode.kafka_storage_error
    assert node.log_dir_failure is not None

    # The shell leaves the cluster at once (lease revoked); the others elect an ISR member.
    node.leave(c.now_ms)
    c.pump()
    other = next(b for b in c.running if b != leader)
    # Gone from the cluster at once, not after the session timeout (no clock has moved).
    assert leader not in c.node(other).metadata.brokers
    c.kill(leader, revoke=False)
    c.hold_flushes = False
    c.until(lambda: c.leader(TOPIC) not in (-1, leader))
    new_leader = c.leader(TOPIC)
    c.until(lambda: leader not in c.state(TOPIC).isr)
    assert log_values(c.node(new_leader), TOPIC)[:1] == [b"acked"]
    # The producer's retry goes to the new leader; the old one comes back as a follower.
    assert result(c.wait(produce(c, new_leader, TOPIC, batch(b"after"))))[0] == ErrorCode.none
    c.start(leader)
    c.until(lambda: leader in c.state(TOPIC).isr)
    assert log_values(c.node(leader), TOPIC) == log_values(c.node(new_leader), TOPIC)
    assert log_values(c.node(leader), TOPIC)[0] == b"acked"


def flush_now(node: BrokerNode) -> None:
    jobs = node.take_flush_jobs()
    for _, job in jobs:
        job.run()
    node.complete_flush(jobs, NOW_MS)
