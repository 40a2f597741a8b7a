"""Seeded cluster histories with transactions (src/ackly/sim/txn_clients.py): transactional
producers (commit, abort, crash, fencing) and read_committed consumers, beside the usual
producers and read_uncommitted consumers, under the same swarm faults.

- `test_txn_smoke_seed`: two short histories, with every `make fast`.
- `test_txn_ci_seed` (slow): TXN_CI_SEEDS histories of TXN_CI_STEPS events (about 1.5 s each
  on one core): the per-event invariants, the read_committed checks as reads arrive (no read
  at or above the response's LSO, none of a transaction whose commit was not sent), LSO = HW
  after healing (no hanging transaction), then the transaction history checks.
- `test_txn_regression_seed`: every seed that once failed, with what it found (those failing
  on an open core bug are expected failures, run with the slow seeds).
- `test_txn_v2_smoke_seed`: histories whose producers speak transaction version 2 (KIP-890
  part 2) and send some EndTxn again late, after the next transaction began: fenced, and one
  producer epoch per transaction in the final logs.
- the checkers are not vacuous: a consumer that ignores the aborted-transactions list, or one
  that asks for read_uncommitted while checked as read_committed, is caught; and a synthetic
  history with each kind of broken transaction is reported.
A failure prints the one-line reproduction: `ackly sim --seed N --steps M --transactions`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from click.testing import CliRunner

from ackly.cli.main import cli
from ackly.protocol.record_codec import ControlType, Record, encode_batch, encode_control_batch
from ackly.sim.cluster import run_seed
from ackly.sim.invariants import LogRecord
from ackly.sim.txn_clients import ABORTED, COMMITTED, UNKNOWN, IsolatedConsumer, TxnBatch, TxnHistory
from ackly.sim.txn_invariants import check_transactions, marker_outcomes, transaction_epochs
from ackly.types import TopicPartition
from tests.sim.test_seeds import assert_ok, expected_failure

TXN_SMOKE_SEEDS = (4, 2_005)
TXN_SMOKE_STEPS = 4_000
# Transaction version 2, with delayed EndTxn copies (seeds whose histories send several).
TXN_V2_SMOKE_SEEDS = (2_005, 11)
# Transaction version 2 seeds that once failed: (seed, steps, finding).
TXN_V2_REGRESSION_SEEDS: list[tuple[int, int, str]] = [
    (2_006, 6_000, "INVALID_TXN_STATE to a version 2 Produce: twin instances of one transactional id "
                   "produced to one partition, and the fenced one's request (older epoch) replaced the "
                   "partition's verification guard of the newer epoch while its implicit add was in flight "
                   "(fixed: an older epoch never displaces a newer epoch's guard)"),
]
# 40 histories of 6,000 events: about 1.5 minutes on one core. A transactional history runs
# more events per virtual second (coordinator writes, markers), so it needs more than CI_STEPS.
TXN_CI_SEEDS = range(2_000, 2_040)
TXN_CI_STEPS = 6_000

# Core bugs still open, by name; a seed that fails on one is an expected failure (xfail, not
# strict: a history drifts as the core changes) until the bug is fixed. Then set the seed's
# entry to None and delete the bug here.
TXN_OPEN_BUGS: dict[str, str] = {}

# CI seeds that fail on an open bug, with the bug's name.
TXN_OPEN_CI_SEEDS: dict[int, str] = {}

# Every seed that ever failed, with what it found: (seed, steps, brokers, finding, open bug or
# None).
TXN_REGRESSION_SEEDS: list[tuple[int, int, int, str, str | None]] = [
    (5, 8_000, 3, "simulator bug: the read_committed consumer took in the aborted-transactions list only "
               "at transactional data batches, so an ABORT marker with no data before it (pid P, first "
               "offset 38) left P in the aborted set and a later committed transaction of P (offset "
               "46) was dropped: a torn transaction (fixed: every batch with a producer id takes the "
               "list in first, as Kafka's CompletedFetch does)", None),
    (3_001, 10_000, 3, "commit undone (found by an earlier version of the producer; the seed now runs "
                    "another history): tp1's transaction 8 was answered COMMITTED but its records on "
                    "sim-0 (123-125) were aborted by the ABORT of transaction 9 (133): its Ongoing write "
                    "was refused (ISR 1 < min ISR 2), the retried AddPartitionsToTxn answered NONE from "
                    "memory, EndTxn's PrepareCommit was refused too and reloaded the shard to the previous "
                    "transaction's CompleteCommit in the same epoch, so the retried EndTxn(commit) was "
                    "answered NONE as a retry of that one and no marker was ever written (fixed: a "
                    "refused coordinator write reverts the shard to its log)", None),
    (3_007, 10_000, 3, "forgotten partition: AddPartitionsToTxn(sim-0) answered NONE from memory after the "
                    "Ongoing write was refused; the coordinator, reloaded from its log, then answered the "
                    "produce's KIP-890 verification INVALID_TXN_STATE (fixed: a refused coordinator "
                    "write reverts the shard to its log)", None),
    (3_036, 10_000, 3, "forgotten partition, as seed 3007 (fixed with it)", None),
    (6_053, 12_000, 3, "forgotten partition, in the liveness phase (fixed with seed 3007)", None),
    (9_085, 8_000, 3, "hanging transaction (rule 22): sim-1's LSO stayed at 242 < HW 376 for the whole "
                      "liveness phase: tp0's transaction 7 (epoch 0) holds offset 242, its EndTxn(commit) "
                      "answer was lost and the retry answered INVALID_TXN_STATE; the coordinator, whose "
                      "state had lost the transaction, later bumped the id to epoch 1 (Empty) without "
                      "aborting it, and nothing ever ends it (fixed with seed 3007)", None),
    (8_208, 6_000, 2, "livelock: 5,000 events at 4,060 ms, 'flush b1' again and again; each round "
                      "appended one more marker to sim-0 (LEO 96, 97, 98, ...) while the Complete record "
                      "of __transaction_state-3 (ISR 1 < min ISR 2) was refused and the shard reloaded (fixed: the "
                      "marker channel keeps the decision until its Complete record is committed and "
                      "retries that record alone after a backoff)", None),
    (8_314, 6_000, 2, "livelock, as seed 8208 (fixed with it)", None),
    (8_318, 6_000, 2, "livelock, as seed 8208 (fixed with it)", None),
]


@pytest.mark.parametrize("seed", TXN_SMOKE_SEEDS)
def test_txn_smoke_seed(seed: int) -> None:
    result = run_seed(seed, steps=TXN_SMOKE_STEPS, transactions=True)
    assert_ok(result)
    assert result.stats["transactions"]["committed"] > 0, result.stats
    assert result.stats["committed_reads"] > 0, result.stats


@pytest.mark.parametrize("seed", TXN_V2_SMOKE_SEEDS)
def test_txn_v2_smoke_seed(seed: int) -> None:
    result = run_seed(seed, steps=TXN_SMOKE_STEPS, transactions=True, transaction_version=2)
    assert_ok(result)
    stats = result.stats
    assert stats["transactions"]["committed"] > 0, stats
    assert stats["delayed_ends"] > 0 and stats["delayed_ends_fenced"] > 0, stats
    assert "--transaction-version 2" in result.reproduction


@pytest.mark.parametrize(("seed", "steps", "found"), [
    pytest.param(seed, steps, found, id=f"seed{seed}") for seed, steps, found in TXN_V2_REGRESSION_SEEDS])
def test_txn_v2_regression_seed(seed: int, steps: int, found: str) -> None:
    assert_ok(run_seed(seed, steps=steps, transactions=True, transaction_version=2))


def test_a_coordinator_that_takes_a_delayed_end_txn_for_the_next_one_is_caught(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The hole version 2 closes: a coordinator that takes an EndTxn of the epoch before as
    one of the open transaction ends that transaction with the late request's outcome."""
    from ackly.coordinator.transaction_metadata import TxnState
    from ackly.coordinator.transaction_state import TransactionShard

    original = TransactionShard._end_v2

    def sloppy(self: TransactionShard, transactional_id: str, producer_id: int, producer_epoch: int,
               *rest: Any) -> None:
        meta = self.txns.get(transactional_id)
        if meta is not None and meta.state == TxnState.ONGOING and producer_epoch == meta.producer_epoch - 1:
            producer_epoch = meta.producer_epoch  # the bug: the old epoch taken for the current one
        original(self, transactional_id, producer_id, producer_epoch, *rest)

    monkeypatch.setattr(TransactionShard, "_end_v2", sloppy)
    result = run_seed(TXN_V2_SMOKE_SEEDS[0], steps=TXN_SMOKE_STEPS, transactions=True, transaction_version=2)
    assert not result.ok and result.failure is not None, result.stats
    assert "delayed EndTxn" in result.failure and "not PRODUCER_FENCED" in result.failure, result.failure


