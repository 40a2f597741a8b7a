"""The transaction coordinator's APIs against an in-process BrokerNode, request frames in and
response frames out (FindCoordinator key type 1, InitProducerId with a transactional id,
AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, DescribeTransactions, ListTransactions), with
transactional Produce in between and the markers checked in the partitions' logs."""

from __future__ import annotations

import datetime
import importlib
import random
from pathlib import Path
from typing import Any

import pytest
from tests.unit.broker.test_idempotence_apis import NOW_MS, call, make_node

from ackly.broker.dispatch import TABLE
from ackly.broker.node import BrokerNode
from ackly.coordinator.group_coordinator import OFFSETS_TOPIC, partition_for
from ackly.coordinator.transaction_coordinator import TRANSACTION_STATE_TOPIC
from ackly.errors import ErrorCode
from ackly.protocol.record_codec import ControlType, Record, decode_batch, decode_control_record, encode_batch
from ackly.protocol.records import iter_batches
from ackly.types import TopicPartition

TOPIC = "txn-data"
FIND_COORDINATOR, INIT_PRODUCER_ID, PRODUCE = 10, 22, 0
ADD_PARTITIONS, ADD_OFFSETS, END_TXN, DESCRIBE_TXNS, LIST_TXNS = 24, 25, 26, 65, 66


def small_node(data_dir: Path) -> BrokerNode:
    """A broker whose __transaction_state has 5 partitions (50 cost a second per test)."""
    from ackly.config import BrokerConfig
    from ackly.log.disk import RealDisk

    props = {"log.flush.policy": "never", "transaction.state.log.num.partitions": "5"}
    return BrokerNode(config=BrokerConfig.from_properties(props), disk=RealDisk(), data_dir=str(data_dir),
                      host="127.0.0.1", port=9092, now_ms=NOW_MS, rng=random.Random(0))


@pytest.fixture
def node(tmp_path: Path) -> Any:
    n = small_node(tmp_path / "data")
    n.create_topic(TOPIC, 2, {}, NOW_MS)
    yield n
    n.close()


def find(node: BrokerNode, txn: str, version: int = 3) -> Any:
    if version >= 4:
        return call(node, FIND_COORDINATOR, version, key_type=1, coordinator_keys=(txn,)).coordinators[0]
    return call(node, FIND_COORDINATOR, version, key=txn, key_type=1)


def init(node: BrokerNode, txn: str, version: int = 4, timeout_ms: int = 60_000, pid: int = -1,
         epoch: int = -1) -> Any:
    fields: dict[str, Any] = {"transactional_id": txn,
                              "transaction_timeout": datetime.timedelta(milliseconds=timeout_ms)}
    if version >= 3:
        fields.update(producer_id=pid, producer_epoch=epoch)
    return call(node, INIT_PRODUCER_ID, version, **fields)


def add(node: BrokerNode, txn: str, pid: int, epoch: int, *partitions: int, version: int = 3,
        topic: str = TOPIC) -> dict[int, ErrorCode]:
    m = importlib.import_module(f"kio.schema.add_partitions_to_txn.v{version}.request")
    r = call(node, ADD_PARTITIONS, version, v3_and_below_transactional_id=txn, v3_and_below_producer_id=pid,
             v3_and_below_producer_epoch=epoch,
             v3_and_below_topics=(m.AddPartitionsToTxnTopic(name=topic, partitions=partitions),))
    return {int(p.partition_index): ErrorCode(p.partition_error_code)
            for t in r.results_by_topic_v3_and_below for p in t.results_by_partition}


def end(node: BrokerNode, txn: str, pid: int, epoch: int, commit: bool, version: int = 3) -> ErrorCode:
    r = call(node, END_TXN, version, transactional_id=txn, producer_id=pid, producer_epoch=epoch,
             committed=commit)
    return ErrorCode(r.error_code)


def produce(node: BrokerNode, txn: str, pid: int, epoch: int, seq: int, partition: int, *values: bytes) -> ErrorCode:
    batch = encode_batch([Record(key=None, value=v, timestamp_ms=NOW_MS) for v in values],
                         producer_id=pid, producer_epoch=epoch, base_sequence=seq, transactional=True)
    m = importlib.import_module("kio.schema.produce.v9.request")
    r = call(node, PRODUCE, 9, transactional_id=txn, acks=-1, timeout=datetime.timedelta(seconds=10),
             topic_data=(m.TopicProduceData(name=TOPIC, partition_data=(
                 m.PartitionProduceData(index=partition, records=batch),)),))
    return ErrorCode(r.responses[0].partition_responses[0].error_code)


