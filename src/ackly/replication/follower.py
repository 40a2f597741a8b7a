"""The follower's side of replication: what to fetch, from whom, and how to truncate.

Owns (Kafka's ReplicaFetcherManager + AbstractFetcherThread, as a state machine without I/O):
one fetch *session* per leader broker, holding every partition this broker follows from that
leader, with at most one Fetch in flight per session; and, for each partition in a response,
the decision to append, truncate, or wait.

What a follower sends: Fetch v15 (topics by id) with replica_state = (this broker's id, its
broker epoch, KIP-903), and per partition its LEO as fetch_offset, the epoch of its last
batch as last_fetched_epoch, and the leader epoch it believes current (KIP-320). The leader
checks last_fetched_epoch against its own leader-epoch cache; if the logs diverge it answers
with diverging_epoch = (the largest epoch it has <= ours, where that epoch ends in its log),
KIP-595 style, and does not count our fetch offset as our LEO.

How it truncates (rule 11: by leader epoch, never by its own HW; Kafka's
AbstractFetcherThread.getOffsetTruncationState): with the leader's (epoch E, end offset O),
look E up in the local cache: if the follower has E too, truncate to min(O, where E ends
locally); if the follower's largest epoch <= E is another one, truncate to where that one ends
locally (an intermediate step: the next fetch carries the lower epoch and the leader answers
again); if the follower knows no epoch <= E, truncate to min(O, LEO). Each step lowers LEO or
ends the divergence, so the exchange converges; afterwards the follower's log is a prefix of
the leader's, byte for byte, because it only ever appends the leader's batches as they are.

A follower that fell below the leader's log start (OFFSET_OUT_OF_RANGE with the leader's log
start above our LEO) restarts its log empty there (Kafka's truncateFullyAndStartAt).

Fetch sessions (KIP-227; Kafka's FetchSessionHandler): each leader session opens a session
at the leader with a full fetch (session epoch 0) and then sends incremental fetches that name
only the partitions whose fetch parameters changed since the last answered fetch (a follower
caught up on an idle partition names nothing), and forget the partitions it no longer
fetches from that leader; the leader answers only partitions with something new. An answer
FETCH_SESSION_ID_NOT_FOUND (the leader restarted, or evicted it) starts over with a new
session; INVALID_FETCH_SESSION_EPOCH, a failed request, or any other top-level error closes
the session and opens a new one with the next full fetch. A leader that has no room answers
session id 0: the follower keeps sending full fetches, asking for a session each time.

Durability (rule 13): under flush.policy=always a session does not send its next fetch while
one of its partitions has appended data that is not yet flushed: the fetch offset is what the
leader counts toward HW, so it must be durable. Under every policy a session does not send
its next fetch while one of its partitions has a truncation whose fsyncs are still owed
(`PartitionLog.cut_durable`): they run in the broker's sync pool, off the event loop, and
nothing is appended after a cut before the cut is durable.

Deterministic: no clock (`now_ms` in), no I/O. Request ids come from the broker.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ackly.errors import ErrorCode, KafkaError
from ackly.log.leader_epoch import UNDEFINED_EPOCH, LeaderEpochCache
from ackly.protocol.messages import build_request
from ackly.protocol.records import validate_batches
from ackly.replication.fetch_sessions import INITIAL_EPOCH, INVALID_SESSION_ID, next_epoch
from ackly.replication.partition import Partition
from ackly.types import TopicPartition

log = logging.getLogger("ackly.replication")

FETCH_KEY = 1
FETCH_VERSION = 15  # topic ids, replica_state with the broker epoch (KIP-903)
# A response may hold a batch up to the leader's max.message.bytes; a broker never refuses
# its leader's batches for size.
_NO_SIZE_LIMIT = 2**31 - 1


@dataclass(frozen=True)
class FetcherConfig:
    """Kafka's replica.fetch.* broker configs."""

    max_wait_ms: int = 500  # replica.fetch.wait.max.ms
    min_bytes: int = 1  # replica.fetch.min.bytes
    partition_max_bytes: int = 1_048_576  # replica.fetch.max.bytes
    response_max_bytes: int = 10_485_760  # replica.fetch.response.max.bytes
    backoff_ms: int = 1_000  # replica.fetch.backoff.ms
    request_timeout_ms: int = 30_000  # replica.socket.timeout.ms: forget an unanswered fetch


