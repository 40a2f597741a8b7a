"""Fetch (key 1): serve whole batches as file ranges, to consumers below HW (or LSO) and to
followers up to LEO; long-poll if short.

The handler resolves each partition's position to file ranges (no bytes are copied here);
the shell sends them with sendfile. If fewer than `min_bytes` are available and the request
allows waiting, a DelayedFetch parks on the partitions and is retried when one of them
changes (an append, a HW move, a leadership change, a deletion), or answered with what is
there at `max_wait_ms`. Limits: `max_bytes` for the response and `partition_max_bytes` per
partition, except that the first batch is always returned whole so a consumer cannot get
stuck (KIP-74).

Fetch sessions (KIP-227, v7+; `replication/fetch_sessions.py`): session epoch -1 is a full,
sessionless fetch as before; epoch 0 opens a session; a later epoch is an incremental fetch
that names only the partitions whose request changed and covers every partition of the
session, and its answer leaves out the partitions with nothing new (no records, no error, HW,
LSO and log start unchanged). A session error (FETCH_SESSION_ID_NOT_FOUND,
INVALID_FETCH_SESSION_EPOCH) is the top-level error of an answer without partitions.

Fetching from the closest replica (KIP-392, `replication/read_replica.py`): a consumer's
fetch of v11+ may be served by any replica, the leader or a follower, each up to its own HW
(LSO); with `replica.selector.class` set to the rack-aware selector, the leader answers a
consumer that names its rack with the preferred read replica (no records, at once) when an
in-sync follower in that rack holds the fetch offset. Older versions and followers' fetches
are served by the leader only (NOT_LEADER_OR_FOLLOWER elsewhere). A request naming an older
leader epoch gets FENCED_LEADER_EPOCH, a newer one UNKNOWN_LEADER_EPOCH (KIP-320, rule 10).
Consumers never see an offset >= HW of the replica that serves them (rule 3); a follower's HW
is the leader's as of its last fetch, so never ahead of it.

isolation_level read_committed (KIP-98): the upper bound is the LSO, not HW (rule 3), and
the partition's `aborted_transactions` lists (producer id, first offset) of every aborted
transaction that overlaps what is returned, from the segments' aborted-transaction indexes;
the consumer skips those producers' records up to their ABORT markers. Every response
carries the real LSO. The long poll wakes on every HW move, which is also when the LSO moves
(a marker's transaction stays unstable until HW passes the marker).

A follower's fetch (replica id >= 0: `replica_id` before v15, `replica_state` from v15 with
the follower's broker epoch, KIP-903) is checked once, when it arrives (Kafka's
Partition.fetchRecords): with an authorizer, the sender needs CLUSTER_ACTION; the replica must
be assigned the partition and the fetch must carry its registered broker epoch, so that no
client can pose as an in-sync follower and move HW (`_replica_refusal`); its last fetched
epoch is checked against this leader's leader-epoch cache; if
its log diverges, the answer is `diverging_epoch` = (the largest epoch <= its epoch that this
leader has, where that epoch ends here) and no records, and the fetch offset is not taken as its
LEO (KIP-595 style; the follower truncates and fetches again, rule 11). Otherwise its fetch
offset is its LEO: the leader records it, which may move HW (completing acks=all produces) and
may add the follower to the ISR (rule 9). It then reads up to LEO and long-polls like a
consumer.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ackly.broker.authz_rules import check
from ackly.broker.context import RequestContext
from ackly.broker.faults import SERVE_ABOVE_HW
from ackly.config import RACK_AWARE_REPLICA_SELECTOR
from ackly.errors import ErrorCode, KafkaError
from ackly.log.leader_epoch import UNDEFINED_EPOCH_OFFSET
from ackly.protocol.fetch_codec import FetchPartitionData, encode_fetch_response
from ackly.replication.fetch_sessions import CachedPartition, FetchContext, PartitionKey, new_context
from ackly.replication.partition import check_leader_epoch
from ackly.replication.purgatory import DelayedOperation
from ackly.replication.read_replica import preferred_read_replica
from ackly.types import TopicPartition

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode
    from ackly.replication.partition import Partition

API_KEY = 1
MIN_VERSION = 4  # record batch v2; librdkafka needs v4
MAX_VERSION = 16

READ_COMMITTED = 1
NO_REPLICA = -1

__all__ = ["API_KEY", "MAX_VERSION", "MIN_VERSION", "READ_COMMITTED", "check_leader_epoch", "handle"]


@dataclass
class _Want:
    key: str | uuid.UUID  # what the response is keyed by: name, or topic id (v13+)
    topic: str | None  # None: unknown topic id
    partition: int
    fetch_offset: int
    current_leader_epoch: int
    partition_max_bytes: int
    last_fetched_epoch: int = -1
    # Decided when the request arrived (a follower's divergence or error): answered as is.
    settled: FetchPartitionData | None = None


class DelayedFetch(DelayedOperation):
    def __init__(
        self, node: BrokerNode, ctx: RequestContext, wants: list[_Want],
        min_bytes: int, max_bytes: int, isolation_level: int, deadline_ms: int,
        replica_id: int = NO_REPLICA, session: FetchContext | None = None,
        follower_reads: bool = False,
    ) -> None:
        super().__init__(deadline_ms)
        self.node = node
        self.ctx = ctx
        self.wants = wants
        self.min_bytes = min_bytes
        self.max_bytes = max_bytes
        self.isolation_level = isolation_level
        self.replica_id = replica_id
        self.session = session if session is not None else FetchContext()
        # A consumer's fetch v11+ (KIP-392): a follower may serve it.
        self.follower_reads = follower_reads

    def _read_all(self) -> tuple[list[tuple[str | uuid.UUID, list[FetchPartitionData]]], int, bool]:
        topics: dict[str | uuid.UUID, list[FetchPartitionData]] = {}
        total = 0
        errored = False
        for w in self.wants:
            data = w.settled if w.settled is not None else self._read_one(w, total)
            if data.error_code or data.diverging_epoch is not None or data.preferred_read_replica >= 0:
                errored = True  # answered at once
            total += sum(len(r) if isinstance(r, bytes) else r.size for r in data.records)
            topics.setdefault(w.key, []).append(data)
        return list(topics.items()), total, errored

    def _read_one(self, w: _Want, total_so_far: int) -> FetchPartitionData:
        if w.topic is None:
            return FetchPartitionData(w.partition, error_code=ErrorCode.unknown_topic_id)
        try:
            if self.follower_reads:
                p = self.node.replica_for_reads(w.topic, w.partition, w.current_leader_epoch)
            else:
                p = self.node.leader_partition(w.topic, w.partition, w.current_leader_epoch)
            hw = p.high_watermark
            lso = p.last_stable_offset
            if self.replica_id != NO_REPLICA or self.node.faults.enabled(SERVE_ABOVE_HW):
                upper = p.log_end_offset  # followers copy everything; the fault serves it to all
            else:
                upper = lso if self.isolation_level == READ_COMMITTED else hw
            data = FetchPartitionData(
                w.partition, high_watermark=hw, last_stable_offset=lso,
                log_start_offset=p.log_start_offset,
                aborted_transactions=[] if self.isolation_level == READ_COMMITTED else None,
            )
            if w.fetch_offset < p.log_start_offset or w.fetch_offset > p.log_end_offset:
                raise KafkaError(ErrorCode.offset_out_of_range)
            budget = min(w.partition_max_bytes, self.max_bytes - total_so_far)
            if w.fetch_offset < upper and (budget > 0 or total_so_far == 0):
                result = p.log.read(
                    w.fetch_offset, max(budget, 0), upper, min_one_batch=total_so_far == 0
                )
                data.records = result.ranges
                if self.isolation_level == READ_COMMITTED and result.ranges:
                    # The consumer drops the records of these producers from each one's first
                    # offset up to its ABORT marker (KIP-98; Kafka's
                    # LocalLog.collectAbortedTransactions, bounded here by the LSO rather
                    # than by the end of the returned batches: a later entry is ignored).
                    data.aborted_transactions = [
                        (t.producer_id, t.first_offset)
                        for t in p.log.collect_aborted_transactions(w.fetch_offset, upper)
                    ]
            return data
        except KafkaError as exc:
            return _error(self.node, w, exc.code)

    def try_complete(self, now_ms: int) -> bool:
        topics, total, errored = self._read_all()
        if total >= self.min_bytes or errored or now_ms >= self.deadline_ms:
            self._answer(topics, now_ms)
            return True
        return False

    def on_expire(self, now_ms: int) -> None:
        topics, _, _ = self._read_all()
        self._answer(topics, now_ms)

    def _select(self, topics: list[tuple[str | uuid.UUID, list[FetchPartitionData]]],
                ) -> list[tuple[str | uuid.UUID, list[FetchPartitionData]]]:
        """The partitions this answer names: all of them, except in an incremental fetch
        (module docstring); records what the session was told."""
        session = self.session
        if session.session is None:
            return topics
        selected = []
        for key, parts in topics:
            kept = [
                d for d in parts
                if session.include(
                    (key, d.partition_index),
                    bool(d.error_code) or d.diverging_epoch is not None or d.preferred_read_replica >= 0,
                    bool(d.records), d.high_watermark, d.last_stable_offset, d.log_start_offset,
                )
            ]
            if kept:
                selected.append((key, kept))
        return selected

    def _answer(self, topics: list[tuple[str | uuid.UUID, list[FetchPartitionData]]], now_ms: int) -> None:
        ctx = self.ctx
        topics = self._select(topics)
        session_id = self.session.session_id
        self._count(topics)
        if ctx.on_response is not None:
            # Encoded below without a kio response: show the shell the partitions' errors.
            ctx.on_response(ctx.header.api_key, _Answered(tuple(d for _, parts in topics for d in parts)))
        pieces = encode_fetch_response(ctx.api_version, ctx.header.correlation_id, topics,
                                       throttle_time_ms=ctx.throttle_time_ms, session_id=session_id)
        if self.replica_id == NO_REPLICA and self.node.quotas.has_quotas():
            # consumer_byte_rate (KIP-219): Kafka records the response's size when it is sent
            # and answers with the throttle time; followers are not under client quotas.
            size = sum(len(p) if isinstance(p, (bytes, bytearray)) else p.size for p in pieces)
            throttle_ms = self.node.quotas.record_fetch(ctx.principal, ctx.header.client_id or "", size, now_ms)
            if throttle_ms > ctx.throttle_time_ms:
                ctx.throttle_time_ms = throttle_ms
                pieces = encode_fetch_response(ctx.api_version, ctx.header.correlation_id, topics,
                                               throttle_time_ms=throttle_ms, session_id=session_id)
        ctx.send(pieces)


    def _count(self, topics: list[tuple[str | uuid.UUID, list[FetchPartitionData]]]) -> None:
        """Bytes out: Kafka's BytesOutPerSec per topic for consumers, ReplicationBytesOutPerSec
        for followers."""
        stats = self.node.stats
        for key, parts in topics:
            size = sum(len(r) if isinstance(r, bytes) else r.size for d in parts for r in d.records)
            if not size:
                continue
            if self.replica_id != NO_REPLICA:
                stats.replication_bytes_out += size
                continue
            state = self.node.topics_by_id.get(key) if isinstance(key, uuid.UUID) else self.node.topics.get(key)
            if state is not None:
                stats.topic(state.name).bytes_out += size


@dataclass(frozen=True, slots=True)
class _Answered:
    """The partitions of a fetch answer, for RequestContext.on_response."""

    partitions: tuple[FetchPartitionData, ...]


def _error(node: BrokerNode, w: _Want, code: ErrorCode) -> FetchPartitionData:
    data = FetchPartitionData(w.partition, error_code=code)
    if code == ErrorCode.offset_out_of_range and w.topic is not None:
        # A follower below the leader's log start restarts its log there (follower.py).
        try:
            p = node.partition(w.topic, w.partition)
            data.log_start_offset = p.log_start_offset
            data.high_watermark = p.high_watermark
        except KafkaError:
            pass
    return data


def _settle_replica_fetch(node: BrokerNode, w: _Want, replica_id: int, replica_epoch: int,
                          now_ms: int) -> None:
    """A follower's fetch of one partition, when it arrives: check the leader epoch and the
    follower's log against ours; record its LEO. Sets w.settled when the answer is decided."""
    if w.topic is None:
        w.settled = FetchPartitionData(w.partition, error_code=ErrorCode.unknown_topic_id)
        return
    try:
        p = node.leader_partition(w.topic, w.partition, w.current_leader_epoch)
    except KafkaError as exc:
        w.settled = _error(node, w, exc.code)
        return
    refusal = _replica_refusal(node, p, w, replica_id, replica_epoch)
    if refusal is not None:
        w.settled = FetchPartitionData(w.partition, error_code=refusal)
        return
    diverging = _divergence(p, w.last_fetched_epoch, w.fetch_offset)
    if diverging is not None:
        w.settled = FetchPartitionData(
            w.partition, high_watermark=p.high_watermark, last_stable_offset=p.last_stable_offset,
            log_start_offset=p.log_start_offset, diverging_epoch=diverging,
        )
        return
    if w.fetch_offset < p.log_start_offset:
        w.settled = _error(node, w, ErrorCode.offset_out_of_range)
        return
    node.replicas.on_follower_fetch(p, replica_id, replica_epoch, w.fetch_offset, now_ms)


