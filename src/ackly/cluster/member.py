"""One broker's side of the cluster-metadata protocol, as a state machine without I/O.

Owns: this broker's store session (its lease and the keep-alives that hold it), its registration
(/brokers/<id>, create-if-absent under the lease; one registration = one broker epoch), its view
of the cluster (a Get of the root, then one watch from the next revision; the view changes only
by watch events), its candidacy for controller (create-if-absent of /controller under its lease,
etcd's election recipe) and, while it is the controller, running `controller.reconcile` on its
view and writing the decisions. Like h11, it takes inputs (`handle(store input, now_ms)`,
`tick(now_ms)`) and hands out outputs (`take_commands()` for the store, `take_results()` for the
broker's own requests); it never blocks, reads no clock and starts nothing.

Invariants:
- At most one request of each session kind (grant, register, campaign, snapshot) is in flight;
  the controller has at most one write in flight per key and at most `max_inflight_writes` in all.
- `is_controller(now)` only while the session is believed alive: the lease is taken to end at
  (send time of the last acknowledged grant or keep-alive) + TTL, never later than the store's
  own deadline, so an old controller stops believing in itself before a new one can be elected.
  Its writes are fenced anyway (every controller write is guarded on the controller key).
- A lost session (lease expired, keep-alive refused, or the believed deadline passed) is never
  resumed: the member revokes the old lease and registers again as a new incarnation, so the
  controller re-elects every partition the old incarnation led or followed (Kafka fences a
  broker whose session timed out the same way).

Resumed leadership (single-broker mode only): a broker started after a clean stop is given the
leader epoch of every partition it led then (log/log_dir.py records them with the clean
state). Its first session resumes those leaderships: as long as a partition's state still
names it leader in that epoch, its new registration does not count as a restart for that
partition (`resumes`), so the controller elects nothing at the start and the leader epoch
stays. Nothing it acknowledged was lost (every log was flushed and closed before the epochs
were recorded) and no other replica exists to fence. Kafka's controller bumps the epoch on
every restart; after a crash this one does too (no record, every partition elected). A
partition whose log did not open from that clean state is handed back to the controller
(`forget_resumed`); a lost session ends every resumption.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum

from ackly.cluster.acls import AclBinding
from ackly.cluster.controller import (
    AlterPartitionDecision,
    AlterPartitionRequest,
    ChangeReason,
    Cleanup,
    ControllerPolicy,
    PartitionChange,
    alter_partition,
    controlled_shutdown_complete,
    controller_guard,
    plan_create_partitions,
    plan_create_topic,
    reconcile,
    reconcile_scope,
    topic_delete,
    topic_write,
)
from ackly.cluster.metadata import (
    BrokerInfo,
    ClusterMetadata,
    ControllerInfo,
    KeyKind,
    KeySpace,
    PartitionState,
    encode_cluster_id,
    encode_next_producer_id,
)
from ackly.cluster.quotas import QuotaEntity, encode_values
from ackly.cluster.scram import ScramCredential
from ackly.cluster.store import (
    CancelWatch,
    Command,
    CommandResult,
    CompareAndSet,
    Delete,
    Get,
    GrantLease,
    KeepAlive,
    LeaseExpired,
    Put,
    RevokeLease,
    StoreError,
    StoreInput,
    Watch,
    WatchCanceled,
    WatchEvent,
)
from ackly.errors import ErrorCode
from ackly.types import TopicPartition


@dataclass(frozen=True)
class MemberConfig:
    session_timeout_ms: int = 9_000  # the lease TTL (Kafka's broker.session.timeout.ms)
    heartbeat_interval_ms: int = 2_000  # keep-alive period (broker.heartbeat.interval.ms)
    request_timeout_ms: int = 5_000  # an unanswered write is forgotten and decided again
    max_inflight_writes: int = 1_000
    keys: KeySpace = field(default_factory=KeySpace)
    policy: ControllerPolicy = field(default_factory=ControllerPolicy)

    def __post_init__(self) -> None:
        assert 0 < self.heartbeat_interval_ms < self.session_timeout_ms


log = logging.getLogger("ackly.controller")


def _log_change(controller_id: int, change: PartitionChange, revision: int) -> None:
    """One line per partition state the controller wrote: an election (a new leader epoch)
    or an ISR shrink; creations are not elections."""
    if change.reason is ChangeReason.CREATE:
        return
    after = change.after
    event = "isr_shrink" if change.reason is ChangeReason.ISR_SHRINK else "election"
    log.info("controller %d: %s %s: leader %d in epoch %d, ISR %s (revision %d)", controller_id,
             change.reason.value, change.tp, after.leader, after.leader_epoch, sorted(after.isr),
             revision, extra={
                 "event": event, "reason": change.reason.value, "topic": change.tp.topic,
                 "partition": change.tp.partition, "leader": after.leader,
                 "leader_epoch": after.leader_epoch, "partition_epoch": after.partition_epoch,
                 "isr": sorted(after.isr), "controller": controller_id,
                 "previous_leader": change.before.leader if change.before is not None else None,
             })


class _Kind(Enum):
    GRANT = "grant"
    KEEPALIVE = "keepalive"
    REVOKE = "revoke"
    SNAPSHOT = "snapshot"
    WATCH = "watch"
    CANCEL_WATCH = "cancel_watch"
    REGISTER = "register"
    UPDATE_REGISTRATION = "update_registration"
    CAMPAIGN = "campaign"
    RESIGN = "resign"
    CLUSTER_ID = "cluster_id"
    CONTROLLER_WRITE = "controller_write"
    ISR_CHANGE = "isr_change"
    USER = "user"  # the broker's own request; its result goes to take_results()


# Requests that belong to one session and are meaningless after it is lost.
# The first producer id of a cluster's first claimed block: above every id of the per-broker
# ranges (broker id << 44, for broker ids below 2^18) that earlier versions handed out
# without asking the cluster, so an upgraded cluster never hands one of those out again.
FIRST_CLUSTER_PRODUCER_ID = 1 << 62

_SESSION_KINDS = frozenset({
    _Kind.KEEPALIVE, _Kind.REGISTER, _Kind.UPDATE_REGISTRATION, _Kind.CAMPAIGN, _Kind.RESIGN,
    _Kind.CONTROLLER_WRITE,
})


@dataclass
class _Request:
    kind: _Kind
    sent_ms: int
    lease_id: int | None = None
    key: str | None = None
    tp: TopicPartition | None = None
    reason: str | None = None  # a controller write's ChangeReason value ("cleanup" for a Cleanup)


@dataclass
class _PendingWrite:
    request_id: int
    sent_ms: int
    applied_revision: int = 0  # set when the store acknowledged; cleared once the view has it
    change: PartitionChange | None = None  # what was written (None: a cleanup)


class ClusterMember:
    def __init__(
        self,
        broker: BrokerInfo,
        *,
        config: MemberConfig | None = None,
        rng: random.Random,
        now_ms: int,
        resumed: Mapping[TopicPartition, int] | None = None,
    ) -> None:
        """`resumed`: the leader epoch of each partition this broker led at its last clean
        stop (single-broker mode: see "Resumed leadership" in the module docstring)."""
        self.broker = replace(broker, lease_id=None, epoch=0, shutting_down=False)
        self._unclean_checked_view: ClusterMetadata | None = None  # see _unclean_start_seen
        self._resumed: dict[TopicPartition, int] = dict(resumed or {})
        self.broker_id = broker.broker_id
        self.config = config or MemberConfig()
        self.keys = self.config.keys
        self.rng = rng
        self.metadata = ClusterMetadata(keys=self.keys)
        self.synced = False  # the view holds a snapshot and the watch continues it
        self._new_cluster_id = uuid.UUID(int=rng.getrandbits(128), version=4).hex[:22]
        self._next_request_id = 1
        self._inflight: dict[int, _Request] = {}
        self._inflight_kinds: Counter[_Kind] = Counter()
        self._outbox: list[Command] = []
        self._results: list[CommandResult] = []
        self._lease_id: int | None = None
        self._lease_valid_until_ms = 0
        self._next_keepalive_ms = 0
        self._watch_id: int | None = None
        self._pending_writes: dict[str, _PendingWrite] = {}
        self._isr_changes: dict[TopicPartition, int] = {}
        self._reconciled: tuple[int, int] | None = None  # (view revision, pending count) last run
        # What the next controller run must look at: the partitions the view set since the
        # last run (controller.reconcile_scope) and those that run left undone (their write
        # not sent: too many in flight, or one in flight settled since); None for all of them.
        # Without it every ISR change cost an election of every partition.
        self._unreconciled: set[TopicPartition] | None = None
        self._reconciled_epoch = -1  # the controller epoch of the last run
        self._resigned_epoch = 0  # the controller epoch this member gave up (not to act on it again)
        self._shutting_down = False
        self._left = False
        # Partition changes this member wrote as controller, by ChangeReason value: the
        # elections (clean, unclean) and ISR shrinks Kafka's ControllerStats counts.
        self.controller_changes: Counter[str] = Counter()
        self._step(now_ms)

    # --- inputs ----------------------------------------------------------------------------------

    def handle(self, message: StoreInput, now_ms: int) -> None:
        self.handle_all([message], now_ms)

    def handle_all(self, messages: Iterable[StoreInput], now_ms: int) -> None:
        """Take a batch of store inputs in delivery order; watch events are applied to the view
        as one batch, up to the first input whose handling reads or replaces the view.

        Applying a batch copies the view (every partition), and a store answers a run of
        writes as result, event, result, event ...: applying the events at each result made a
        CreateTopics or a start-up election of N partitions cost N copies of N partitions.
        Results that only record an outcome (`_view_free`) do not need the view brought up to
        their revision first."""
        events: list[WatchEvent] = []
        for message in messages:
            if isinstance(message, WatchEvent):
                if message.watch_id == self._watch_id and self.synced:
                    events.append(message)
                continue
            if events and not self._view_free(message):
                self._apply(events)
                events = []
            if isinstance(message, CommandResult):
                self._on_result(message, now_ms)
            elif isinstance(message, WatchCanceled):
                if message.watch_id == self._watch_id:
                    self._resync()
            elif isinstance(message, LeaseExpired) and message.lease_id == self._lease_id:
                self._lose_session(now_ms, revoke=False)
        if events:
            self._apply(events)
        self._step(now_ms)

    def _view_free(self, message: StoreInput) -> bool:
        """Whether handling `message` neither reads nor replaces the view (see `_on_result`):
        the result of one of the broker's own requests or of an ISR change (handed on through
        take_results), or of a controller write that was applied (its revision is noted)."""
        if not isinstance(message, CommandResult):
            return False
        request = self._inflight.get(message.request_id)
        if request is None:
            return True  # not ours, or forgotten: ignored
        if request.kind is _Kind.CONTROLLER_WRITE:
            return message.ok
        return request.kind in (_Kind.USER, _Kind.ISR_CHANGE)

    def tick(self, now_ms: int) -> None:
        self._step(now_ms)

    # --- outputs ---------------------------------------------------------------------------------

    def take_commands(self) -> list[Command]:
        commands, self._outbox = self._outbox, []
        return commands

    def take_results(self) -> list[CommandResult]:
        """Results of the broker's own requests (create_topic, ..., alter_partition)."""
        results, self._results = self._results, []
        return results

    def next_deadline_ms(self) -> int | None:
        if self._left:
            return None
        timeout = self.config.request_timeout_ms
        deadlines = [p.sent_ms + timeout for p in self._pending_writes.values()]
        deadlines += [r.sent_ms + timeout for r in self._inflight.values()]
        if self._lease_id is not None:
            deadlines += [self._next_keepalive_ms, self._lease_valid_until_ms]
        return min(deadlines, default=None)

    # --- queries ---------------------------------------------------------------------------------

    @property
    def lease_id(self) -> int | None:
        return self._lease_id

    def session_valid(self, now_ms: int) -> bool:
        return self._lease_id is not None and now_ms < self._lease_valid_until_ms

    def registration(self) -> BrokerInfo | None:
        """This broker's registration as the view shows it, if it is this session's."""
        info = self.metadata.brokers.get(self.broker_id)
        if info is None or self._lease_id is None or info.lease_id != self._lease_id:
            return None
        return info

    @property
    def broker_epoch(self) -> int | None:
        info = self.registration()
        return None if info is None else info.epoch

    def joined(self) -> bool:
        """The view is synced and shows a controller and a registration under this broker id
        (this session's, or an earlier incarnation's still leased, which the controller treats
        as this broker until it expires). A broker serves clients only from then on: before,
        its Metadata would list no broker and no controller, and a client that asks for the
        controller and is told "none" may not ask again (librdkafka's admin client waits for a
        broker state change that never comes). Kafka's broker likewise handles no request
        until it has caught up with the metadata and been unfenced."""
        return (
            self.synced
            and self.metadata.controller is not None
            and self.broker_id in self.metadata.brokers
        )

    def is_controller(self, now_ms: int) -> bool:
        controller = self.metadata.controller
        return (
            self.session_valid(now_ms)
            and controller is not None
            and controller.broker_id == self.broker_id
            and controller.lease_id == self._lease_id
            and controller.epoch != self._resigned_epoch
        )

    def resumes(self, tp: TopicPartition, state: PartitionState) -> bool:
        """Whether this broker's session resumes the leadership `state` names (see the
        module docstring): it names this broker, in the epoch it led tp in at its clean stop."""
        return (bool(self._resumed) and state.leader == self.broker_id
                and self._resumed.get(tp) == state.leader_epoch)

    @property
    def resumed_partitions(self) -> list[TopicPartition]:
        return list(self._resumed)

    def forget_resumed(self, tp: TopicPartition, now_ms: int) -> None:
        """tp's log did not open as its clean stop left it: its leadership is decided by the
        controller again (a new epoch), as after a crash."""
        if self._resumed.pop(tp, None) is None:
            return
        self._recheck({tp})
        self._step(now_ms)

    def isr_change_pending(self, tp: TopicPartition) -> bool:
        """An AlterPartition write for tp is in flight (send one at a time, as Kafka does)."""
        return tp in self._isr_changes

    def isr_change_request_id(self, tp: TopicPartition) -> int | None:
        """The request id of the AlterPartition write in flight for tp: its result comes back
        through take_results() under this id."""
        return self._isr_changes.get(tp)

    def shutdown_ready(self, now_ms: int) -> bool:
        """After begin_controlled_shutdown: leadership has moved away as far as it can, and this
        broker no longer acts as controller. Then call leave()."""
        if not self._shutting_down:
            return False
        if not self.session_valid(now_ms):
            return True
        info = self.registration()
        return (
            info is not None
            and info.shutting_down
            and controlled_shutdown_complete(self.metadata, self.broker_id)
            and not self.is_controller(now_ms)
        )

    # --- the broker's requests -------------------------------------------------------------------

    def create_topic(
        self,
        name: str,
        partitions: int,
        replication_factor: int,
        now_ms: int,
        *,
        configs: dict[str, str] | None = None,
        assignment: list[tuple[int, ...]] | None = None,
    ) -> int:
        """Write a new topic (validated name and configs) placed on this view's live brokers.
        Raises KafkaError if it cannot be placed; returns the request id whose result
        (take_results) says whether the write won (COMPARE_FAILED: the name was taken)."""
        topic = plan_create_topic(
            self.metadata, name, partitions, replication_factor, self.rng, configs=configs,
            assignment=assignment,
        )
        return self._send_user(topic_write(self._new_request_id(), self.metadata, topic), now_ms)

    def read_revision(self, now_ms: int) -> int:
        """Ask the store for its current revision (a linearizable read of the broker
        registrations); the result (take_results) carries it. Once the view's revision reaches
        it, the view holds every write the store had made when it answered: a read barrier,
        for a decision this view alone must not make (a broker registered a moment ago may not
        have reached it through the watch yet)."""
        return self._send_user(Get(self._new_request_id(), self.keys.brokers_prefix), now_ms)

    def create_partitions(self, name: str, total: int, now_ms: int) -> int:
        topic = plan_create_partitions(self.metadata, name, total, self.rng)
        return self._send_user(topic_write(self._new_request_id(), self.metadata, topic), now_ms)

    def alter_topic_configs(self, name: str, configs: dict[str, str], now_ms: int) -> int | None:
        topic = self.metadata.topics.get(name)
        if topic is None:
            return None
        return self._send_user(
            topic_write(self._new_request_id(), self.metadata, topic.with_configs(configs)), now_ms
        )

    def delete_topic(self, name: str, now_ms: int) -> int | None:
        if name not in self.metadata.topics:
            return None
        return self._send_user(topic_delete(self._new_request_id(), self.metadata, name), now_ms)

    def claim_producer_ids(self, block_size: int, now_ms: int) -> tuple[int, int, int] | None:
        """Claim the next `block_size` producer ids for this broker (Kafka's controller hands
        out such blocks, AllocateProducerIds): a compare-and-set of the producer-ids key from
        the value this view holds, so two brokers never get the same block, whatever either
        remembers of its own disk. Returns (request id, first id, end); the ids in
        [first, end) are this broker's only if the result (take_results) is ok. A refusal
        means another broker claimed first (ask again once the view shows it); an unknown
        outcome may have claimed the block, which is then never used by anyone. None until
        the view is synced. The first block of a cluster starts at FIRST_CLUSTER_PRODUCER_ID,
        above the per-broker ranges (broker id << 44) older versions handed out."""
        if not self.synced:
            return None
        key = self.keys.producer_ids
        start = self.metadata.next_producer_id
        if start is None:
            start = FIRST_CLUSTER_PRODUCER_ID
        end = start + block_size
        command = CompareAndSet(self._new_request_id(), key, self.metadata.mod_revision(key),
                                encode_next_producer_id(end, self.broker_id))
        return self._send_user(command, now_ms), start, end

    def put_acl(self, binding: AclBinding, now_ms: int) -> int:
        """Write one ACL binding (its key names it, so writing it again changes nothing that
        matters); the result comes back through take_results()."""
        return self._send_user(Put(self._new_request_id(), self.keys.acl(binding), binding.encode()), now_ms)

    def delete_acl(self, binding: AclBinding, now_ms: int) -> int:
        return self._send_user(Delete(self._new_request_id(), self.keys.acl(binding)), now_ms)
    def put_scram_credential(self, credential: ScramCredential, now_ms: int) -> int:
        """Write one user's credential for one mechanism (last writer wins, as Kafka's
        UserScramCredentialRecord); the result (take_results) says whether it was written."""
        key = self.keys.scram(credential.mechanism, credential.user)
        return self._send_user(Put(self._new_request_id(), key, credential.encode()), now_ms)

    def delete_scram_credential(self, user: str, mechanism: str, now_ms: int) -> int:
        return self._send_user(Delete(self._new_request_id(), self.keys.scram(mechanism, user)), now_ms)

    def put_client_quotas(self, entity: QuotaEntity, values: Mapping[str, float], now_ms: int) -> int:
        """Write one entity's quota values (all of them: the handler merges the alteration
        into what the view holds); the result comes back through take_results()."""
        return self._send_user(Put(self._new_request_id(), self.keys.quota(entity), encode_values(entity, values)),
                               now_ms)

    def delete_client_quotas(self, entity: QuotaEntity, now_ms: int) -> int:
        return self._send_user(Delete(self._new_request_id(), self.keys.quota(entity)), now_ms)

    def alter_partition(self, request: AlterPartitionRequest, now_ms: int) -> AlterPartitionDecision:
        """Validate an ISR change against this view and, if it changes something, write it
        (guarded, see controller.alter_partition). Its outcome shows in the view; until then
        isr_change_pending(tp) is true."""
        if request.tp in self._isr_changes:
            return AlterPartitionDecision(
                ErrorCode.operation_not_attempted, self.metadata.partition(request.tp), None,
                "an ISR change is in flight",
            )
        epoch = self.broker_epoch
        if epoch is None:
            return AlterPartitionDecision(
                ErrorCode.stale_broker_epoch, self.metadata.partition(request.tp), None,
                "this broker's session is not registered",
            )
        if request.leader_broker_epoch is None:
            request = replace(request, leader_broker_epoch=epoch)
        decision = alter_partition(self.metadata, request, self.config.policy)
        if decision.change is not None:
            rid = self._new_request_id()
            self._send(decision.change.command(rid, self.keys), _Kind.ISR_CHANGE, now_ms, tp=request.tp)
            self._isr_changes[request.tp] = rid
        return decision

    def begin_controlled_shutdown(self, now_ms: int) -> None:
        """Ask the controller to move leadership away (the registration says shutting_down).
        Poll shutdown_ready(); then leave()."""
        self._shutting_down = True
        self._step(now_ms)

    def leave(self, now_ms: int) -> None:
        """End the session now: revoking the lease deletes the registration (and the controller
        key, if held) at once, instead of after the session timeout."""
        if self._lease_id is not None:
            self._send(RevokeLease(self._new_request_id(), self._lease_id), _Kind.REVOKE, now_ms)
        self._lease_id = None
        self._left = True

    # --- the state machine -----------------------------------------------------------------------

    def _step(self, now_ms: int) -> None:
        if self._left:
            return
        self._expire_pending(now_ms)
        if self._lease_id is not None and now_ms >= self._lease_valid_until_ms:
            self._lose_session(now_ms, revoke=True)
        if self._lease_id is None and not self._in_flight(_Kind.GRANT):
            grant = GrantLease(self._new_request_id(), self.config.session_timeout_ms)
            self._send(grant, _Kind.GRANT, now_ms)
        if self._lease_id is not None and now_ms >= self._next_keepalive_ms:
            self._next_keepalive_ms = now_ms + self.config.heartbeat_interval_ms
            self._send(
                KeepAlive(self._new_request_id(), self._lease_id),
                _Kind.KEEPALIVE, now_ms, lease_id=self._lease_id,
            )
        if not self.synced:
            if not self._in_flight(_Kind.SNAPSHOT):
                self._send(Get(self._new_request_id(), self.keys.prefix), _Kind.SNAPSHOT, now_ms)
            return
        if self.metadata.cluster_id is None and not self._in_flight(_Kind.CLUSTER_ID):
            key = self.keys.cluster_id
            self._send(
                CompareAndSet(self._new_request_id(), key, 0, encode_cluster_id(self._new_cluster_id)),
                _Kind.CLUSTER_ID, now_ms,
            )
        if self._lease_id is not None:
            self._maintain_registration(now_ms)
        if self.is_controller(now_ms):
            self._act_as_controller(now_ms)

    def _unclean_start_seen(self, epoch: int) -> bool:
        """Whether every partition state that lists this broker in its ISR or ELR was written
        since its registration at `epoch`: the writer then saw that this incarnation started
        after an unclean shutdown (KIP-966; controller.unclean_restarts)."""
        if self.metadata is self._unclean_checked_view:
            return False  # asked again of the same view: the answer was no
        self._unclean_checked_view = self.metadata
        return all(
            self.metadata.partition_revision(tp) > epoch
            for tp, state in self.metadata.all_partitions()
            if self.broker_id in state.isr or self.broker_id in state.elr
        )

    def _maintain_registration(self, now_ms: int) -> None:
        assert self._lease_id is not None
        key = self.keys.broker(self.broker_id)
        current = self.metadata.brokers.get(self.broker_id)
        mine = self.registration()
        if current is None:
            # Absent: register. Present under another lease: an earlier incarnation's key, still
            # leased; wait for it to expire (the watch shows the delete), never overwrite it.
            if not self._in_flight(_Kind.REGISTER):
                info = replace(self.broker, shutting_down=self._shutting_down)
                self._send(
                    CompareAndSet(self._new_request_id(), key, 0, info.encode(), lease_id=self._lease_id),
                    _Kind.REGISTER, now_ms, lease_id=self._lease_id,
                )
            return
        if mine is None:
            return
        if (
            self.broker.unclean_shutdown and self.config.policy.eligible_leader_replicas
            and self._unclean_start_seen(mine.epoch)
        ):
            # A later registration of this process (after a lost session) lost nothing.
            self.broker = replace(self.broker, unclean_shutdown=False)
        if self._shutting_down and not mine.shutting_down and not self._in_flight(_Kind.UPDATE_REGISTRATION):
            info = replace(self.broker, shutting_down=True)
            self._send(
                CompareAndSet(
                    self._new_request_id(), key, self.metadata.mod_revision(key), info.encode(),
                    lease_id=self._lease_id,
                ),
                _Kind.UPDATE_REGISTRATION, now_ms,
            )
        if (
            self.metadata.controller is None
            and not self._shutting_down
            and not self._in_flight(_Kind.CAMPAIGN)
        ):
            self._send(
                CompareAndSet(
                    self._new_request_id(), self.keys.controller, 0,
                    ControllerInfo(self.broker_id).encode(), lease_id=self._lease_id,
                ),
                _Kind.CAMPAIGN, now_ms, lease_id=self._lease_id,
            )

    def _act_as_controller(self, now_ms: int) -> None:
        controller = self.metadata.controller
        assert controller is not None
        if self._shutting_down and controlled_shutdown_complete(self.metadata, self.broker_id):
            # Leadership has moved off this broker: hand the controller role over too.
            if not self._in_flight(_Kind.RESIGN):
                key = self.keys.controller
                self._send(
                    Delete(self._new_request_id(), key, self.metadata.mod_revision(key)),
                    _Kind.RESIGN, now_ms,
                )
                self._resigned_epoch = controller.epoch
            return
        if (self.metadata.revision, len(self._pending_writes)) == self._reconciled:
            return  # nothing changed since the last run
        guard = controller_guard(self.metadata)
        scope = self._unreconciled
        if self._reconciled is None or self._reconciled_epoch != controller.epoch:
            scope = None  # a new term, a resync, a lost session: look at everything
        undone: set[TopicPartition] = set()
        resumes = self.resumes if self._resumed else None
        for decision in reconcile(self.metadata, self.config.policy, scope, resumes):
            if len(self._pending_writes) >= self.config.max_inflight_writes:
                undone.add(decision.tp)
                continue
            key = self.keys.partition(decision.tp)
            if key in self._pending_writes:
                continue  # looked at again when it finishes
            rid = self._new_request_id()
            if isinstance(decision, Cleanup):
                command: Command = decision.command(rid, self.keys)
                reason = "cleanup"
            else:
                command = decision.command(rid, self.keys, (guard,))
                reason = decision.reason.value
            self._send(command, _Kind.CONTROLLER_WRITE, now_ms, key=key, reason=reason)
            change = decision if isinstance(decision, PartitionChange) else None
            self._pending_writes[key] = _PendingWrite(rid, now_ms, change=change)
        self._reconciled = (self.metadata.revision, len(self._pending_writes))
        self._reconciled_epoch = controller.epoch
        self._unreconciled = undone

    def _on_result(self, result: CommandResult, now_ms: int) -> None:
        request = self._forget(result.request_id)
        if request is None:
            return  # timed out and forgotten, or not ours
        kind = request.kind
        if kind is _Kind.GRANT:
            if result.ok and result.lease_id is not None and not self._left:
                self._lease_id = result.lease_id
                self._lease_valid_until_ms = request.sent_ms + result.ttl_ms
                self._next_keepalive_ms = now_ms + self.config.heartbeat_interval_ms
            elif result.ok and result.lease_id is not None:
                self._send(RevokeLease(self._new_request_id(), result.lease_id), _Kind.REVOKE, now_ms)
        elif kind is _Kind.KEEPALIVE:
            if request.lease_id == self._lease_id:
                if result.ok:
                    valid_until_ms = request.sent_ms + result.ttl_ms
                    self._lease_valid_until_ms = max(self._lease_valid_until_ms, valid_until_ms)
                elif result.error is StoreError.LEASE_NOT_FOUND:
                    self._lose_session(now_ms, revoke=False)
        elif kind is _Kind.SNAPSHOT:
            if result.ok:
                if self._watch_id is not None:
                    self._send(
                        CancelWatch(self._new_request_id(), self._watch_id), _Kind.CANCEL_WATCH, now_ms
                    )
                self.metadata = ClusterMetadata.from_kvs(result.kvs, result.revision, self.keys)
                self.synced = True
                self._reconciled = None
                watch = Watch(self._new_request_id(), self.keys.prefix, result.revision + 1)
                self._watch_id = watch.request_id
                self._send(watch, _Kind.WATCH, now_ms)
        elif kind is _Kind.WATCH:
            if not result.ok and result.request_id == self._watch_id:
                self._resync()
        elif kind is _Kind.CONTROLLER_WRITE:
            assert request.key is not None
            pending = self._pending_writes.get(request.key)
            if pending is not None and pending.request_id == result.request_id:
                # Decide again once the view has caught up with what the store answered: the
                # write itself, or the writes that made its compares fail. Deciding earlier
                # would only repeat the refused write.
                if result.ok:
                    pending.applied_revision = result.revision
                    if request.reason is not None:
                        self.controller_changes[request.reason] += 1
                    if pending.change is not None:
                        _log_change(self.broker_id, pending.change, result.revision)
                else:
                    pending.applied_revision = max((kv.mod_revision for kv in result.kvs), default=0)
                    if pending.applied_revision <= self.metadata.revision:
                        self._release_write(request.key)
        elif kind is _Kind.ISR_CHANGE:
            assert request.tp is not None
            if self._isr_changes.get(request.tp) == result.request_id:
                del self._isr_changes[request.tp]
            self._results.append(result)
        elif kind is _Kind.USER:
            self._results.append(result)
        # REGISTER, UPDATE_REGISTRATION, CAMPAIGN, RESIGN, CLUSTER_ID, REVOKE, CANCEL_WATCH: the
        # watch shows what happened; a refusal or an unknown outcome is decided again from it.

    def _release_write(self, key: str) -> None:
        """A controller write is settled (or given up): its partition is decided again."""
        del self._pending_writes[key]
        parsed = self.keys.parse(key)
        if parsed is not None and parsed.kind is KeyKind.PARTITION and self._unreconciled is not None:
            self._unreconciled.add(parsed.tp)

    def _apply(self, events: list[WatchEvent]) -> None:
        """The view after `events`; what they touched is looked at by the next controller run."""
        before = self.metadata
        self.metadata = before.apply(events)
        if self._unreconciled is not None:
            scope = reconcile_scope(before, self.metadata)
            if scope is None:
                self._unreconciled = None
            else:
                self._unreconciled |= scope

    def _expire_pending(self, now_ms: int) -> None:
        timeout = self.config.request_timeout_ms
        for key, pending in list(self._pending_writes.items()):
            seen = pending.applied_revision > 0 and self.metadata.revision >= pending.applied_revision
            if seen or now_ms >= pending.sent_ms + timeout:
                self._release_write(key)
                self._forget(pending.request_id)
        for rid, request in list(self._inflight.items()):
            if request.kind is _Kind.CONTROLLER_WRITE or now_ms < request.sent_ms + timeout:
                continue
            # Unanswered: treat it as lost (its kind may be sent again) and tell the broker
            # that the outcome of its own request is unknown.
            self._forget(rid)
            if request.kind is _Kind.ISR_CHANGE and request.tp is not None:
                self._isr_changes.pop(request.tp, None)
            if request.kind in (_Kind.ISR_CHANGE, _Kind.USER):
                self._results.append(CommandResult(rid, False, error=StoreError.UNAVAILABLE))
            if request.kind is _Kind.WATCH and rid == self._watch_id:
                self._resync()

    def _recheck(self, tps: set[TopicPartition]) -> None:
        """The next controller run decides `tps` again, though the view did not change."""
        if self._unreconciled is not None:
            self._unreconciled |= tps
        if self._reconciled is not None:
            self._reconciled = (self._reconciled[0], -1)  # never equal to a real run's

    def _lose_session(self, now_ms: int, *, revoke: bool) -> None:
        old = self._lease_id
        self._lease_id = None
        self._reconciled = None
        self._resumed.clear()  # a new incarnation: the controller decides every partition
        self._pending_writes.clear()
        for rid in [r for r, req in self._inflight.items() if req.kind in _SESSION_KINDS]:
            self._forget(rid)
        if revoke and old is not None:
            self._send(RevokeLease(self._new_request_id(), old), _Kind.REVOKE, now_ms)

    def _resync(self) -> None:
        self.synced = False
        self._reconciled = None

    # --- plumbing --------------------------------------------------------------------------------

    def _new_request_id(self) -> int:
        rid = self._next_request_id
        self._next_request_id += 1
        return rid

    def _in_flight(self, kind: _Kind) -> bool:
        return self._inflight_kinds[kind] > 0

    def _forget(self, request_id: int) -> _Request | None:
        request = self._inflight.pop(request_id, None)
        if request is not None:
            self._inflight_kinds[request.kind] -= 1
        return request

    def _send(
        self, command: Command, kind: _Kind, now_ms: int, *, lease_id: int | None = None,
        key: str | None = None, tp: TopicPartition | None = None, reason: str | None = None,
    ) -> None:
        self._inflight[command.request_id] = _Request(kind, now_ms, lease_id=lease_id, key=key, tp=tp,
                                                      reason=reason)
        self._inflight_kinds[kind] += 1
        self._outbox.append(command)

    def _send_user(self, command: Command, now_ms: int) -> int:
        self._send(command, _Kind.USER, now_ms)
        return command.request_id
