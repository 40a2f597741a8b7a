"""What must hold in every simulated history, checked after every event and once at the end.

Owns the checkers; each raises `InvariantViolation` with the rule it saw broken.

After every event (docs/guarantees.md rules 2, 10, 11, 12; Kafka's Raft simulation checks the same
kinds of things):
- `MetadataObserver`, an independent store client watching every key from revision 1: every
  partition state written keeps its own invariants (ISR within replicas, leader in ISR), one
  leader per (partition, leader epoch) across the whole history, leader and partition epochs
  never fall, a leader change raises the leader epoch, and a newly elected leader was in the
  previous ISR (or, under KIP-966's rules, in the previous ELR when no member of the previous
  ISR stays in it) unless
  the topic allows unclean election. With eligible leader replicas on (`elr_enabled`): ISR,
  ELR and last known ELR are disjoint (decoding checks it); an ELR exists only while the ISR is
  below the topic's min.insync.replicas; and below it nobody who held the data is forgotten:
  every member of the previous ISR or ELR outside the new ISR is in the new ELR or, if it came
  back from an unclean shutdown, in the last known ELR. Without them no state has an ELR.
- `ReplicaChecker`, over every live broker's replicas: LSO <= HW <= LEO and log start <= HW;
  a replica's leader epoch never falls (within one process incarnation); at most one broker
  leads a partition in one leader epoch, ever; a leader's HW never falls within its epoch; and
  the committed prefixes agree: every batch below a replica's HW is byte for byte the batch
  any other replica had at that offset below its HW, and no replica truncates below what it
  once had below its HW (checked incrementally: each replica's new committed batches only).
  When the simulation runs the log cleaner, each replica of a compacted topic cleans its
  own copy, so there a batch keeps its offsets but may hold fewer records (or be gone): its
  last offset must agree, and every record must be the one any replica ever had there.

At the end (`check_history`, after the liveness phase healed everything and the cluster
converged): every acknowledged write whose configuration promises durability (acks=all, RF=3,
min ISR 2, flush.policy=always; or a single replica with flush.policy=always, rule 6) is in the
leader's log at the offset it was acknowledged with, exactly once for an idempotent producer;
a write refused on every attempt is absent; every record a consumer read is in the final log
at the offset it was read at (no reads of data that was later lost, rule 3); and each
follower's log is byte for byte the leader's.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ackly.cluster.controller import UNCLEAN_CONFIG
from ackly.cluster.memory_store import MemoryStore
from ackly.cluster.metadata import NO_LEADER, ClusterMetadata, KeyKind, PartitionState
from ackly.cluster.store import CommandResult, Watch, WatchEvent
from ackly.protocol.record_codec import decode_batch
from ackly.protocol.records import iter_batches
from ackly.sim.clients import History
from ackly.types import TopicPartition

OBSERVER_CLIENT = "sim-observer"


class InvariantViolation(AssertionError):
    pass


# --- the metadata history ----------------------------------------------------------------------


@dataclass
class MetadataObserver:
    store: MemoryStore
    metadata: ClusterMetadata = field(default_factory=ClusterMetadata)
    leaders: dict[tuple[TopicPartition, uuid.UUID, int], int] = field(default_factory=dict)
    # (tp, broker) -> the revision at which the broker last joined the partition's ISR
    isr_joined: dict[tuple[TopicPartition, int], int] = field(default_factory=dict)
    elections: int = 0
    elr_enabled: bool = False  # the brokers run with eligible.leader.replicas.enable
    elr_states: int = 0  # partition states written with a non-empty ELR
    min_isr_default: int = 1  # the brokers' min.insync.replicas

    def __post_init__(self) -> None:
        watch = Watch(request_id=1, prefix=self.metadata.keys.prefix, start_revision=1)
        self.store.submit(OBSERVER_CLIENT, watch)

    def poll(self) -> None:
        for item in self.store.drain(OBSERVER_CLIENT):
            if isinstance(item, WatchEvent):
                self._check(item)
                self.metadata = self.metadata.apply([item])
            elif isinstance(item, CommandResult):
                assert item.ok, f"the observer's watch was refused: {item}"
            else:
                raise InvariantViolation(f"the observer lost its watch: {item}")

    def _check(self, event: WatchEvent) -> None:
        parsed = self.metadata.keys.parse(event.key)
        if parsed is None or parsed.kind is not KeyKind.PARTITION or event.value is None:
            return
        tp = parsed.tp
        new = PartitionState.decode(event.value)  # decoding checks the state's own invariants
        before = self.metadata.partitions.get(tp)
        old = before if before is not None and before.topic_id == new.topic_id else None
        brokers = self.metadata.brokers  # as the store was just before this write

        def fail(why: str) -> None:
            raise InvariantViolation(
                f"metadata: {tp} at revision {event.mod_revision}: {why}\n  before {old}\n  after  {new}"
            )

        for b in new.isr:
            if old is None or b not in old.isr:
                self.isr_joined[(tp, b)] = event.mod_revision
        self._check_elr(tp, old, new, fail)
        key = (tp, new.topic_id, new.leader_epoch)
        if new.leader != NO_LEADER and self.leaders.setdefault(key, new.leader) != new.leader:
            fail(f"two leaders in leader epoch {new.leader_epoch}: {self.leaders[key]} and {new.leader}")
        if old is None:
            return
        if new.leader_epoch < old.leader_epoch or new.partition_epoch <= old.partition_epoch:
            fail("an epoch went backwards (or the partition epoch did not rise)")
        if new.leader != old.leader and new.leader_epoch <= old.leader_epoch:
            fail("the leader changed without a new leader epoch (rule 10)")
        if new.leader_epoch > old.leader_epoch and new.leader != NO_LEADER:
            self.elections += 1
            if new.leader not in brokers:
                fail(f"elected leader {new.leader} is not registered")
            topic = self.metadata.topics.get(tp.topic)
            unclean_allowed = topic is not None and topic.configs.get(UNCLEAN_CONFIG) == "true"
            # KIP-966: an ELR member may lead once no ISR member can (the new ISR keeps none
            # of the old one), in the same write that empties the old ISR.
            from_elr = self.elr_enabled and new.leader in old.elr and not set(old.isr) & set(new.isr)
            if new.leader not in old.isr and not from_elr and not unclean_allowed:
                fail(f"unclean election of {new.leader} with {UNCLEAN_CONFIG} off (rule 12)")

    def _min_isr(self, tp: TopicPartition, state: PartitionState) -> int:
        topic = self.metadata.topics.get(tp.topic)
        raw = None if topic is None else topic.configs.get("min.insync.replicas")
        return min(self.min_isr_default if raw is None else int(raw), len(state.replicas))

    def _check_elr(self, tp: TopicPartition, old: PartitionState | None, new: PartitionState,
                   fail: Callable[[str], None]) -> None:
        """KIP-966's rules on one partition state written (see the module docstring)."""
        if not self.elr_enabled:
            if new.elr or new.last_known_elr or not new.isr:
                fail("an ELR (or an empty ISR) without eligible.leader.replicas.enable")
            return
        if new.elr:
            self.elr_states += 1
        min_isr = self._min_isr(tp, new)
        if len(new.isr) >= min_isr:
            if new.elr or new.last_known_elr:
                fail(f"an ELR kept while the ISR is at min.insync.replicas {min_isr}")
            return
        if old is None:
            return
        held = (set(old.isr) | set(old.elr)) - set(new.isr)
        forgotten = held - set(new.elr) - set(new.last_known_elr)
        if forgotten:
            fail(f"replicas {sorted(forgotten)} left the ISR below min.insync.replicas {min_isr} "
                 "but are in neither the ELR nor the last known ELR")