def _settle_preferred_replica(node: BrokerNode, w: _Want, client_rack: str, now_ms: int) -> None:
    """A consumer's fetch that names its rack, when it arrives at the leader: if an in-sync
    follower in that rack should serve it (read_replica.py), answer with that replica and no
    records (Kafka answers such a partition at once, without waiting for min_bytes)."""
    if w.topic is None:
        return
    try:
        p = node.leader_partition(w.topic, w.partition, w.current_leader_epoch)
    except KafkaError:
        return  # a follower serves it, or _read_one answers the error
    brokers = node.metadata.brokers

    def rack_of(broker_id: int) -> str | None:
        info = brokers.get(broker_id)
        return info.rack if info is not None else None

    preferred = preferred_read_replica(p, client_rack, w.fetch_offset, rack_of, now_ms)
    if preferred is not None:
        w.settled = FetchPartitionData(
            w.partition, high_watermark=p.high_watermark, last_stable_offset=p.last_stable_offset,
            log_start_offset=p.log_start_offset, preferred_read_replica=preferred,
        )


def _replica_refusal(node: BrokerNode, p: Partition, w: _Want, replica_id: int,
                     replica_epoch: int) -> ErrorCode | None:
    """Whether a fetch naming `replica_id` may count as that follower's progress: the broker must
    be one of the partition's replicas (else UNKNOWN_LEADER_EPOCH when the request names the
    leader epoch, NOT_LEADER_OR_FOLLOWER otherwise: Kafka's Partition.followerReplicaOrThrow)
    and the fetch must carry its current broker epoch, the create revision of its registration
    (KIP-903). Kafka refuses only an epoch older than the registered one (NOT_LEADER_OR_FOLLOWER,
    Replica.updateFetchStateOrThrow) and takes -1 from old versions; ackly's followers always
    send Fetch v15 with their epoch, so anything but the registered epoch is refused the same
    way: a fetch that is not from that incarnation of that broker never moves HW or the ISR."""
    if replica_id not in p.replicas:
        if w.current_leader_epoch >= 0:
            return ErrorCode.unknown_leader_epoch
        return ErrorCode.not_leader_or_follower
    info = node.metadata.brokers.get(replica_id)
    if info is None or replica_epoch < 0 or info.epoch != replica_epoch:
        return ErrorCode.not_leader_or_follower
    return None


