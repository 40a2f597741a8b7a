"""Transactions driven by hand over TCP against an in-process broker (kio requests: FindCoordinator
key type 1, InitProducerId, AddPartitionsToTxn, Produce, EndTxn), read back with ListOffsets
read_committed, and the `ackly transactions` command listing what is open or hanging."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ackly.cli.transactions import collect, transactions
from ackly.errors import ErrorCode
from ackly.protocol.messages import build_request
from ackly.protocol.record_codec import Record, encode_batch
from ackly.testing.inprocess import InProcessBroker
from ackly.testing.wire import WireClient
from tests.integration import wire_requests as wr

TOPIC = "txn-wire"
TXN = "wire-txn"


def request(api_key: int, version: int, **fields: Any) -> Any:
    return build_request(api_key, version, fields)


def find_coordinator(client: WireClient, txn: str) -> Any:
    deadline = time.monotonic() + 10
    while True:
        answer = client.request(request(10, 3, key=txn, key_type=1))
        if answer.error_code == ErrorCode.none or time.monotonic() > deadline:
            return answer
        time.sleep(0.05)  # the coordinator's partition is being created (a retriable answer)


def txn_produce(client: WireClient, txn: str | None, pid: int, epoch: int, seq: int, partition: int,
                *values: bytes) -> ErrorCode:
    now_ms = int(time.time() * 1000)  # DescribeProducers' last timestamp is the batch's
    batch = encode_batch([Record(key=None, value=v, timestamp_ms=now_ms) for v in values], producer_id=pid,
                         producer_epoch=epoch, base_sequence=seq, transactional=True)
    req = wr.produce(TOPIC, batch, acks=-1, partition=partition)
    req = type(req)(transactional_id=txn, acks=req.acks, timeout=req.timeout, topic_data=req.topic_data)
    answer = client.request(req)
    return ErrorCode(answer.responses[0].partition_responses[0].error_code)


def last_stable_offset(client: WireClient, partition: int) -> int:
    answer = client.request(request(2, 7, replica_id=-1, isolation_level=1, topics=[{
        "name": TOPIC, "partitions": [{"partition_index": partition, "current_leader_epoch": -1,
                                       "timestamp": -1}]}]))
    return int(answer.topics[0].partitions[0].offset)


def begin(client: WireClient, txn: str, *partitions: int) -> tuple[int, int]:
    assert find_coordinator(client, txn).error_code == ErrorCode.none
    init = client.request(request(22, 4, transactional_id=txn, transaction_timeout=60_000,
                                  producer_id=-1, producer_epoch=-1))
    assert init.error_code == ErrorCode.none
    pid, epoch = int(init.producer_id), int(init.producer_epoch)
    added = client.request(request(24, 3, v3_and_below_transactional_id=txn, v3_and_below_producer_id=pid,
                                   v3_and_below_producer_epoch=epoch,
                                   v3_and_below_topics=[{"name": TOPIC, "partitions": list(partitions)}]))
    assert {p.partition_error_code for t in added.results_by_topic_v3_and_below
            for p in t.results_by_partition} == {ErrorCode.none}
    return pid, epoch


@pytest.fixture
def no_verification(tmp_path: Path) -> Iterator[InProcessBroker]:
    """A broker that appends transactional batches without asking the coordinator (KIP-890
    verification off), so a test can leave a transaction no coordinator knows."""
    broker = InProcessBroker(str(tmp_path / "nv"), {"transaction.partition.verification.enable": "false"}).start()
    try:
        yield broker
    finally:
        broker.stop()


def test_a_transaction_by_hand_and_the_transactions_command(ackly_broker: InProcessBroker) -> None:
    with WireClient(ackly_broker.bootstrap) as client:
        assert client.request(wr.create_topic(TOPIC, 2)).topics[0].error_code == ErrorCode.none
        pid, epoch = begin(client, TXN, 0, 1)
        assert txn_produce(client, TXN, pid, epoch, 0, 0, b"a", b"b") == ErrorCode.none
        assert txn_produce(client, TXN, pid, epoch, 0, 1, b"c") == ErrorCode.none
        assert last_stable_offset(client, 0) == 0

        report = collect(ackly_broker.bootstrap, hanging=True)
        [txn] = report.open
        assert (txn.transactional_id, txn.producer_id, txn.state) == (TXN, pid, "Ongoing")
        assert sorted(txn.partitions) == [(TOPIC, 0), (TOPIC, 1)]
        assert report.hanging == [] and report.unreachable == []
        out = CliRunner().invoke(transactions, ["--bootstrap", ackly_broker.bootstrap, "--hanging"])
        assert out.exit_code == 0, out.output
        assert TXN in out.output and "Ongoing" in out.output and "hanging transactions: 0" in out.output
        # The same producer, seen long after: older than the largest timeout, hence hanging.
        late = collect(ackly_broker.bootstrap, hanging=True, max_timeout_ms=1_000,
                       now_ms=int(time.time() * 1000) + 60_000)
        assert {(h.partition, h.producer_id) for h in late.hanging} == {(0, pid), (1, pid)}

        end = client.request(request(26, 3, transactional_id=TXN, producer_id=pid, producer_epoch=epoch,
                                     committed=True))
        assert end.error_code == ErrorCode.none
        deadline = time.monotonic() + 10
        while last_stable_offset(client, 0) != 3 and time.monotonic() < deadline:
            time.sleep(0.02)  # the markers follow the answer
        assert last_stable_offset(client, 0) == 3 and last_stable_offset(client, 1) == 2
        assert collect(ackly_broker.bootstrap).open == []


def test_a_transaction_no_coordinator_knows_is_hanging(no_verification: InProcessBroker) -> None:
    with WireClient(no_verification.bootstrap) as client:
        assert client.request(wr.create_topic(TOPIC, 1)).topics[0].error_code == ErrorCode.none
        assert find_coordinator(client, "someone").error_code == ErrorCode.none
        stray_pid = 424_242
        assert txn_produce(client, None, stray_pid, 0, 0, 0, b"stray") == ErrorCode.none
        report = collect(no_verification.bootstrap, hanging=True)
        assert report.open == []
        [hanging] = report.hanging
        assert (hanging.topic, hanging.partition, hanging.producer_id, hanging.start_offset) == (
            TOPIC, 0, stray_pid, 0)
        assert "no coordinator" in hanging.reason
        out = CliRunner().invoke(transactions, ["--bootstrap", no_verification.bootstrap, "--hanging"])
        assert out.exit_code == 2 and "hanging transactions: 1" in out.output