def batches(node: BrokerNode, partition: int, topic: str = TOPIC) -> list[Any]:
    p = node.partition(topic, partition)
    data = b"".join(s.file.read(0, s.size) for s in p.log.segments)
    return [decode_batch(data[pos:pos + h.size]) for pos, h in iter_batches(data)]


def markers(node: BrokerNode, partition: int, topic: str = TOPIC) -> list[tuple[ControlType, int, int]]:
    return [(decode_control_record(recs[0]).kind, h.producer_id, h.producer_epoch)
            for h, recs in batches(node, partition, topic) if h.is_control]


def describe(node: BrokerNode, txn: str) -> Any:
    return call(node, DESCRIBE_TXNS, 0, transactional_ids=(txn,)).transaction_states[0]


def begin(node: BrokerNode, txn: str, *partitions: int) -> tuple[int, int]:
    assert find(node, txn).error_code == ErrorCode.none
    r = init(node, txn)
    assert r.error_code == ErrorCode.none
    assert set(add(node, txn, r.producer_id, r.producer_epoch, *partitions).values()) == {ErrorCode.none}
    return int(r.producer_id), int(r.producer_epoch)


def test_advertised_ranges() -> None:
    ranges = {key: (TABLE[key].min_version, TABLE[key].max_version)
              for key in (ADD_PARTITIONS, ADD_OFFSETS, END_TXN, DESCRIBE_TXNS, LIST_TXNS)}
    assert ranges == {ADD_PARTITIONS: (0, 5), ADD_OFFSETS: (0, 3), END_TXN: (0, 5), DESCRIBE_TXNS: (0, 0),
                      LIST_TXNS: (0, 1)}


@pytest.mark.parametrize("version", [1, 3, 4, 6])
def test_find_coordinator_for_a_transactional_id_creates_the_state_topic(tmp_path: Path, version: int) -> None:
    node = make_node(tmp_path / "data")  # Kafka's defaults
    answer = find(node, "my-txn", version)
    assert answer.error_code == ErrorCode.none and answer.node_id == 0 and answer.port == 9092
    state = node.topics[TRANSACTION_STATE_TOPIC]
    assert state.partition_count == 50
    assert state.config.cleanup_policy == "compact" or "compact" in state.config.cleanup_policy
    assert find(node, "", 3).error_code == ErrorCode.invalid_request
    node.close()


@pytest.mark.parametrize("commit", [True, False])
def test_a_transaction_over_two_partitions_ends_with_a_marker_on_each(node: BrokerNode, commit: bool) -> None:
    pid, epoch = begin(node, "t", 0, 1)
    assert produce(node, "t", pid, epoch, 0, 0, b"a", b"b") == ErrorCode.none
    assert produce(node, "t", pid, epoch, 0, 1, b"c") == ErrorCode.none
    p0 = node.partition(TOPIC, 0)
    assert p0.last_stable_offset == 0 < p0.high_watermark == 2, "the open transaction holds the LSO"
    assert describe(node, "t").transaction_state == "Ongoing"
    assert end(node, "t", pid, epoch, commit) == ErrorCode.none
    kind = ControlType.COMMIT if commit else ControlType.ABORT
    assert markers(node, 0) == [(kind, pid, epoch)] and markers(node, 1) == [(kind, pid, epoch)]
    assert p0.last_stable_offset == p0.high_watermark == 3
    state = describe(node, "t")
    assert state.transaction_state == ("CompleteCommit" if commit else "CompleteAbort")
    assert state.topics == () and state.producer_id == pid
    # A retried EndTxn answers as Kafka does.
    assert end(node, "t", pid, epoch, commit) == ErrorCode.none
    assert end(node, "t", pid, epoch, not commit) == ErrorCode.invalid_txn_state


@pytest.mark.parametrize(("version", "fenced"), [(0, ErrorCode.invalid_producer_epoch),
                                                 (1, ErrorCode.invalid_producer_epoch),
                                                 (2, ErrorCode.producer_fenced), (3, ErrorCode.producer_fenced)])