def test_one_producer_epoch_per_transaction_is_checked() -> None:
    """`transaction_epochs`: the batches one marker ends on a partition carry one epoch, and a
    transaction's records one (producer id, epoch) across its partitions."""
    def data(pid: int, epoch: int, *values: bytes) -> bytes:
        return encode_batch([Record(key=None, value=v) for v in values], producer_id=pid, producer_epoch=epoch,
                            base_sequence=0, transactional=True)

    def marker(pid: int, epoch: int) -> bytes:
        return encode_control_batch(ControlType.COMMIT, producer_id=pid, producer_epoch=epoch)

    epochs, mixed = transaction_epochs([data(1, 0, b"a"), marker(1, 1), data(1, 1, b"b"), marker(1, 2)])
    assert epochs == {b"a": (1, 0), b"b": (1, 1)} and mixed == []
    # A batch of an old epoch (a delayed produce) inside the next transaction's run.
    _, mixed = transaction_epochs([data(1, 0, b"a"), marker(1, 1), data(1, 1, b"b"), data(1, 0, b"late")], "sim-0")
    assert len(mixed) == 1 and mixed[0].startswith("one producer epoch per transaction: sim-0"), mixed
    # Across partitions: transaction 0 of the history written in two epochs.
    txns, logs = _history()
    written = {b"c0": (7, 0), b"c1": (7, 1), b"v1": (7, 0), b"v2": (7, 0)}
    problems = check_transactions(txns, logs, [], durable=True, epochs=written)
    assert len(problems) == 1 and problems[0].startswith("one producer epoch per transaction"), problems


