"""One partition replica on one broker: its role, leader epoch, ISR, and when HW moves.

Owns (Kafka's Partition + the leader's Replica states): whether this replica leads or follows,
in which leader epoch; the ISR as the cluster metadata holds it and the change this leader has
asked for (KIP-497); each follower's progress as this leader has seen it in its fetches; and
HW. Nothing here does I/O or talks to the controller: the broker applies the metadata
(`make_leader`, `make_follower`, `update_isr`), reports follower fetches
(`record_follower_fetch`), asks what ISR change is due (`isr_to_shrink`, `isr_to_expand`) and
sends it through the cluster member itself.

HW (docs/guarantees.md rules 2, 7-9): on the leader, the smallest LEO over the *maximal* ISR (the
committed ISR plus the members of a change in flight: while an expansion waits for the store,
the new member already counts, so HW never passes what a replica the controller may elect
lacks; Kafka's maximalIsr). With `flush.policy=always` the leader's own term is its recovery
point (its flushed offset), and followers report only flushed offsets (they fsync before their
next fetch), so committed data is on the disks of the whole ISR. A follower's LEO is unknown
(-1) until it fetches in the current leader epoch, which holds HW back until every ISR member
has been heard from. On a follower, HW is the leader's HW as of its last fetch, capped by its
own LEO. HW never goes backwards within one leader epoch (only truncation lowers it).

acks=all (`produce_status`): the answer waits until HW passes the batch; the min-ISR check is
made before the append (NOT_ENOUGH_REPLICAS, nothing written) and again when HW passes
(NOT_ENOUGH_REPLICAS_AFTER_APPEND if the ISR shrank meanwhile: the write may still surface),
as Kafka's Partition.checkEnoughReplicasReachOffset does. Losing leadership while waiting
gives NOT_LEADER_OR_FOLLOWER (also indeterminate).

With eligible leader replicas on (KIP-966), HW does not move while the committed ISR is below
min.insync.replicas: whoever left the ISR meanwhile (the ELR) then holds everything below HW.

Invariants: log_start_offset <= HW <= LEO; the leader epoch only grows; the leader-epoch cache
holds the current epoch from the moment this replica leads (at its LEO then); at most one ISR
change is in flight.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from ackly.cluster.metadata import NO_LEADER, LeaderRecoveryState, PartitionState
from ackly.config import TopicConfig
from ackly.errors import ErrorCode, KafkaError
from ackly.log.partition_log import AppendResult, PartitionLog
from ackly.log.producer_state import AppendOrigin
from ackly.protocol.records import BatchHeader
from ackly.types import TopicPartition

UNKNOWN_OFFSET = -1


class Role(Enum):
    LEADER = "leader"
    FOLLOWER = "follower"


@dataclass
class FollowerProgress:
    """What the leader knows of one follower in the current leader epoch (Kafka's
    ReplicaState). `last_caught_up_ms` is the last time the follower was known to have
    everything the leader had (rule 9's clock for replica.lag.time.max.ms)."""

    broker_id: int
    log_end_offset: int = UNKNOWN_OFFSET
    last_caught_up_ms: int = 0
    last_fetch_ms: int = -1
    last_fetch_leader_leo: int = UNKNOWN_OFFSET
    broker_epoch: int = -1


@dataclass
class PendingIsrChange:
    """An AlterPartition this leader sent and has not yet seen settled in the metadata."""

    isr: frozenset[int]
    base_partition_epoch: int
    broker_epochs: dict[int, int] = field(default_factory=dict)
    # Store revision at which the store refused it. A refusal is usually caused by this
    # leader's own earlier send of the same change, which landed: the change counts for HW
    # until the metadata view reaches this revision and shows which it was.
    refused_at_revision: int | None = None
    # Store revision at which the store applied it: the view will show it; never re-sent.
    landed_at_revision: int | None = None


@dataclass
class Partition:
    tp: TopicPartition
    log: PartitionLog
    config: TopicConfig
    broker_id: int
    leader_epoch: int = -1
    # KIP-966 (eligible.leader.replicas.enable): the HW does not advance while the ISR is below
    # min.insync.replicas, so a replica that left the ISR then (the ELR) holds all of it.
    hw_needs_min_isr: bool = False

    def __post_init__(self) -> None:
        self.role = Role.FOLLOWER
        self.leader_id = NO_LEADER
        self.partition_epoch = -1
        self.replicas: tuple[int, ...] = ()
        self.isr: frozenset[int] = frozenset()
        self.pending_isr: PendingIsrChange | None = None
        self.recovering = False
        self.leader_epoch_start_offset = UNKNOWN_OFFSET
        self.followers: dict[int, FollowerProgress] = {}
        # Why this replica's log directory is offline (a failed write or fsync), or None.
        # Offline is for good in this process: HW stops and every waiting produce fails.
        self.offline: str | None = None

    # --- state ---------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self.role is Role.LEADER

    @property
    def high_watermark(self) -> int:
        return self.log.high_watermark

    @property
    def last_stable_offset(self) -> int:
        """LSO (KIP-98): below HW, at the first offset of the oldest transaction that is
        ongoing or whose marker HW has not passed; the same rule on leaders and followers,
        which replay the same batches into their producer state (see PartitionLog)."""
        return self.log.last_stable_offset

    @property
    def log_end_offset(self) -> int:
        return self.log.log_end_offset

    @property
    def log_start_offset(self) -> int:
        return self.log.log_start_offset

    @property
    def flush_always(self) -> bool:
        # flush.policy=always, or Kafka's flush.messages=1 (config.TopicConfig.flush_always).
        return self.config.flush_always

    @property
    def maximal_isr(self) -> frozenset[int]:
        """The committed ISR plus the members of a change in flight (KIP-497)."""
        if self.pending_isr is None:
            return self.isr
        return self.isr | self.pending_isr.isr

    @property
    def durable_end_offset(self) -> int:
        """What this replica can vouch for: its LEO, or its flushed offset under `always`."""
        if self.flush_always:
            return min(self.log.log_end_offset, self.log.recovery_point)
        return self.log.log_end_offset

    # --- role changes (from the cluster metadata) -----------------------------------------

    def make_leader(self, state: PartitionState, now_ms: int) -> bool:
        """Lead in state.leader_epoch. Returns True if this is a new leadership (a new epoch or
        a change of role); False if only the ISR or partition epoch changed.

        A new leadership assigns the epoch in the leader-epoch cache at LEO (durably), forgets
        every follower's progress (they must fetch again in this epoch), and keeps HW where it
        is: it moves once the ISR has fetched (Kafka's Partition.makeLeader)."""
        assert state.leader == self.broker_id
        new_term = self.role is not Role.LEADER or state.leader_epoch != self.leader_epoch
        if state.leader_epoch < self.leader_epoch:
            return False  # a stale view: never go back
        self.role = Role.LEADER
        self.leader_id = self.broker_id
        self.replicas = state.replicas
        self.recovering = state.leader_recovery_state is LeaderRecoveryState.RECOVERING
        if new_term:
            self.leader_epoch = state.leader_epoch
            self.log.leader_epochs.assign(state.leader_epoch, self.log.log_end_offset)
            self.leader_epoch_start_offset = self.log.log_end_offset
            self.followers = {
                b: FollowerProgress(b, last_caught_up_ms=now_ms) for b in state.replicas if b != self.broker_id
            }
            self.pending_isr = None
        self._set_isr(state)
        self._advance_hw()
        return new_term

    def make_follower(self, state: PartitionState) -> bool:
        """Follow state.leader (NO_LEADER: wait for one). Returns True if the leader or epoch
        changed, so the fetcher must (re)start. Nothing is truncated here: the first fetch from
        the new leader finds where the logs diverge (rule 11)."""
        if state.leader_epoch < self.leader_epoch:
            return False
        changed = (
            self.role is not Role.FOLLOWER
            or state.leader_epoch != self.leader_epoch
            or state.leader != self.leader_id
        )
        self.role = Role.FOLLOWER
        self.leader_id = state.leader
        self.leader_epoch = state.leader_epoch
        self.partition_epoch = state.partition_epoch
        self.replicas = state.replicas
        self.isr = frozenset(state.isr)
        self.recovering = state.leader_recovery_state is LeaderRecoveryState.RECOVERING
        self.pending_isr = None
        self.followers = {}
        self.leader_epoch_start_offset = UNKNOWN_OFFSET
        return changed

    def stop(self) -> None:
        """This broker no longer hosts the partition (deleted or moved away)."""
        self.role = Role.FOLLOWER
        self.leader_id = NO_LEADER
        self.pending_isr = None
        self.followers = {}

    def update_isr(self, state: PartitionState) -> bool:
        """The metadata changed the ISR (or partition epoch) within this leader's epoch.
        Returns True if HW moved."""
        assert self.is_leader and state.leader_epoch == self.leader_epoch
        self.replicas = state.replicas
        self.recovering = state.leader_recovery_state is LeaderRecoveryState.RECOVERING
        for b in state.replicas:
            if b != self.broker_id and b not in self.followers:
                self.followers[b] = FollowerProgress(b)
        self._set_isr(state)
        return self._advance_hw()

    def _set_isr(self, state: PartitionState) -> None:
        self.isr = frozenset(state.isr)
        self.partition_epoch = state.partition_epoch
        pending = self.pending_isr
        if pending is not None and state.partition_epoch > pending.base_partition_epoch:
            self.pending_isr = None  # settled: the metadata shows the outcome, whatever it was

    # --- ISR changes (the leader's side of AlterPartition) ------------------------------------

    def isr_to_shrink(self, now_ms: int, lag_max_ms: int) -> frozenset[int] | None:
        """The ISR without the followers that have not caught up for lag_max_ms (rule 9), or
        None if none is out of sync or a change is in flight."""
        if not self.is_leader or self.pending_isr is not None:
            return None
        leo = self.log.log_end_offset
        out = {
            b for b in self.isr
            if b != self.broker_id and self._out_of_sync(self.followers.get(b), leo, now_ms, lag_max_ms)
        }
        if not out:
            return None
        return self.isr - out

    @staticmethod
    def _out_of_sync(f: FollowerProgress | None, leo: int, now_ms: int, lag_max_ms: int) -> bool:
        if f is None:
            return True
        return f.log_end_offset != leo and now_ms - f.last_caught_up_ms > lag_max_ms

    def isr_to_expand(self, broker_id: int) -> frozenset[int] | None:
        """The ISR with this follower added if it qualifies (rule 9: its LEO >= HW and >= the
        start of the current leader epoch; not while RECOVERING), else None."""
        if not self.is_leader or self.pending_isr is not None or self.recovering:
            return None
        if broker_id in self.isr or broker_id not in self.replicas:
            return None
        f = self.followers.get(broker_id)
        if f is None or f.log_end_offset < 0:
            return None
        if f.log_end_offset < self.high_watermark or f.log_end_offset < self.leader_epoch_start_offset:
            return None
        return self.isr | {broker_id}

    def begin_isr_change(self, isr: frozenset[int], broker_epochs: dict[int, int]) -> None:
        """An AlterPartition for `isr` was sent: count its members for HW until it settles."""
        assert self.pending_isr is None
        self.pending_isr = PendingIsrChange(isr, self.partition_epoch, dict(broker_epochs))

    def abandon_isr_change(self) -> bool:
        """The change was refused (it will not show in the metadata): drop it. Returns True if
        HW moved (a refused expansion no longer holds it back)."""
        self.pending_isr = None
        return self._advance_hw()

    # --- the leader's appends and its followers' fetches -----------------------------------

    def check_leader(self, current_leader_epoch: int = -1) -> None:
        """KIP-320: raise FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH if the caller's epoch is not
        ours (when it states one), then NOT_LEADER_OR_FOLLOWER if this replica does not lead."""
        check_leader_epoch(current_leader_epoch, self.leader_epoch)
        if not self.is_leader:
            raise KafkaError(
                ErrorCode.not_leader_or_follower, f"broker {self.broker_id} does not lead {self.tp}"
            )

    def append_as_leader(
        self,
        records: bytearray,
        headers: list[BatchHeader],
        acks: int,
        now_ms: int,
        origin: AppendOrigin = AppendOrigin.CLIENT,
        verification_guard: object | None = None,
    ) -> AppendResult:
        """Append validated batches in this leader's epoch. Visible to followers at once and
        to consumers below HW only; durable after the covering flush; committed once HW
        passes it.

        Idempotent producers' batches are checked by the log's producer state first (rules
        15-17): a refusal raises KafkaError with nothing written; a retry of batches already
        in the log returns their original offsets (`duplicate`), to be answered once HW and
        the flush cover them like any append. The min-ISR check comes first, as in Kafka's
        Partition.appendRecordsToLeader, so a retry is refused while the ISR is too small
        (rule 8: NOT_ENOUGH_REPLICAS, and LEO does not move).

        `origin` COORDINATOR is for transaction markers and a coordinator's own transactional
        records (Kafka's AppendOrigin.COORDINATOR: epoch checks, no sequence checks; the
        producer's transaction here starts or continues, so the LSO covers it).
        `verification_guard`: KIP-890's, see log/producer_state.py.
        """
        self.check_leader()
        if not self.log.cut_durable:
            # It truncated as a follower and leads before that truncation's flush round
            # completed: nothing is appended after a cut before the cut is durable (see
            # partition_log.py). The round is already scheduled; the client retries.
            raise KafkaError(ErrorCode.not_leader_or_follower,
                             f"{self.tp}: its last truncation is not durable yet")
        if acks == -1 and len(self.isr) < self.config.min_insync_replicas:
            raise KafkaError(
                ErrorCode.not_enough_replicas,
                f"ISR size {len(self.isr)} < min.insync.replicas {self.config.min_insync_replicas}",
            )
        result = self.log.append(
            records, headers, self.leader_epoch, now_ms, origin, verification_guard
        )
        self._advance_hw()
        return result

    def produce_status(self, last_offset: int, acks: int) -> ErrorCode | None:
        """How a produce waiting on the batch ending at `last_offset` stands: None to keep
        waiting, or the code to answer with (NONE when HW and the flush policy allow it).
        KAFKA_STORAGE_ERROR once the log directory is offline, whatever else holds."""
        if self.offline is not None:
            return ErrorCode.kafka_storage_error
        if acks == -1:
            if not self.is_leader:
                return ErrorCode.not_leader_or_follower
            if self.high_watermark <= last_offset:
                return None
            if len(self.isr) < self.config.min_insync_replicas:
                return ErrorCode.not_enough_replicas_after_append
        if not self.is_durable(last_offset):
            return None
        return ErrorCode.none

    def record_follower_fetch(
        self, broker_id: int, broker_epoch: int, fetch_offset: int, now_ms: int
    ) -> bool:
        """A follower fetched from `fetch_offset`, so its log (already checked against ours by
        its last fetched epoch) holds everything below it. Returns True if HW moved. Kafka's
        Partition.updateFollowerFetchState and ReplicaState.updateFetchState."""
        assert self.is_leader
        f = self.followers.get(broker_id)
        if f is None:
            f = self.followers[broker_id] = FollowerProgress(broker_id)
        leo = self.log.log_end_offset
        if fetch_offset >= leo:
            f.last_caught_up_ms = max(f.last_caught_up_ms, now_ms)
        elif fetch_offset >= f.last_fetch_leader_leo >= 0:
            f.last_caught_up_ms = max(f.last_caught_up_ms, f.last_fetch_ms)
        f.log_end_offset = fetch_offset
        f.last_fetch_ms = now_ms
        f.last_fetch_leader_leo = leo
        f.broker_epoch = broker_epoch
        return self._advance_hw()

    def on_flushed(self) -> bool:
        """The recovery point moved; returns True if HW moved with it."""
        return self._advance_hw()

    def take_offline(self, reason: str) -> None:
        """The log directory failed: HW never moves again here, waiting produces fail with
        KAFKA_STORAGE_ERROR (Kafka's offline partitions)."""
        self.offline = reason

    def _advance_hw(self) -> bool:
        if not self.is_leader or self.offline is not None:
            return False
        # Capped by the replication factor, as Kafka's effectiveMinIsr.
        if self.hw_needs_min_isr and len(self.isr) < min(self.config.min_insync_replicas, len(self.replicas)):
            return False
        target = self.durable_end_offset
        for b in self.maximal_isr:
            if b == self.broker_id:
                continue
            f = self.followers.get(b)
            target = min(target, f.log_end_offset if f is not None else UNKNOWN_OFFSET)
        if target > self.log.high_watermark:
            self.log.set_high_watermark(target)
            return True
        return False

    def is_durable(self, last_offset: int) -> bool:
        """Whether the record at last_offset is flushed (always counts only under `always`)."""
        return not self.flush_always or self.log.recovery_point > last_offset

    # --- the follower's side ------------------------------------------------------------

    def append_as_follower(self, records: bytearray, headers: list[BatchHeader], now_ms: int) -> AppendResult:
        """Append batches fetched from the leader, offsets and epochs as the leader wrote
        them. Visible on return; durable after the covering flush (which must complete before
        the next fetch reports the new LEO under `always`)."""
        assert not self.is_leader
        return self.log.append_replicated(records, headers, now_ms)

    def update_follower_high_watermark(self, leader_high_watermark: int) -> bool:
        """Take the leader's HW, capped by this replica's LEO. Returns True if it moved."""
        before = self.log.high_watermark
        self.log.set_high_watermark(min(leader_high_watermark, self.log.log_end_offset))
        return self.log.high_watermark != before

    def update_config(self, config: TopicConfig) -> None:
        self.config = config
        self.log.update_config(config)
        self._advance_hw()

    def __repr__(self) -> str:
        return (
            f"Partition({self.tp}, {self.role.value}, leader={self.leader_id}, epoch={self.leader_epoch}, "
            f"isr={sorted(self.isr)}, hw={self.high_watermark}, leo={self.log_end_offset})"
        )


def check_leader_epoch(current: int, leader_epoch: int) -> None:
    """KIP-320: a caller's view of the leader epoch must match ours, when it states one."""
    if current < 0 or current == leader_epoch:
        return
    if current < leader_epoch:
        raise KafkaError(ErrorCode.fenced_leader_epoch, f"leader epoch {current} < {leader_epoch}")
    raise KafkaError(ErrorCode.unknown_leader_epoch, f"leader epoch {current} > {leader_epoch}")