def test_an_older_epoch_is_fenced_per_version(node: BrokerNode, version: int, fenced: ErrorCode) -> None:
    pid, epoch = begin(node, "f", 0)
    assert init(node, "f").error_code == ErrorCode.concurrent_transactions  # aborts the open one
    newer = init(node, "f")
    assert newer.error_code == ErrorCode.none and newer.producer_epoch == epoch + 2
    assert end(node, "f", pid, epoch, True, version) == fenced
    assert set(add(node, "f", pid, epoch, 1, version=version).values()) == {fenced}
    m = importlib.import_module(f"kio.schema.add_offsets_to_txn.v{version}.request")
    assert m  # AddOffsetsToTxn shares the rule
    r = call(node, ADD_OFFSETS, version, transactional_id="f", producer_id=pid, producer_epoch=epoch, group_id="g")
    assert r.error_code == fenced
    # The open transaction was aborted with the fencing epoch before the new instance got its own.
    assert markers(node, 0) == [(ControlType.ABORT, pid, epoch + 1)]


@pytest.mark.parametrize(("version", "fenced"), [(3, ErrorCode.invalid_producer_epoch), (4, ErrorCode.producer_fenced)])
def test_init_producer_id_kip360_and_kip588(node: BrokerNode, version: int, fenced: ErrorCode) -> None:
    find(node, "k")
    first = init(node, "k", version)
    bumped = init(node, "k", version, pid=first.producer_id, epoch=first.producer_epoch)
    assert (bumped.error_code, bumped.producer_id, bumped.producer_epoch) == (
        ErrorCode.none, first.producer_id, first.producer_epoch + 1)
    other = init(node, "k", version)  # a new instance: the epoch before it is forgotten
    assert init(node, "k", version, pid=first.producer_id, epoch=bumped.producer_epoch).error_code == fenced
    assert other.producer_epoch == bumped.producer_epoch + 1
    assert init(node, "k", version, pid=first.producer_id, epoch=-1).error_code == ErrorCode.invalid_request


def test_transaction_timeout_above_the_maximum_is_refused(node: BrokerNode) -> None:
    find(node, "slow")
    assert init(node, "slow", timeout_ms=900_001).error_code == ErrorCode.invalid_transaction_timeout
    assert init(node, "slow", timeout_ms=900_000).error_code == ErrorCode.none


def test_not_coordinator_before_the_state_topic_exists(node: BrokerNode) -> None:
    assert init(node, "early").error_code == ErrorCode.not_coordinator
    assert end(node, "early", 1, 0, True) == ErrorCode.not_coordinator


def test_unknown_partitions_are_refused_and_nothing_is_added(node: BrokerNode) -> None:
    pid, epoch = begin(node, "u", 0)
    assert add(node, "u", pid, epoch, 1, 9) == {1: ErrorCode.operation_not_attempted,
                                                9: ErrorCode.unknown_topic_or_partition}
    assert [t.partitions for t in describe(node, "u").topics] == [(0,)]


def test_add_offsets_to_txn_adds_the_groups_offsets_partition(node: BrokerNode) -> None:
    pid, epoch = begin(node, "o", 0)
    r = call(node, ADD_OFFSETS, 3, transactional_id="o", producer_id=pid, producer_epoch=epoch, group_id="grp")
    assert r.error_code == ErrorCode.none
    topics = {t.topic: t.partitions for t in describe(node, "o").topics}
    assert topics == {TOPIC: (0,), OFFSETS_TOPIC: (partition_for("grp", 50),)}  # the configured count


def test_add_partitions_v4_verify_only_adds_nothing(node: BrokerNode) -> None:
    pid, epoch = begin(node, "v", 0)
    m = importlib.import_module("kio.schema.add_partitions_to_txn.v4.request")
    r = call(node, ADD_PARTITIONS, 4, transactions=(
        m.AddPartitionsToTxnTransaction(transactional_id="v", producer_id=pid, producer_epoch=epoch,
                                        verify_only=True,
                                        topics=(m.AddPartitionsToTxnTopic(name=TOPIC, partitions=(0, 1)),)),
        m.AddPartitionsToTxnTransaction(transactional_id="v", producer_id=pid, producer_epoch=epoch - 1,
                                        verify_only=True,
                                        topics=(m.AddPartitionsToTxnTopic(name=TOPIC, partitions=(0,)),)),
    ))
    assert r.error_code == ErrorCode.none
    got = [{(t.name, int(p.partition_index)): ErrorCode(p.partition_error_code)
            for t in txn.topic_results for p in t.results_by_partition} for txn in r.results_by_transaction]
    assert got == [{(TOPIC, 0): ErrorCode.none, (TOPIC, 1): ErrorCode.invalid_txn_state},
                   {(TOPIC, 0): ErrorCode.producer_fenced}]
    assert [t.partitions for t in describe(node, "v").topics] == [(0,)]