# --- replicas on the brokers ----------------------------------------------------------------


def partitions_of(node: Any) -> list[Any]:
    return sorted(node.all_partitions(), key=lambda p: (p.tp.topic, p.tp.partition))


def is_leader(partition: Any) -> bool:
    return bool(partition.is_leader)


def read_batches(partition: Any, start: int, end: int) -> list[tuple[int, int, bytes]]:
    """(base offset, last offset, bytes) of the batches of `partition` from the one holding
    `start` that lie wholly below `end`."""
    out: list[tuple[int, int, bytes]] = []
    log = partition.log
    position = start
    while position < end:
        result = log.read(position, 1 << 22, end, min_one_batch=True)
        data = b"".join(log.read_bytes(r) for r in result.ranges)
        progressed = False
        for pos, header in iter_batches(data):
            if header.last_offset >= end:
                break
            if header.last_offset < position:
                continue
            out.append((header.base_offset, header.last_offset, data[pos : pos + header.size]))
            position = header.last_offset + 1
            progressed = True
        if not progressed:
            break
    return out


@dataclass
class ReplicaChecker:
    leaders: dict[tuple[TopicPartition, int], int] = field(default_factory=dict)
    leader_hw: dict[tuple[TopicPartition, int], int] = field(default_factory=dict)
    replica_epoch: dict[tuple[int, int, TopicPartition], int] = field(default_factory=dict)
    committed: dict[TopicPartition, dict[int, tuple[int, bytes]]] = field(default_factory=dict)
    committed_end: dict[TopicPartition, int] = field(default_factory=dict)
    # Compacted topics: offset -> (key, value) of every committed record seen on any replica.
    committed_records: dict[TopicPartition, dict[int, tuple[bytes | None, bytes | None]]] = field(
        default_factory=dict)
    verified: dict[tuple[int, int, TopicPartition], int] = field(default_factory=dict)
    checked_batches: int = 0
    # The simulation runs the log cleaner: compacted topics get the compacted form of the
    # committed-prefix check (otherwise they are checked byte for byte like any other).
    compaction: bool = False

    def check(self, broker_id: int, incarnation: int, node: Any) -> None:
        for p in partitions_of(node):
            self._check_replica(broker_id, incarnation, p)

    def _check_replica(self, broker_id: int, incarnation: int, p: Any) -> None:
        tp: TopicPartition = p.tp
        hw, lso, leo, start = p.high_watermark, p.last_stable_offset, p.log_end_offset, p.log_start_offset
        where = f"b{broker_id}.{incarnation} {tp}"
        if not (lso <= hw <= leo and start <= hw):
            raise InvariantViolation(
                f"{where}: LSO {lso} <= HW {hw} <= LEO {leo} and log start {start} <= HW broken (rule 2)"
            )
        epoch = int(p.leader_epoch)
        replica = (broker_id, incarnation, tp)
        if epoch < self.replica_epoch.get(replica, epoch):
            raise InvariantViolation(
                f"{where}: leader epoch fell from {self.replica_epoch[replica]} to {epoch}"
            )
        self.replica_epoch[replica] = epoch
        if is_leader(p) and epoch >= 0:
            owner = self.leaders.setdefault((tp, epoch), broker_id)
            if owner != broker_id:
                raise InvariantViolation(
                    f"{where}: leads in leader epoch {epoch}, which b{owner} led (rule 10)"
                )
            key = (tp, epoch)
            if hw < self.leader_hw.get(key, hw):
                raise InvariantViolation(
                    f"{where}: leader HW fell from {self.leader_hw[key]} to {hw} within leader epoch {epoch}"
                )
            self.leader_hw[key] = hw
        self._check_committed(where, replica, p, hw, leo, start)

    def _check_committed(self, where: str, replica: tuple[int, int, TopicPartition], p: Any,
                         hw: int, leo: int, start: int) -> None:
        tp = replica[2]
        verified = self.verified.get(replica, start)
        if leo < verified:
            raise InvariantViolation(
                f"{where}: truncated to {leo}, below {verified}, which it held below its HW (rule 11)"
            )
        if hw <= verified:
            return
        committed = self.committed.setdefault(tp, {})
        end = self.committed_end.get(tp, 0)
        compacted = self.compaction and "compact" in p.config.cleanup_policy
        for base, last, data in read_batches(p, verified, hw):
            self.checked_batches += 1
            known = committed.get(base)
            if compacted:
                self._check_compacted_records(where, tp, data)
            if known is not None:
                if (known[0] != last) if compacted else (known != (last, data)):
                    raise InvariantViolation(
                        f"{where}: committed batch at offset {base} differs from another replica's "
                        f"(offsets {base}..{last} vs {base}..{known[0]}; rule 11)"
                    )
            elif base < end:
                raise InvariantViolation(
                    f"{where}: batch boundary at {base} inside another replica's committed batch (rule 11)"
                )
            else:
                committed[base] = (last, data)
                end = last + 1
            verified = last + 1
        self.committed_end[tp] = end
        self.verified[replica] = verified

    def _check_compacted_records(self, where: str, tp: TopicPartition, data: bytes) -> None:
        _header, records = decode_batch(data)
        seen = self.committed_records.setdefault(tp, {})
        for r in records:
            record = (r.key, r.value)
            if seen.setdefault(r.offset, record) != record:
                raise InvariantViolation(
                    f"{where}: committed record at offset {r.offset} differs from the one another "
                    f"replica had there (compacted topic; rule 11)"
                )

    def forget_incarnation(self, broker_id: int, incarnation: int) -> None:
        """A dead process's replicas are no longer checked (its restart is a new replica)."""
        for key in [k for k in self.verified if k[0] == broker_id and k[1] == incarnation]:
            del self.verified[key]