@pytest.mark.slow
@pytest.mark.parametrize(
    "seed", [pytest.param(seed, marks=expected_failure(TXN_OPEN_CI_SEEDS.get(seed), TXN_OPEN_BUGS))
             for seed in TXN_CI_SEEDS]
)
def test_txn_ci_seed(seed: int) -> None:
    assert_ok(run_seed(seed, steps=TXN_CI_STEPS, transactions=True))


@pytest.mark.parametrize(("seed", "steps", "brokers", "found"), [
    # A seed that fails on an open bug runs with the slow seeds only (it may run to its end).
    pytest.param(seed, steps, brokers, found, id=f"seed{seed}", marks=expected_failure(bug, TXN_OPEN_BUGS, slow=True))
    for seed, steps, brokers, found, bug in TXN_REGRESSION_SEEDS
])
def test_txn_regression_seed(seed: int, steps: int, brokers: int, found: str) -> None:
    assert_ok(run_seed(seed, steps=steps, brokers=brokers, transactions=True))


def test_a_txn_seed_replays_exactly() -> None:
    first = run_seed(4, steps=2_000, transactions=True)
    second = run_seed(4, steps=2_000, transactions=True)
    assert (first.trace_hash, first.events, first.stats) == (second.trace_hash, second.events, second.stats)
    assert "--transactions" in first.reproduction


def test_a_txn_seed_replays_exactly_under_another_hash_seed() -> None:
    """The coordinator's partitions, markers and decisions must not depend on the order of a
    set of strings either (CI runs with a random PYTHONHASHSEED)."""
    hashes = []
    for hash_seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-m", "ackly", "sim", "--seed", "4", "--steps", "1500", "--transactions", "--json"],
            capture_output=True, text=True, timeout=120, check=False,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
        )
        assert out.stdout, out.stderr
        hashes.append(json.loads(out.stdout.splitlines()[0])["trace_hash"])
    assert hashes[0] == hashes[1]


def test_transactions_leave_other_seeds_alone() -> None:
    """A seed without transactions runs the history it always ran: the transactional clients
    draw from a PRNG forked last, and only when asked for."""
    plain = run_seed(3, steps=300)
    assert "transactions" not in plain.stats
    assert run_seed(3, steps=300, transactions=True).trace_hash != plain.trace_hash


def test_a_consumer_that_ignores_the_aborted_list_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(IsolatedConsumer, "apply_aborted_list", False)
    for seed in range(4, 12):
        result = run_seed(seed, steps=TXN_SMOKE_STEPS, transactions=True)
        if not result.ok:
            assert result.failure is not None and "aborted read" in result.failure, result.failure
            return
    pytest.fail("no seed caught a read_committed consumer returning aborted records")


def test_a_consumer_reading_uncommitted_data_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(IsolatedConsumer, "fetch_isolation_level", 0)
    for seed in range(4, 12):
        result = run_seed(seed, steps=TXN_SMOKE_STEPS, transactions=True)
        if not result.ok:
            assert result.failure is not None, result
            assert any(c in result.failure for c in ("early read", "aborted read")), result.failure
            return
    pytest.fail("no seed caught a read_committed consumer reading uncommitted data")