def test_a_transactional_batch_to_a_partition_outside_the_transaction_is_refused(node: BrokerNode) -> None:
    pid, epoch = begin(node, "p", 0)
    leo = node.partition(TOPIC, 1).log_end_offset
    assert produce(node, "p", pid, epoch, 0, 1, b"x") != ErrorCode.none
    assert node.partition(TOPIC, 1).log_end_offset == leo


def test_a_timed_out_transaction_is_aborted_and_its_producer_fenced(node: BrokerNode) -> None:
    find(node, "late")
    r = init(node, "late", timeout_ms=1_000)
    pid, epoch = int(r.producer_id), int(r.producer_epoch)
    assert set(add(node, "late", pid, epoch, 0).values()) == {ErrorCode.none}
    assert produce(node, "late", pid, epoch, 0, 0, b"x") == ErrorCode.none
    p0 = node.partition(TOPIC, 0)
    assert p0.last_stable_offset == 0
    later = NOW_MS + 11_000  # past the timeout, at the coordinator's next check
    node.tick(later)
    assert markers(node, 0) == [(ControlType.ABORT, pid, epoch + 1)]
    assert p0.last_stable_offset == p0.high_watermark == 2
    assert describe(node, "late").transaction_state == "CompleteAbort"
    assert end(node, "late", pid, epoch, True) == ErrorCode.producer_fenced


def test_list_and_describe_transactions(node: BrokerNode) -> None:
    pid, _ = begin(node, "l1", 0)
    begin(node, "l2", 1)
    r = call(node, LIST_TXNS, 1, state_filters=(), producer_id_filters=(), duration_filter=-1)
    assert [(t.transactional_id, t.transaction_state) for t in r.transaction_states] == [
        ("l1", "Ongoing"), ("l2", "Ongoing")]
    r = call(node, LIST_TXNS, 0, state_filters=("Ongoing", "Nope"), producer_id_filters=(pid,))
    assert r.unknown_state_filters == ("Nope",)
    assert [t.transactional_id for t in r.transaction_states] == ["l1"]
    r = call(node, LIST_TXNS, 1, state_filters=(), producer_id_filters=(), duration_filter=60_000)
    assert r.transaction_states == ()
    missing = describe(node, "nobody")
    assert missing.error_code == ErrorCode.transactional_id_not_found
    d = describe(node, "l1")
    assert d.transaction_timeout == datetime.timedelta(seconds=60)
    assert d.transaction_start_time == datetime.datetime.fromtimestamp(NOW_MS / 1000, datetime.UTC)
    assert [(t.topic, t.partitions) for t in d.topics] == [(TOPIC, (0,))]


def test_state_survives_a_restart(tmp_path: Path) -> None:
    node = small_node(tmp_path / "data")
    node.create_topic(TOPIC, 2, {}, NOW_MS)
    pid, epoch = begin(node, "r", 0, 1)
    node.close()
    again = small_node(tmp_path / "data")
    try:
        assert describe(again, "r").transaction_state == "Ongoing"
        assert end(again, "r", pid, epoch, True) == ErrorCode.none
        assert markers(again, 0) == [(ControlType.COMMIT, pid, epoch)]
        assert init(again, "r").producer_epoch == epoch + 1
    finally:
        again.close()


def test_state_records_are_kafkas(node: BrokerNode) -> None:
    from ackly.coordinator.txn_records import decode_key, decode_value

    begin(node, "rec", 1)
    index = partition_for("rec", 5)
    records = [(decode_key(r.key), decode_value(r.value).status)
               for _h, recs in batches(node, index, TRANSACTION_STATE_TOPIC) for r in recs]
    assert records == [("rec", 0), ("rec", 1)]  # Empty (InitProducerId), Ongoing (AddPartitions)
    assert TopicPartition(TOPIC, 1) in decode_value(
        batches(node, index, TRANSACTION_STATE_TOPIC)[-1][1][0].value).partitions
