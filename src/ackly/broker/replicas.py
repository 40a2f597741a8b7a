"""The partitions this broker hosts, kept in step with the cluster metadata (Kafka's
ReplicaManager acting on a MetadataDelta).

Owns: which partition replicas are open here and in which role, the follower fetcher, and the
leader's side of the ISR protocol. After every change of the member's metadata view the broker
calls `apply(before, after)`; for each partition whose state changed:
- not assigned here (any more), or its topic was deleted or re-created: stop it and delete its
  log;
- assigned here and led by this broker: lead it (Partition.make_leader: a new epoch is
  assigned in the leader-epoch cache at LEO; waiting fetches and produces are re-checked); a
  RECOVERING partition (after an unclean election, KIP-704) is marked RECOVERED at once: there
  is no tiered storage to wait for. A state written before this broker registered names an
  earlier incarnation: it waits for the controller's new epoch, unless it resumes that
  leadership after a clean stop (ClusterMember's resumed leadership: it leads once registered);
- assigned here and led by another broker (or none): follow it from the new leader in the new
  epoch. Nothing is truncated now: the first fetch finds the divergence (rule 11).

ISR changes (rule 9, KIP-497, KIP-903): the leader asks the controller through the cluster
member (`alter_partition`, one change in flight per partition), expanding when a follower's
fetch shows it caught up (LEO >= HW and >= the epoch's start), shrinking when a follower has
not caught up for replica.lag.time.max.ms (checked every half of it, as Kafka's
isr-expiration task). While a change is in flight HW uses the union of the old and new ISR.
A refused change is dropped; one whose outcome is unknown (UNAVAILABLE) is kept and sent again
until the metadata settles it.

Every partition directory holds `partition.metadata` (KIP-516: "version: 0\\ntopic_id: <uuid>\\n"),
so a log left by an earlier topic of the same name is never mistaken for the new one's.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ackly.broker.faults import FORGET_PRODUCER_STATE
from ackly.broker.io import PeerRequest
from ackly.cluster.controller import AlterPartitionRequest
from ackly.cluster.metadata import NO_LEADER, ClusterMetadata, LeaderRecoveryState, PartitionState
from ackly.cluster.store import CommandResult, StoreError
from ackly.log.log_dir import CleanLogState, RecoveryCheckpoint
from ackly.log.partition_log import PartitionLog, move_away
from ackly.replication.follower import FetcherConfig, ReplicaFetcher
from ackly.replication.partition import Partition
from ackly.types import TopicPartition

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

log = logging.getLogger("ackly.replicas")


def _fields(p: Partition) -> dict[str, object]:
    """A partition's identity and epochs, as the `extra` fields of its log lines."""
    return {"topic": p.tp.topic, "partition": p.tp.partition, "leader_epoch": p.leader_epoch,
            "partition_epoch": p.partition_epoch, "isr": sorted(p.isr)}


PARTITION_METADATA_FILE = "partition.metadata"


def fetcher_config(node: BrokerNode) -> FetcherConfig:
    c = node.config
    return FetcherConfig(
        max_wait_ms=int(c.get("replica.fetch.wait.max.ms")),
        partition_max_bytes=int(c.get("replica.fetch.max.bytes")),
        response_max_bytes=int(c.get("replica.fetch.response.max.bytes")),
        backoff_ms=int(c.get("replica.fetch.backoff.ms")),
        request_timeout_ms=int(c.get("replica.socket.timeout.ms")),
    )


