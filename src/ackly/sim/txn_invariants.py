"""What must hold for transactions at the end of a simulated history (KIP-98; docs/guarantees.md's
transaction rules), after the liveness phase healed everything and the cluster converged.

Owns `check_transactions`, `marker_outcomes` and `transaction_epochs`. Any answer the producer has no rule for is a
problem too ("unexpected answer"). Checked as things happen (sim/txn_clients.py):
no read_committed record at or above the LSO its response states, none of a transaction whose
EndTxn(commit) had not been sent, none of one known aborted (rule 20: early read, aborted
read); no INVALID_TXN_STATE to a produce on a partition AddPartitionsToTxn acknowledged in an
epoch not fenced since (rule 18: a coordinator forgot committed state). Checked here, on the
final logs of the partition leaders and the whole history:
- no aborted read (rule 20): no read_committed consumer ever returned a record of an aborted
  transaction (or of one never asked to commit);
- outcomes as told (rules 18, 19, 23): in each final log, a committed transaction's records are
  ended by COMMIT markers only, and an aborted one's never by a COMMIT (`marker_outcomes`; a
  marker ends every open record of its producer id on the partition);
- exactly once: every record of a committed transaction is in the final log once (where the
  configuration promises durability for acknowledged writes), and no transaction's record is
  there twice (its retries are idempotent);
- no torn transaction (rule 20): a read_committed consumer that read past a committed transaction's
  last record on one of its partitions read every record of it there;
- one producer epoch per transaction (KIP-890 part 2): every record of a transaction in the
  final logs was written in one (producer id, epoch), and on each partition the data batches a
  marker ends all carry one epoch (`transaction_epochs`): a produce delayed from an earlier
  epoch never joined a later transaction, nor a later epoch's data an earlier one's;
- every partition's LSO reached its HW (rule 22, checked as part of convergence, sim/cluster.py): no
  transaction was left hanging, the coordinator's timeout aborted what a crashed producer
  left open.
A transaction whose outcome is unknown (EndTxn(commit) sent, the answer lost) may be either;
once a read_committed consumer has read one of its records it is held to the committed rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from ackly.protocol.record_codec import decode_batch, decode_control_record
from ackly.sim.invariants import LogRecord
from ackly.sim.txn_clients import ABORTED, COMMITTED, UNKNOWN, Txn, TxnHistory
from ackly.types import TopicPartition

Offsets = dict[tuple[TopicPartition, bytes], list[int]]


class CommittedReader(Protocol):
    """What the torn-transaction check needs of a read_committed consumer."""

    name: str
    positions: dict[int, int]
    read_values: dict[int, set[bytes]]


def _offsets(leader_logs: Mapping[TopicPartition, Sequence[LogRecord]]) -> Offsets:
    where: Offsets = {}
    for tp, records in leader_logs.items():
        for r in records:
            if r.value is not None:
                where.setdefault((tp, r.value), []).append(r.offset)
    return where


def marker_outcomes(batches: Iterable[bytes]) -> dict[bytes, str]:
    """For every record of a transactional batch in a partition's log (batches in log order),
    the marker that ended its transaction there: "COMMIT", "ABORT", or "open" for none yet."""
    out: dict[bytes, str] = {}
    pending: dict[int, list[bytes]] = {}
    for data in batches:
        header, records = decode_batch(data)
        if not header.is_transactional:
            continue
        if header.is_control:
            kind = decode_control_record(records[0]).kind.name
            for value in pending.pop(header.producer_id, []):
                out[value] = kind
        else:
            values = [r.value for r in records if r.value is not None]
            pending.setdefault(header.producer_id, []).extend(values)
            out.update(dict.fromkeys(values, "open"))
    return out


def transaction_epochs(batches: Iterable[bytes], where: str = "") -> tuple[dict[bytes, tuple[int, int]], list[str]]:
    """For every record of a transactional batch in a partition's log (batches in log order),
    its (producer id, epoch); and a problem for each run of one producer's data batches up to
    its marker (one transaction there) that mixes epochs."""
    epochs: dict[bytes, tuple[int, int]] = {}
    problems: list[str] = []
    open_epochs: dict[int, tuple[int, int]] = {}  # producer id -> (epoch, first offset)
    for data in batches:
        header, records = decode_batch(data)
        if not header.is_transactional:
            continue
        pid = header.producer_id
        if header.is_control:
            open_epochs.pop(pid, None)
            continue
        first = open_epochs.setdefault(pid, (header.producer_epoch, header.base_offset))
        if first[0] != header.producer_epoch:
            problems.append(
                f"one producer epoch per transaction: {where} producer {pid}'s open transaction from offset "
                f"{first[1]} (epoch {first[0]}) took a batch of epoch {header.producer_epoch} at "
                f"{header.base_offset}")
        for r in records:
            if r.value is not None:
                epochs[r.value] = (pid, header.producer_epoch)
    return epochs, problems


def _describe(txn: Txn) -> str:
    return (f"transaction {txn.txn_id} of {txn.producer} (pid {txn.producer_id} epoch {txn.producer_epoch}, "
            f"{txn.outcome}: {txn.how}; EndTxn attempts {txn.end_attempts})")


def check_transactions(
    txns: TxnHistory, leader_logs: Mapping[TopicPartition, Sequence[LogRecord]],
    consumers: Sequence[CommittedReader], *, durable: bool,
    markers: Mapping[TopicPartition, Mapping[bytes, str]] | None = None,
    epochs: Mapping[bytes, tuple[int, int]] | None = None,
) -> list[str]:
    """The end-of-run transaction checks; returns the problems found (empty: none)."""
    txns.settle()
    # A code the producer has no rule for is a broker answer no Kafka client expects there.
    problems: list[str] = [f"unexpected answer: {what}" for what in txns.surprises]
    where = _offsets(leader_logs)
    read_txns: set[int] = set()  # transactions a read_committed consumer returned a record of
    for reader, tp, offset, value, _ms in txns.committed_reads:
        txn = txns.by_value.get(value) if value is not None else None
        if txn is None:
            continue
        read_txns.add(txn.txn_id)
        if txn.outcome == ABORTED:
            problems.append(f"aborted read: {reader} read {tp} offset {offset} ({value!r}) of {_describe(txn)}")
    for txn in txns.txns:
        committed = txn.outcome == COMMITTED or (txn.outcome == UNKNOWN and txn.txn_id in read_txns)
        found = {(tp, v): where.get((tp, v), []) for tp, v in txn.values()}
        twice = [(v.decode(), offs) for (_tp, v), offs in found.items() if len(offs) > 1]
        if twice:
            problems.append(f"duplicate: records of {_describe(txn)} are in the log more than once: {twice[:4]}")
        ended = sorted({markers.get(tp, {}).get(v, "absent") for tp, v in txn.values()} - {"absent"}) \
            if markers is not None else []
        if txn.outcome == COMMITTED and any(e != "COMMIT" for e in ended):
            problems.append(f"commit undone: {_describe(txn)} ended in the log by {ended}, not COMMIT alone")
        if txn.outcome == ABORTED and "COMMIT" in ended:
            problems.append(f"abort undone: {_describe(txn)} ended in the log by {ended}")
        written = sorted({epochs[v] for _tp, v in txn.values() if v in epochs}) if epochs is not None else []
        if len(written) > 1:
            problems.append(f"one producer epoch per transaction: {_describe(txn)} was written in {written}")
        if not committed:
            continue
        missing = [v.decode() for (_tp, v), offs in found.items() if not offs]
        if missing and durable:
            problems.append(f"lost commit: {_describe(txn)}: records missing from the final log: {missing[:6]}")
            continue
        problems += _torn(txn, found, consumers)
    return problems


def _torn(txn: Txn, found: Offsets, consumers: Sequence[CommittedReader]) -> list[str]:
    """A consumer past a committed transaction's last record on a partition read all of it there."""
    problems = []
    for tp in sorted({tp for tp, _v in found}):
        mine = [(v, offs[0]) for (t, v), offs in found.items() if t == tp and offs]
        if not mine:
            continue
        last = max(o for _v, o in mine)
        for consumer in consumers:
            position = consumer.positions.get(tp.partition, 0)
            if position <= last:
                continue
            seen = consumer.read_values.get(tp.partition, set())
            unread = [v.decode() for v, _o in mine if v not in seen]
            if unread:
                problems.append(
                    f"torn transaction: {consumer.name} read {tp} past offset {last} (position {position}) "
                    f"but not {unread[:4]} of {_describe(txn)}"
                )
    return problems