def truncation_offset(cache: LeaderEpochCache, log_end_offset: int, leader_epoch: int,
                      leader_end_offset: int) -> tuple[int, bool]:
    """Where to truncate after the leader answered (epoch, end offset) for our last fetched
    epoch; and whether that ends the divergence (False: an intermediate step)."""
    if leader_end_offset < 0:
        # The leader knows no epoch <= ours: nothing of ours can be checked. Keep the log (Kafka
        # falls back to HW here only for pre-KIP-101 leaders, which do not exist here).
        return log_end_offset, True
    local_epoch, local_end = cache.end_offset_for(leader_epoch, log_end_offset)
    if local_epoch == UNDEFINED_EPOCH or local_end < 0:
        return min(leader_end_offset, log_end_offset), True
    if local_epoch != leader_epoch:
        return min(local_end, log_end_offset), False
    return min(local_end, leader_end_offset, log_end_offset), True


@dataclass
class _Followed:
    tp: TopicPartition
    topic_id: uuid.UUID
    leader_id: int
    leader_epoch: int
    retry_at_ms: int = 0  # after a partition-level error


_SessionKey = tuple[uuid.UUID, int]  # (topic id, partition) as the leader's session holds it
_Params = tuple[int, int, int, int, int]  # the fetch parameters of one partition, as sent


@dataclass
class _InFlight:
    request_id: int
    sent_ms: int
    # tp -> (leader epoch, fetch offset) as sent: a response applies only if both still hold.
    sent: dict[TopicPartition, tuple[int, int]]
    # What the leader's session holds once this fetch is answered.
    session_holds: dict[_SessionKey, _Params] = field(default_factory=dict)


@dataclass
class _LeaderSession:
    """This follower's view of its fetch session at one leader (FetchSessionHandler)."""

    session_id: int = INVALID_SESSION_ID
    epoch: int = INITIAL_EPOCH  # the epoch of the next request: 0 asks for a (new) session
    holds: dict[_SessionKey, _Params] = field(default_factory=dict)

    def reset(self, keep_id: bool) -> None:
        """The next fetch is full: it closes the session (if `keep_id`) and opens a new one."""
        if not keep_id:
            self.session_id = INVALID_SESSION_ID
        self.epoch = INITIAL_EPOCH
        self.holds = {}


@dataclass
class _Session:
    leader_id: int
    partitions: set[TopicPartition] = field(default_factory=set)
    inflight: _InFlight | None = None
    retry_at_ms: int = 0  # after a failed request


@dataclass
class FetchOutcome:
    """What one response did, for the broker to act on (flush scheduling, waking waiters)."""

    appended: list[Partition] = field(default_factory=list)
    truncated: list[Partition] = field(default_factory=list)
    hw_moved: list[Partition] = field(default_factory=list)
    log_start_moved: list[Partition] = field(default_factory=list)