class ReplicaManager:
    def __init__(self, node: BrokerNode, now_ms: int) -> None:
        self.node = node
        self.broker_id = node.broker_id
        self.partitions: dict[TopicPartition, Partition] = {}
        self.topic_ids: dict[TopicPartition, uuid.UUID] = {}
        self.fetcher = ReplicaFetcher(
            node.broker_id, fetcher_config(node), self.partitions.get, node.new_request_id
        )
        self.lag_max_ms = int(node.config.get("replica.lag.time.max.ms"))
        self._next_isr_check_ms = now_ms + max(self.lag_max_ms // 2, 1)
        self._isr_requests: dict[int, TopicPartition] = {}  # member request id -> partition
        # Partitions whose ISR change the store refused, until a view settles it: only these
        # are looked at on a view change (not every partition, on every one).
        self._refused: set[TopicPartition] = set()

    # --- metadata ------------------------------------------------------------------------

    def apply(self, before: ClusterMetadata, after: ClusterMetadata, now_ms: int,
              recheck_topics: set[str] | None = None) -> None:
        """Act on every partition whose state differs between two views, and on every
        partition of `recheck_topics` (their stored config turned valid or invalid)."""
        changed: set[TopicPartition] = set()
        for tp, _old, state in before.partition_changes(after):
            changed.add(tp)
            self._apply_one(tp, state, after, now_ms)
        member = self.node.member
        if (after.brokers.get(self.broker_id) != before.brokers.get(self.broker_id)
                and member.registration() is not None):
            # Registered: the leaderships it resumes start now (no state of theirs changes).
            for tp in member.resumed_partitions:
                state = after.partitions.get(tp)
                if tp not in changed and tp in self.partitions and state is not None:
                    self._apply_one(tp, state, after, now_ms)
        for topic in sorted(recheck_topics or ()):
            for tp, state in list(after.partitions_of(topic)):
                if tp not in changed:
                    self._apply_one(tp, state, after, now_ms)
        if after.revision != before.revision:
            for tp in sorted(self._refused):
                p = self.partitions.get(tp)
                if p is not None:
                    self._settle_refused(p, now_ms)
                else:
                    self._refused.discard(tp)

    def _apply_one(
        self, tp: TopicPartition, state: PartitionState | None, metadata: ClusterMetadata, now_ms: int
    ) -> None:
        p = self.partitions.get(tp)
        hosted = state is not None and self.broker_id in state.replicas
        if p is not None and (state is None or not hosted or self.topic_ids[tp] != state.topic_id):
            self.stop(tp, now_ms)
            p = None
        if state is None or not hosted:
            return
        topic = self.node.topics.get(tp.topic)
        if topic is not None and topic.config_error is not None:
            if p is not None:  # its config turned invalid: offline, the log kept for a fix
                self.stop(tp, now_ms, delete=False)
            return
        member = self.node.member
        if p is None:
            p, clean = self._open(tp, state.topic_id, now_ms)
            if not clean and member.resumes(tp, state):
                member.forget_resumed(tp, now_ms)  # not as the clean stop left it: elected
        if state.leader == self.broker_id:
            registration = member.registration()
            resumed = member.resumes(tp, state)
            if registration is None and resumed:
                return  # leads once registered (`apply`): no role, no leader, until then
            if registration is None or (registration.epoch > metadata.partition_revision(tp)
                                        and not resumed):
                # The state names an earlier incarnation of this broker as leader (a restart
                # faster than the session timeout). This one may have lost unflushed data: it
                # must not lead until the controller elects it (again) in a new epoch, which it
                # does for every partition a restarted broker led (unless it resumes it after a
                # clean stop: ClusterMember's resumed leadership).
                self._become_follower(p, replace(state, leader=NO_LEADER), now_ms)
                return
            self._become_leader(p, state, now_ms)
        else:
            self._become_follower(p, state, now_ms)

    def _open(self, tp: TopicPartition, topic_id: uuid.UUID, now_ms: int) -> tuple[Partition, bool]:
        """Open tp's replica; also whether its log opened as the last clean stop left it."""
        node = self.node
        disk = node.disk
        dir_path = node.partition_dir(tp)
        marker = f"{dir_path}/{PARTITION_METADATA_FILE}"
        found = _read_topic_id(disk.read_file(marker)) if disk.exists(dir_path) else None
        if found is not None and found != topic_id:
            log.warning("%s: the log on disk belongs to topic id %s, not %s: deleting it", tp, found, topic_id)
            # Renamed away whole (its marker with its segments), removed off the event loop.
            node.remove_deleted_dir(move_away(disk, dir_path), now_ms)
        config = node.topic_config(tp.topic)
        # What the last clean stop recorded of this log (or, after a crash, the last recovery
        # checkpoint), if it is this topic's log.
        recorded = node.log_dir.take(os.path.basename(dir_path))
        if found != topic_id:
            recorded = None
        plog = PartitionLog.open(
            disk, dir_path, config, now_ms,
            producer_id_expiration_ms=int(node.config.get("producer.id.expiration.ms")),
            wall_clock=node.wall_clock,
            clean_state=recorded if isinstance(recorded, CleanLogState) else None,
            recovery=recorded if isinstance(recorded, RecoveryCheckpoint) else None,
        )
        plog.before_truncation = node.log_dir.invalidate
        if found != topic_id:
            # Synced with the log's first flush (no fsync for a new partition): a crash before
            # leaves no marker, and the next open writes it again over a log that can hold
            # nothing but this topic's unflushed records.
            plog.syncs.write_atomic(marker, f"version: 0\ntopic_id: {topic_id}\n".encode())
        if node.faults.enabled(FORGET_PRODUCER_STATE):
            plog.producer_state.clear()
        p = Partition(tp=tp, log=plog, config=config, broker_id=self.broker_id,
                      hw_needs_min_isr=bool(node.config.get("eligible.leader.replicas.enable")))
        self.partitions[tp] = p
        self.topic_ids[tp] = topic_id
        self.node.host_partition(p)
        if plog.needs_flush:
            self.node.schedule_flush(tp)  # what recovery accepted, made durable off the loop
        return p, isinstance(recorded, CleanLogState)

    def stop(self, tp: TopicPartition, now_ms: int, *, delete: bool = True) -> None:
        """Stop hosting tp (its topic was deleted or it moved away): the log is deleted."""
        p = self.partitions.pop(tp)
        self.topic_ids.pop(tp, None)
        self.fetcher.unfollow(tp)
        if p.is_leader:
            self.node.on_leadership_lost(p, now_ms)
        p.stop()  # waiters re-checked below see it gone
        self.node.forget_partition(p)
        if delete:
            doomed = p.log.delete()
            if doomed is not None:
                self.node.remove_deleted_dir(doomed, now_ms)
        else:
            p.log.close()
        self.node.purgatory.check(tp, now_ms)

    def _become_leader(self, p: Partition, state: PartitionState, now_ms: int) -> None:
        isr_before = p.isr if p.is_leader else None
        new_term = p.make_leader(state, now_ms)
        self.fetcher.unfollow(p.tp)
        if not new_term and isr_before is not None:
            self.node.stats.on_isr_change(isr_before, p.isr)
        if new_term:
            self.node.stats.leadership_gained += 1
            log.info("%s: leading in epoch %d (ISR %s, LEO %d, HW %d)", p.tp, p.leader_epoch,
                     sorted(p.isr), p.log_end_offset, p.high_watermark,
                     extra={"event": "leader_change", **_fields(p), "leader": self.broker_id,
                            "log_end_offset": p.log_end_offset, "high_watermark": p.high_watermark})
            if self.node.faults.enabled(FORGET_PRODUCER_STATE):
                p.log.producer_state.clear()
            self.node.on_leadership_gained(p, now_ms)
        elif isr_before is not None and p.isr != isr_before:
            # The leader logs each ISR change once, whoever wrote it (its own AlterPartition
            # or the controller's shrink); Kafka's Partition logs "ISR updated" the same way.
            log.info("%s: ISR now %s (was %s), partition epoch %d", p.tp, sorted(p.isr),
                     sorted(isr_before), p.partition_epoch,
                     extra={"event": "isr_change", **_fields(p), "isr_before": sorted(isr_before)})
        if state.leader_recovery_state is LeaderRecoveryState.RECOVERING and p.pending_isr is None:
            # KIP-704: nothing to recover here (no remote storage): declare it recovered.
            self._alter_isr(p, frozenset({self.broker_id}), {}, now_ms, recovered=True)
        self.node.purgatory.check(p.tp, now_ms)

    def _become_follower(self, p: Partition, state: PartitionState, now_ms: int) -> None:
        was_leader = p.is_leader
        changed = p.make_follower(state)
        if was_leader:
            self.node.on_leadership_lost(p, now_ms)
        if changed:
            fields = {"event": "leader_change", **_fields(p), "leader": state.leader,
                      "log_end_offset": p.log_end_offset}
            if state.leader == NO_LEADER:
                self.fetcher.unfollow(p.tp)
                log.info("%s: no leader in epoch %d", p.tp, state.leader_epoch, extra=fields)
            else:
                self.fetcher.follow(p.tp, state.topic_id, state.leader, state.leader_epoch)
                log.info("%s: following %d in epoch %d (LEO %d)", p.tp, state.leader, state.leader_epoch,
                         p.log_end_offset, extra=fields)
        # A produce waiting for HW, or a fetch, learns that this broker no longer leads.
        self.node.purgatory.check(p.tp, now_ms)

    # --- the leader's side of follower fetches ------------------------------------------------

    def on_follower_fetch(
        self, p: Partition, replica_id: int, broker_epoch: int, fetch_offset: int, now_ms: int
    ) -> None:
        """A follower fetched from fetch_offset (its log is consistent with ours below it)."""
        if p.record_follower_fetch(replica_id, broker_epoch, fetch_offset, now_ms):
            self.node.purgatory.check(p.tp, now_ms)
        new_isr = p.isr_to_expand(replica_id)
        if new_isr is None:
            return
        info = self.node.metadata.brokers.get(replica_id)
        if info is None or info.shutting_down or (broker_epoch >= 0 and info.epoch != broker_epoch):
            return  # not (this incarnation) registered, or leaving: the controller would refuse
        epochs = {replica_id: info.epoch}
        self._alter_isr(p, new_isr, epochs, now_ms)

    def _alter_isr(
        self, p: Partition, new_isr: frozenset[int], broker_epochs: dict[int, int], now_ms: int,
        *, recovered: bool = False,
    ) -> None:
        member = self.node.member
        if member.isr_change_pending(p.tp):
            return
        request = AlterPartitionRequest(
            p.tp, self.broker_id, p.leader_epoch, p.partition_epoch, tuple(sorted(new_isr)),
            leader_recovery_state=LeaderRecoveryState.RECOVERED if recovered or not p.recovering
            else LeaderRecoveryState.RECOVERING,
            broker_epochs=broker_epochs,
        )
        decision = member.alter_partition(request, now_ms)
        if decision.change is None:
            if not decision.accepted:
                log.info("%s: ISR change to %s refused: %s %s", p.tp, sorted(new_isr),
                         decision.error.name, decision.message)
            # Decided on this broker's own (current) view, nothing was sent: a change kept
            # pending for a re-send is settled by that view.
            if p.pending_isr is not None and p.abandon_isr_change():
                self.node.purgatory.check(p.tp, now_ms)
            return
        rid = member.isr_change_request_id(p.tp)
        assert rid is not None
        self._isr_requests[rid] = p.tp
        if p.pending_isr is None:
            p.begin_isr_change(new_isr, broker_epochs)
        log.info("%s: asking for ISR %s (was %s)", p.tp, sorted(new_isr), sorted(p.isr))

    def on_member_results(self, results: list[CommandResult], now_ms: int) -> list[CommandResult]:
        """Take the results of this broker's ISR changes; return the others."""
        rest = []
        for result in results:
            tp = self._isr_requests.pop(result.request_id, None)
            if tp is None:
                rest.append(result)
                continue
            p = self.partitions.get(tp)
            if p is None or p.pending_isr is None:
                continue
            if result.ok:
                # Applied: the view will show it (Partition._set_isr settles it then). Until
                # then it is neither re-sent nor abandoned.
                p.pending_isr.landed_at_revision = result.revision
                continue
            if result.error is StoreError.UNAVAILABLE:
                continue  # unknown: kept, and sent again by the next ISR check
            log.info("%s: ISR change to %s refused by the store (%s) at revision %d", tp,
                     sorted(p.pending_isr.isr), result.error, result.revision)
            # Not abandoned yet: our own earlier send of this change may be what made the
            # compare fail. Dropping its members from the maximal ISR now would let HW pass
            # them while the store may already list them in the ISR, and the controller could
            # elect one of them without those records (Kafka's Partition.
            # handleAlterPartitionError keeps the pending state until new metadata arrives).
            p.pending_isr.refused_at_revision = result.revision
            self._refused.add(tp)
            self._settle_refused(p, now_ms)
        return rest

    def _settle_refused(self, p: Partition, now_ms: int) -> None:
        """Abandon a refused change once the metadata view has reached the refusal's revision
        and still shows the partition epoch it was based on: then the store really kept the
        old ISR. (Had the change landed, the view would show a newer partition epoch and
        Partition._set_isr would have settled it.)"""
        pending = p.pending_isr
        if pending is None or pending.refused_at_revision is None:
            self._refused.discard(p.tp)  # settled otherwise (landed, or a newer change)
            return
        if self.node.member.metadata.revision < pending.refused_at_revision:
            return
        self._refused.discard(p.tp)
        if p.abandon_isr_change():
            self.node.purgatory.check(p.tp, now_ms)

    def check_isr(self, now_ms: int) -> None:
        """Every replica.lag.time.max.ms / 2: shrink ISRs with lagging followers; send again
        changes whose outcome was unknown."""
        if now_ms < self._next_isr_check_ms:
            return
        self._next_isr_check_ms = now_ms + max(self.lag_max_ms // 2, 1)
        member = self.node.member
        for p in list(self.partitions.values()):
            if not p.is_leader:
                continue
            if p.pending_isr is not None:
                self._settle_refused(p, now_ms)
                pending = p.pending_isr
                if pending is not None and pending.refused_at_revision is None \
                        and pending.landed_at_revision is None and not member.isr_change_pending(p.tp):
                    # The outcome was unknown and the metadata has not settled it: ask again,
                    # keeping the change pending (its members still count for HW), from the
                    # same partition epoch, so a write that did land refuses this one.
                    self._alter_isr(p, pending.isr, pending.broker_epochs, now_ms)
                continue
            shrunk = p.isr_to_shrink(now_ms, self.lag_max_ms)
            if shrunk is not None:
                log.info("%s: followers %s out of sync", p.tp, sorted(p.isr - shrunk))
                self._alter_isr(p, shrunk, {}, now_ms)

    # --- the follower's fetches ---------------------------------------------------------------

    def poll_fetcher(self, now_ms: int, out: list[PeerRequest]) -> None:
        epoch = self.node.member.broker_epoch
        self.fetcher.broker_epoch = epoch if epoch is not None else -1
        can_reach = lambda b: self.node.broker_address(b) is not None  # noqa: E731
        for rid, leader_id, request in self.fetcher.poll(now_ms, can_reach):
            out.append(PeerRequest(rid, leader_id, request))

    def on_fetch_response(self, request_id: int, response: Any, now_ms: int) -> None:
        outcome = self.fetcher.on_response(request_id, response, now_ms)
        for p in outcome.appended:
            self.node.after_append(p, now_ms)
        # Consumers reading from this follower (KIP-392) wait for its HW or log start to move.
        for p in (*outcome.truncated, *outcome.hw_moved, *outcome.log_start_moved):
            self.node.purgatory.check(p.tp, now_ms)
        # A cut or a new log start is synced by the next flush round (no fsync here), which
        # the next fetch of a truncated partition waits for.
        for p in (*outcome.truncated, *outcome.log_start_moved):
            self.node.schedule_flush(p.tp)

    def next_deadline_ms(self) -> int | None:
        deadlines = [self._next_isr_check_ms]
        fetch = self.fetcher.next_deadline_ms()
        if fetch is not None:
            deadlines.append(fetch)
        return min(deadlines)


def _read_topic_id(data: bytes | None) -> uuid.UUID | None:
    if data is None:
        return None
    for line in data.decode(errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "topic_id":
            try:
                return uuid.UUID(value.strip())
            except ValueError:
                return None
    return None