def _divergence(p: Partition, last_fetched_epoch: int, fetch_offset: int) -> tuple[int, int] | None:
    """(epoch, end offset) if the follower's log diverges from ours below fetch_offset."""
    leo = p.log_end_offset
    if last_fetched_epoch < 0:
        # A follower with no epoch (an empty log): only an offset past our end diverges.
        if fetch_offset > leo:
            latest = p.log.leader_epochs.latest_epoch
            return (latest if latest is not None else -1, leo)
        return None
    epoch, end_offset = p.log.leader_epochs.end_offset_for(last_fetched_epoch, leo)
    if end_offset == UNDEFINED_EPOCH_OFFSET:
        return None  # we know no epoch to compare with (cannot happen for a leader)
    if end_offset < fetch_offset or epoch < last_fetched_epoch:
        return (epoch, end_offset)
    return None


def replica_of(request: Any, version: int) -> tuple[int, int]:
    """(replica id, broker epoch) of a follower's fetch; (-1, -1) for a consumer."""
    if version >= 15:
        state = request.replica_state
        return int(state.replica_id), int(state.replica_epoch)
    return int(getattr(request, "replica_id", NO_REPLICA)), -1


def _requested(request: Any, by_id: bool) -> dict[PartitionKey, CachedPartition]:
    requested: dict[PartitionKey, CachedPartition] = {}
    for t in request.topics:
        key: str | uuid.UUID = t.topic_id if by_id else t.topic
        for fp in t.partitions:
            requested[(key, int(fp.partition))] = CachedPartition(
                fetch_offset=int(fp.fetch_offset),
                current_leader_epoch=int(getattr(fp, "current_leader_epoch", -1)),
                last_fetched_epoch=int(getattr(fp, "last_fetched_epoch", -1)),
                partition_max_bytes=int(fp.partition_max_bytes),
            )
    return requested