# --- the end of a history ------------------------------------------------------------------------


@dataclass(frozen=True)
class LogRecord:
    offset: int
    value: bytes | None
    batch_base: int


def log_records(partition: Any) -> list[LogRecord]:
    """Every data record of a replica's log (up to its LEO), decoded."""
    out: list[LogRecord] = []
    for base, _last, data in read_batches(partition, partition.log_start_offset, partition.log_end_offset):
        header, records = decode_batch(data)
        if header.is_control:
            continue
        out.extend(LogRecord(r.offset, r.value, base) for r in records)
    return out


def check_history(
    history: History, leader_logs: dict[TopicPartition, list[LogRecord]], *, durable_acks: Iterable[int],
) -> list[str]:
    """The end-of-run checks; returns the problems found (empty: none)."""
    problems: list[str] = []
    durable = set(durable_acks)
    where: dict[tuple[TopicPartition, bytes], list[int]] = {}
    at: dict[tuple[TopicPartition, int], bytes | None] = {}
    for tp, records in leader_logs.items():
        for r in records:
            at[(tp, r.offset)] = r.value
            if r.value is not None:
                where.setdefault((tp, r.value), []).append(r.offset)
    for w in history.writes:
        found = [where.get((w.tp, v), []) for v in w.values]
        if w.acknowledged and w.acks in durable:
            missing = [v.decode() for v, offsets in zip(w.values, found, strict=True) if not offsets]
            if missing:
                problems.append(
                    f"lost write: {w.producer} write {w.write_id} to {w.tp} acknowledged at offset "
                    f"{w.offset} (attempts {w.attempts}) is not in the leader's log: {missing}"
                )
                continue
        # A durable acknowledgement names where the batch is (an acks=1 one may have been lost,
        # leaving only an earlier, unacknowledged copy of a retried batch).
        durable_ack = w.acknowledged and w.acks in durable
        if durable_ack and w.offset is not None and all(found) and w.offset not in found[0]:
                problems.append(
                    f"wrong offset: {w.producer} write {w.write_id} to {w.tp} acknowledged at {w.offset}, "
                    f"in the log at {found[0]}"
                )
        if w.idempotent:
            duplicated = [v.decode() for v, offsets in zip(w.values, found, strict=True) if len(offsets) > 1]
            if duplicated:
                problems.append(
                    f"duplicate: idempotent {w.producer} write {w.write_id} to {w.tp} is in the log more "
                    f"than once: {[(v, where[(w.tp, v.encode())]) for v in duplicated]} (rules 15-17)"
                )
        if w.refused and any(found):
            problems.append(
                f"refused write surfaced: {w.producer} write {w.write_id} to {w.tp} was refused on every "
                f"attempt ({w.attempts}) yet is in the log (rule 8)"
            )
    for tp, offset, value, consumer in history.reads:
        if (tp, offset) not in at:
            problems.append(f"phantom read: {consumer} read {tp} offset {offset}, which the final log lacks")
        elif at[(tp, offset)] != value:
            problems.append(
                f"inconsistent read: {consumer} read {value!r} at {tp} offset {offset}; the final log has "
                f"{at[(tp, offset)]!r} there (a read of data that was later lost)"
            )
    return problems