class ReplicaFetcher:
    def __init__(
        self,
        broker_id: int,
        config: FetcherConfig,
        partition_of: Callable[[TopicPartition], Partition | None],
        new_request_id: Callable[[], int],
    ) -> None:
        self.broker_id = broker_id
        self.config = config
        self._partition_of = partition_of
        self._new_request_id = new_request_id
        self.broker_epoch = -1
        self._followed: dict[TopicPartition, _Followed] = {}
        self._sessions: dict[int, _Session] = {}
        self._by_request: dict[int, int] = {}  # request id -> leader id
        # Outlives _sessions (emptied when no partition is followed from a leader), so that a
        # leader's session is reused or closed rather than left to be evicted.
        self._leader_sessions: dict[int, _LeaderSession] = {}
        self._polled_ms = 0  # deadlines at or before the last poll wait for another input

    # --- what to follow -------------------------------------------------------------------

    def follow(self, tp: TopicPartition, topic_id: uuid.UUID, leader_id: int, leader_epoch: int) -> None:
        """Fetch tp from leader_id in leader_epoch (replacing whatever was followed before)."""
        self.unfollow(tp)
        self._followed[tp] = _Followed(tp, topic_id, leader_id, leader_epoch)
        self._sessions.setdefault(leader_id, _Session(leader_id)).partitions.add(tp)

    def unfollow(self, tp: TopicPartition) -> None:
        followed = self._followed.pop(tp, None)
        if followed is None:
            return
        session = self._sessions.get(followed.leader_id)
        if session is not None:
            session.partitions.discard(tp)
            if not session.partitions and session.inflight is None:
                del self._sessions[followed.leader_id]

    def following(self, tp: TopicPartition) -> int | None:
        followed = self._followed.get(tp)
        return None if followed is None else followed.leader_id

    def leaders(self) -> list[int]:
        return sorted(self._sessions)

    # --- requests out ---------------------------------------------------------------------

    def poll(self, now_ms: int, can_reach: Callable[[int], bool]) -> list[tuple[int, int, Any]]:
        """Fetches to send now: (request id, leader id, kio FetchRequest)."""
        out = []
        self._polled_ms = now_ms
        for leader_id, session in sorted(self._sessions.items()):
            if session.inflight is not None:
                if now_ms - session.inflight.sent_ms < self.config.max_wait_ms + self.config.request_timeout_ms:
                    continue
                log.info("fetch %d to broker %d unanswered; sending again", session.inflight.request_id,
                            leader_id)
                self._by_request.pop(session.inflight.request_id, None)
                session.inflight = None
                # The leader may have taken that fetch's epoch: start over with a full fetch
                # (an answer to the old one, should it come, is ignored).
                self._leader_session(leader_id).reset(keep_id=True)
            if now_ms < session.retry_at_ms or not session.partitions:
                continue
            if not can_reach(leader_id):
                session.retry_at_ms = now_ms + self.config.backoff_ms  # not registered (yet)
                continue
            built = self._build(session, now_ms)
            if built is not None:
                out.append((built[0], leader_id, built[1]))
        return out

    def _build(self, session: _Session, now_ms: int) -> tuple[int, Any] | None:
        wanted: dict[_SessionKey, _Params] = {}
        sent: dict[TopicPartition, tuple[int, int]] = {}
        for tp in sorted(session.partitions):
            followed = self._followed[tp]
            p = self._partition_of(tp)
            if p is None or now_ms < followed.retry_at_ms:
                continue
            if p.durable_end_offset < p.log_end_offset:
                # Rule 13: the fetch offset counts toward HW, so it must be flushed first. The
                # session waits for the flush (one group commit) rather than leave tp out, so
                # that a session's fetches keep reporting every partition in step.
                return None
            if not p.log.cut_durable:
                # Its truncation's fsyncs run in the next flush round: nothing is appended
                # after the cut before it is durable (module docstring).
                return None
            latest = p.log.leader_epochs.latest_epoch
            wanted[(followed.topic_id, tp.partition)] = (
                followed.leader_epoch, p.log_end_offset, latest if latest is not None else -1,
                p.log_start_offset, self.config.partition_max_bytes,
            )
            sent[tp] = (followed.leader_epoch, p.log_end_offset)
        if not sent:
            return None
        ls = self._leader_sessions.setdefault(session.leader_id, _LeaderSession())
        full = ls.session_id == INVALID_SESSION_ID or ls.epoch == INITIAL_EPOCH
        topics: dict[uuid.UUID, list[dict[str, Any]]] = {}
        for (topic_id, index), params in wanted.items():
            if full or ls.holds.get((topic_id, index)) != params:
                leader_epoch, fetch_offset, last_fetched_epoch, log_start_offset, max_bytes = params
                topics.setdefault(topic_id, []).append({
                    "partition": index,
                    "current_leader_epoch": leader_epoch,
                    "fetch_offset": fetch_offset,
                    "last_fetched_epoch": last_fetched_epoch,
                    "log_start_offset": log_start_offset,
                    "partition_max_bytes": max_bytes,
                })
        forgotten: dict[uuid.UUID, list[int]] = {}
        if not full:
            for topic_id, index in ls.holds.keys() - wanted.keys():
                forgotten.setdefault(topic_id, []).append(index)
        request = build_request(FETCH_KEY, FETCH_VERSION, {
            "replica_state": {"replica_id": self.broker_id, "replica_epoch": self.broker_epoch},
            "max_wait": self.config.max_wait_ms,
            "min_bytes": self.config.min_bytes,
            "max_bytes": self.config.response_max_bytes,
            "isolation_level": 0,
            "session_id": ls.session_id,
            "session_epoch": INITIAL_EPOCH if full else ls.epoch,
            "topics": [{"topic_id": tid, "partitions": parts} for tid, parts in topics.items()],
            "forgotten_topics_data": [
                {"topic_id": tid, "partitions": sorted(parts)} for tid, parts in forgotten.items()
            ],
            "rack_id": "",
        })
        request_id = self._new_request_id()
        session.inflight = _InFlight(request_id, now_ms, sent, wanted)
        self._by_request[request_id] = session.leader_id
        return request_id, request

    def next_deadline_ms(self) -> int | None:
        """The next time `poll` may have something new to send. Deadlines already passed at the
        last poll are left out: what blocks them (a flush) comes back as an input."""
        deadlines = []
        for session in self._sessions.values():
            if session.inflight is not None:
                deadlines.append(
                    session.inflight.sent_ms + self.config.max_wait_ms + self.config.request_timeout_ms
                )
                continue
            if not session.partitions:
                continue
            deadlines.append(session.retry_at_ms)
            deadlines.extend(self._followed[tp].retry_at_ms for tp in session.partitions)
        return min((d for d in deadlines if d > self._polled_ms), default=None)

    # --- answers in ---------------------------------------------------------------------

    def owns(self, request_id: int) -> bool:
        return request_id in self._by_request

    def on_failure(self, request_id: int, now_ms: int) -> None:
        """The fetch was not answered (connection failed, closed, or timed out): back off."""
        taken = self._take(request_id)
        if taken is not None:
            taken[0].retry_at_ms = now_ms + self.config.backoff_ms
            self._leader_session(taken[0].leader_id).reset(keep_id=True)

    def on_response(self, request_id: int, response: Any, now_ms: int) -> FetchOutcome:
        outcome = FetchOutcome()
        taken = self._take(request_id)
        if taken is None:
            return outcome
        session, inflight = taken
        inflight_sent = inflight.sent
        ls = self._leader_session(session.leader_id)
        code = ErrorCode(int(response.error_code))
        if code in (ErrorCode.fetch_session_id_not_found, ErrorCode.invalid_fetch_session_epoch):
            # Not a failure of the leader: the next fetch, at once, is full and opens a session.
            log.info("fetch session %d at broker %d: %s; opening a new one", ls.session_id,
                     session.leader_id, code.name)
            ls.reset(keep_id=code == ErrorCode.invalid_fetch_session_epoch)
            return outcome
        if code != ErrorCode.none:
            log.info("fetch from broker %d failed: %s", session.leader_id, code.name)
            session.retry_at_ms = now_ms + self.config.backoff_ms
            ls.reset(keep_id=True)
            return outcome
        self._session_answered(ls, inflight, int(response.session_id))
        names = {f.topic_id: f.tp.topic for f in self._followed.values()}
        for topic in response.responses:
            name = names.get(topic.topic_id)
            if name is None:
                continue
            for data in topic.partitions:
                tp = TopicPartition(name, int(data.partition_index))
                followed = self._followed.get(tp)
                sent = inflight_sent.get(tp)
                p = self._partition_of(tp)
                if followed is None or sent is None or p is None or followed.leader_id != session.leader_id:
                    continue  # no longer followed from this leader
                if sent != (followed.leader_epoch, p.log_end_offset):
                    continue  # the epoch moved on, or the log changed since: this answer is stale
                self._apply(followed, p, data, now_ms, outcome)
        return outcome

    def _leader_session(self, leader_id: int) -> _LeaderSession:
        return self._leader_sessions.setdefault(leader_id, _LeaderSession())

    @staticmethod
    def _session_answered(ls: _LeaderSession, inflight: _InFlight, session_id: int) -> None:
        if ls.epoch == INITIAL_EPOCH or ls.session_id == INVALID_SESSION_ID:
            ls.session_id = session_id  # 0: the leader had no room; ask again next time
            ls.epoch = INITIAL_EPOCH if session_id == INVALID_SESSION_ID else next_epoch(INITIAL_EPOCH)
        elif session_id != ls.session_id:
            ls.reset(keep_id=False)  # cannot happen with a correct leader: start over
            return
        else:
            ls.epoch = next_epoch(ls.epoch)
        ls.holds = inflight.session_holds if ls.epoch != INITIAL_EPOCH else {}

    def _take(self, request_id: int) -> tuple[_Session, _InFlight] | None:
        """The session whose fetch this was and what it sent; None if forgotten."""
        leader_id = self._by_request.pop(request_id, None)
        if leader_id is None:
            return None
        session = self._sessions.get(leader_id)
        if session is None or session.inflight is None or session.inflight.request_id != request_id:
            return None
        inflight = session.inflight
        session.inflight = None
        if not session.partitions:
            del self._sessions[leader_id]
        return session, inflight

    def _apply(self, followed: _Followed, p: Partition, data: Any, now_ms: int, outcome: FetchOutcome) -> None:
        code = ErrorCode(int(data.error_code))
        if code == ErrorCode.offset_out_of_range:
            leader_start = int(data.log_start_offset)
            if leader_start > p.log_end_offset:
                log.warning("%s: LEO %d below the leader's log start %d; restarting the log there",
                            p.tp, p.log_end_offset, leader_start)
                p.log.truncate_fully_and_start_at(leader_start)
                outcome.truncated.append(p)
                return
            followed.retry_at_ms = now_ms + self.config.backoff_ms
            return
        if code != ErrorCode.none:
            # NOT_LEADER_OR_FOLLOWER, FENCED/UNKNOWN_LEADER_EPOCH, UNKNOWN_TOPIC_ID...: the leader
            # and this broker do not agree on the metadata yet. Try again a little later; a
            # metadata change moves the partition to another session meanwhile.
            log.debug("%s: fetch from %d answered %s", p.tp, followed.leader_id, code.name)
            followed.retry_at_ms = now_ms + self.config.backoff_ms
            return
        diverging = data.diverging_epoch
        if int(diverging.end_offset) >= 0 or int(diverging.epoch) >= 0:
            offset, _ = truncation_offset(
                p.log.leader_epochs, p.log_end_offset, int(diverging.epoch), int(diverging.end_offset)
            )
            log.info("%s: truncating %d -> %d (leader %d: epoch %d ends at %d)", p.tp, p.log_end_offset,
                     offset, followed.leader_id, int(diverging.epoch), int(diverging.end_offset))
            # At LEO too: that drops an epoch this replica assigned as leader and never wrote
            # in, which is what made the leader answer a divergence.
            p.log.truncate_to(offset)
            outcome.truncated.append(p)
            return
        records = data.records
        if records:
            try:
                headers = validate_batches(records, _NO_SIZE_LIMIT, allow_empty=True)
            except KafkaError as exc:
                log.error("%s: corrupt batch from leader %d: %s", p.tp, followed.leader_id, exc)
                followed.retry_at_ms = now_ms + self.config.backoff_ms
                return
            # Above LEO only where the leader's compacted log has a hole (Kafka's
            # appendAsFollower takes any first offset at or above LEO).
            if headers[0].base_offset < p.log_end_offset:
                log.error("%s: leader %d sent a batch at %d for fetch offset %d", p.tp, followed.leader_id,
                          headers[0].base_offset, p.log_end_offset)
                followed.retry_at_ms = now_ms + self.config.backoff_ms
                return
            p.append_as_follower(bytearray(records), headers, now_ms)
            outcome.appended.append(p)
        if p.update_follower_high_watermark(int(data.high_watermark)):
            outcome.hw_moved.append(p)
        leader_start = int(data.log_start_offset)
        if p.log_start_offset < leader_start <= p.high_watermark:
            # Retention and DeleteRecords reach followers this way (Kafka's
            # maybeIncrementLogStartOffset on the follower).
            p.log.delete_records_before(leader_start)
            outcome.log_start_moved.append(p)