def _history() -> tuple[TxnHistory, dict[TopicPartition, list[LogRecord]]]:
    """Three transactions on sim-0: 0 committed (offsets 0-1), 1 aborted (2), 2 unknown (3)."""
    tp = TopicPartition("sim", 0)
    txns = TxnHistory()
    for i, outcome in enumerate((COMMITTED, ABORTED, UNKNOWN)):
        txn = txns.new_txn(producer="tp0", transactional_id="txn-tp0", producer_id=7, producer_epoch=0,
                           partitions=(0,), commit=outcome != ABORTED)
        values = (b"c0", b"c1") if i == 0 else (f"v{i}".encode(),)
        txn.batches.append(TxnBatch(tp, values, sequence=0))
        txn.outcome = outcome
        txn.commit_sent_ms = 1 if outcome != ABORTED else None
        for v in values:
            txns.by_value[v] = txn
    log = [LogRecord(0, b"c0", 0), LogRecord(1, b"c1", 0), LogRecord(2, b"v1", 2), LogRecord(3, b"v2", 3)]
    return txns, {tp: log}


class _Reader:
    def __init__(self, position: int, values: set[bytes]) -> None:
        self.name = "rc0"
        self.positions = {0: position}
        self.read_values = {0: values}


def test_the_history_checks_report_each_broken_transaction() -> None:
    tp = TopicPartition("sim", 0)
    txns, logs = _history()
    ok_reader = _Reader(5, {b"c0", b"c1"})
    assert check_transactions(txns, logs, [ok_reader], durable=True) == []

    txns, logs = _history()
    txns.committed_reads.append(("rc0", tp, 2, b"v1", 10))
    problems = check_transactions(txns, logs, [ok_reader], durable=True)
    assert len(problems) == 1 and problems[0].startswith("aborted read"), problems

    txns, logs = _history()
    torn = _Reader(5, {b"c1"})
    problems = check_transactions(txns, logs, [torn], durable=True)
    assert len(problems) == 1 and problems[0].startswith("torn transaction"), problems

    txns, logs = _history()
    logs[tp] = [r for r in logs[tp] if r.value != b"c1"]
    problems = check_transactions(txns, logs, [], durable=True)
    assert len(problems) == 1 and problems[0].startswith("lost commit"), problems

    txns, logs = _history()
    logs[tp].append(LogRecord(4, b"c0", 4))
    problems = check_transactions(txns, logs, [], durable=True)
    assert len(problems) == 1 and problems[0].startswith("duplicate"), problems

    # An unknown outcome that a read_committed consumer saw is held to the committed rules.
    txns, logs = _history()
    txns.committed_reads.append(("rc0", tp, 3, b"v2", 10))
    logs[tp] = [r for r in logs[tp] if r.value != b"v2"]
    problems = check_transactions(txns, logs, [], durable=True)
    assert len(problems) == 1 and problems[0].startswith("lost commit"), problems


def test_markers_decide_what_each_record_became() -> None:
    """`marker_outcomes` reads a partition as a consumer's producer state would: a marker ends
    every open record of its producer id; a record with no marker yet is open."""
    def data(pid: int, *values: bytes) -> bytes:
        return encode_batch([Record(key=None, value=v) for v in values], producer_id=pid, producer_epoch=0,
                            base_sequence=0, transactional=True)

    def marker(kind: ControlType, pid: int) -> bytes:
        return encode_control_batch(kind, producer_id=pid, producer_epoch=0)

    plain = encode_batch([Record(key=None, value=b"plain")])
    outcomes = marker_outcomes([
        data(1, b"a1", b"a2"), data(2, b"b1"), plain, marker(ControlType.ABORT, 2), data(1, b"a3"),
        marker(ControlType.COMMIT, 1), data(2, b"b2"),
    ])
    assert outcomes == {b"a1": "COMMIT", b"a2": "COMMIT", b"a3": "COMMIT", b"b1": "ABORT", b"b2": "open"}

    # A committed transaction ended by an ABORT (its records merged into a later, aborted
    # transaction of the same producer) is reported, and so is an aborted one ended by a COMMIT.
    tp = TopicPartition("sim", 0)
    txns, logs = _history()
    markers = {tp: {b"c0": "ABORT", b"c1": "ABORT", b"v1": "COMMIT", b"v2": "COMMIT"}}
    problems = check_transactions(txns, logs, [], durable=True, markers=markers)
    assert [p.split(":")[0] for p in problems] == ["commit undone", "abort undone"], problems


def test_the_cli_runs_a_transactional_seed() -> None:
    result = CliRunner().invoke(cli, ["sim", "--seed", "4", "--steps", "1500", "--transactions"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("seed 4: ok;") and "transactions {" in result.output
