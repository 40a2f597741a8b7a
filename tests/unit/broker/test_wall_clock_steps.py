"""A wall-clock step (NTP) expires nothing: three BrokerNodes on a virtual monotonic clock
(core_cluster.py) whose wall clock jumps a day forwards, then two days backwards. The group
member keeps its session, the open transaction stays Ongoing and every follower stays in the
ISR; the deadlines still fire when monotonic time passes them."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from ackly.errors import ErrorCode
from ackly.protocol.record_codec import Record, encode_batch
from ackly.protocol.records import validate_batches
from ackly.types import TopicPartition

from .core_cluster import CoreCluster
from .test_cluster_core import _schema, create

DATA = "d"
TXN = "stepped-txn"
GROUP = "stepped-group"
DAY_MS = 24 * 3600 * 1000
SESSION_MS = 10_000
TXN_TIMEOUT_MS = 60_000
PROPS = {
    "transaction.state.log.num.partitions": "1",
    "offsets.topic.num.partitions": "1",
    "group.initial.rebalance.delay.ms": "0",
    # Every timer checks often, so a step would show within the test's few seconds.
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": "500",
    "transaction.remove.expired.transaction.cleanup.interval.ms": "500",
    "offsets.retention.check.interval.ms": "500",
}


def call(c: CoreCluster, broker: int, api_key: int, version: int, **fields: Any) -> Any:
    return c.wait(c.call(broker, api_key, version, **fields))


def coordinator(c: CoreCluster, key: str, key_type: int) -> int:
    for _ in range(100):
        r = call(c, 1, 10, 3, key=key, key_type=key_type)
        if r.error_code == ErrorCode.none:
            return int(r.node_id)
        c.advance(100)
    raise AssertionError(f"no coordinator for {key}")


def join_group(c: CoreCluster, coord: int) -> tuple[str, int]:
    protocol = _schema(11, 5).JoinGroupRequestProtocol(name="range", metadata=b"meta")

    def join(member_id: str) -> Any:
        return call(c, coord, 11, 5, group_id=GROUP, session_timeout=datetime.timedelta(milliseconds=SESSION_MS),
                    rebalance_timeout=datetime.timedelta(seconds=30), member_id=member_id,
                    group_instance_id=None, protocol_type="consumer", protocols=(protocol,))

    first = join("")
    assert first.error_code == ErrorCode.member_id_required
    joined = join(first.member_id)
    assert joined.error_code == ErrorCode.none
    member_id, generation = joined.member_id, int(joined.generation_id)
    assignment = _schema(14, 3).SyncGroupRequestAssignment(member_id=member_id, assignment=b"all")
    sync = call(c, coord, 14, 3, group_id=GROUP, generation_id=generation, member_id=member_id,
                group_instance_id=None, assignments=(assignment,))
    assert sync.error_code == ErrorCode.none
    return member_id, generation


def heartbeat(c: CoreCluster, coord: int, member_id: str, generation: int) -> ErrorCode:
    r = call(c, coord, 12, 3, group_id=GROUP, generation_id=generation, member_id=member_id,
             group_instance_id=None)
    return ErrorCode(r.error_code)


def txn_state(c: CoreCluster, coord: int) -> str:
    return str(call(c, coord, 65, 0, transactional_ids=(TXN,)).transaction_states[0].transaction_state)


def isr(c: CoreCluster) -> set[int]:
    return set(c.state(DATA).isr)


def test_a_wall_clock_step_expires_no_session_transaction_or_isr_member(tmp_path: Path) -> None:
    c = CoreCluster(tmp_path, [1, 2, 3], PROPS)
    assert create(c, 1, DATA, rf=3).topics[0].error_code == ErrorCode.none
    c.settle()
    group_coord, txn_coord = coordinator(c, GROUP, 0), coordinator(c, TXN, 1)
    c.settle()
    member_id, generation = join_group(c, group_coord)
    init = call(c, txn_coord, 22, 4, transactional_id=TXN,
                transaction_timeout=datetime.timedelta(milliseconds=TXN_TIMEOUT_MS),
                producer_id=-1, producer_epoch=-1)
    assert init.error_code == ErrorCode.none
    mod = _schema(24, 3)
    added = call(c, txn_coord, 24, 3, v3_and_below_transactional_id=TXN,
                 v3_and_below_producer_id=init.producer_id, v3_and_below_producer_epoch=init.producer_epoch,
                 v3_and_below_topics=(mod.AddPartitionsToTxnTopic(name=DATA, partitions=(0,)),))
    assert added.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code == 0
    started_wall_ms = c.wall_clock(c.now_ms)
    assert txn_state(c, txn_coord) == "Ongoing" and isr(c) == {1, 2, 3}

    for step_ms in (DAY_MS, -2 * DAY_MS):
        c.wall_offset_ms += step_ms
        for _ in range(3):  # 6 s of monotonic time: under every timeout, over every check
            c.advance(2_000)
            assert heartbeat(c, group_coord, member_id, generation) == ErrorCode.none
        assert txn_state(c, txn_coord) == "Ongoing", f"after a wall step of {step_ms} ms"
        assert isr(c) == {1, 2, 3}, f"after a wall step of {step_ms} ms"

    # What is stored and shown is wall-clock time: the transaction's start as it was written.
    described = call(c, txn_coord, 65, 0, transactional_ids=(TXN,)).transaction_states[0]
    start = described.transaction_start_time
    start_ms = int(start.timestamp() * 1000) if isinstance(start, datetime.datetime) else int(start)
    assert abs(start_ms - started_wall_ms) < 1_000, (start, started_wall_ms)

    # The deadlines themselves still fire, on monotonic time.
    c.advance(SESSION_MS + 2_000)
    assert heartbeat(c, group_coord, member_id, generation) == ErrorCode.unknown_member_id
    c.until(lambda: txn_state(c, txn_coord) in ("PrepareAbort", "CompleteAbort"),
            limit_ms=TXN_TIMEOUT_MS)
    c.kill(3)
    c.until(lambda: 3 not in isr(c), limit_ms=10_000)


def test_a_wall_step_moves_what_is_stored_not_what_is_waited_for(tmp_path: Path) -> None:
    """The other side: LogAppendTime is the wall clock at the append, stepped or not."""
    c = CoreCluster(tmp_path, [1], {})
    assert create(c, 1, "appended", rf=1, configs={"message.timestamp.type": "LogAppendTime"}
                  ).topics[0].error_code == ErrorCode.none
    c.settle()
    c.wall_offset_ms = -DAY_MS
    p = c.node(1).leader_partition("appended", 0)
    data = bytearray(encode_batch([Record(key=None, value=b"v")], now_ms=c.now_ms))
    result = p.append_as_leader(data, validate_batches(data, 1 << 20), -1, c.now_ms)
    assert result.log_append_time_ms == c.now_ms - DAY_MS
    assert TopicPartition("appended", 0) in c.node(1).replicas.partitions