def _forgotten(request: Any, by_id: bool) -> list[PartitionKey]:
    return [
        (t.topic_id if by_id else t.topic, int(index))
        for t in request.forgotten_topics_data for index in t.partitions
    ]


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    by_id = ctx.api_version >= 13
    replica_id, replica_epoch = replica_of(request, ctx.api_version)
    requested = _requested(request, by_id)
    session = FetchContext()
    if ctx.api_version >= 7:
        session = new_context(
            node.fetch_sessions, int(request.session_id), int(request.session_epoch), replica_id,
            requested, _forgotten(request, by_id), ctx.now_ms,
        )
        if session.error != ErrorCode.none:
            if ctx.on_response is not None:
                ctx.on_response(ctx.header.api_key, _Answered(()))
            ctx.send(encode_fetch_response(ctx.api_version, ctx.header.correlation_id, [],
                                           throttle_time_ms=ctx.throttle_time_ms,
                                           error_code=int(session.error)))
            return
        if session.incremental and session.session is not None:
            requested = session.session.partitions  # every partition of the session
    # authz_rules: a follower's fetch needs CLUSTER_ACTION, a consumer's READ on each topic;
    # either refusal is TOPIC_AUTHORIZATION_FAILED per partition (Kafka's handleFetchRequest).
    follower_denied = check(node, ctx, API_KEY, "follower") if replica_id != NO_REPLICA else None
    names: dict[str | uuid.UUID, tuple[str | None, ErrorCode | None]] = {}
    wants: list[_Want] = []
    for (key, index), cp in requested.items():
        resolved = names.get(key)
        if resolved is None:
            if isinstance(key, uuid.UUID):
                state = node.topics_by_id.get(key)
                name = state.name if state is not None else None
            else:
                name = key
            denied = follower_denied
            if replica_id == NO_REPLICA and name is not None:
                denied = check(node, ctx, API_KEY, "consumer", name)
            resolved = names[key] = (name, denied)
        name, denied = resolved
        w = _Want(
            key=key, topic=name, partition=index, fetch_offset=cp.fetch_offset,
            current_leader_epoch=cp.current_leader_epoch, partition_max_bytes=cp.partition_max_bytes,
            last_fetched_epoch=cp.last_fetched_epoch,
        )
        if denied is not None and name is not None:
            w.settled = FetchPartitionData(w.partition, error_code=denied)
        wants.append(w)
    if replica_id != NO_REPLICA:
        for w in wants:
            if w.settled is None:
                _settle_replica_fetch(node, w, replica_id, replica_epoch, ctx.now_ms)
    follower_reads = replica_id == NO_REPLICA and ctx.api_version >= 11
    client_rack = str(getattr(request, "rack_id", "") or "") if follower_reads else ""
    if client_rack and node.config.get("replica.selector.class") == RACK_AWARE_REPLICA_SELECTOR:
        for w in wants:
            if w.settled is None:
                _settle_preferred_replica(node, w, client_rack, ctx.now_ms)
    max_wait_ms = int(request.max_wait.total_seconds() * 1000)
    max_bytes = min(int(request.max_bytes), int(node.config.get("fetch.max.bytes")))
    op = DelayedFetch(
        node, ctx, wants, min_bytes=max(int(request.min_bytes), 0), max_bytes=max_bytes,
        isolation_level=int(getattr(request, "isolation_level", 0)),
        deadline_ms=ctx.now_ms + max(max_wait_ms, 0), replica_id=replica_id, session=session,
        follower_reads=follower_reads,
    )
    keys = {TopicPartition(w.topic, w.partition) for w in wants if w.topic is not None}
    node.purgatory.try_or_watch(op, keys, ctx.now_ms)
