"""The transaction coordinator inside one broker: its configuration, `__transaction_state`,
markers, and KIP-890 verification for the produce path.

The coordinator (coordinator/transaction_coordinator.py) knows nothing of topics, requests or
peers. `TransactionsBroker` builds it from the broker config, creates `__transaction_state`
when a client first looks a transactional id up (as Kafka does on FindCoordinator), loads a
shard when this broker becomes leader of one of its partitions (coordinator epoch = that
leader epoch) and drops it when leadership goes, hands committed decisions to the marker
channel (broker/txn_marker_channel.py), and answers `verify_partitions` for the produce path,
locally or by AddPartitionsToTxn v4 (verify_only) to the coordinator's broker; for a
transaction version 2 client it adds the partitions instead (v5, not verify_only).

It runs after every input to the node (`poll`): decisions handed over again after a failed
decision write, committed decisions, markers and Complete records due, in that order, until
nothing changes (bounded), so a decision never waits for a timer that is not set.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ackly.broker.context import RequestContext
from ackly.broker.groups import (
    PartitionShardLog,
    PurgatoryScheduler,
    Respond,
    create_internal_topic,
    internal_replication_factor,
    key_leader,
)
from ackly.broker.io import PeerRequest
from ackly.broker.txn_marker_channel import TXN_CHANNEL, MarkerChannel
from ackly.broker.verified_appends import VerifiedAppends
from ackly.cluster.metadata import BrokerInfo
from ackly.config import BrokerConfig
from ackly.coordinator.transaction_coordinator import TRANSACTION_STATE_TOPIC, TransactionCoordinator
from ackly.coordinator.transaction_metadata import TV_2
from ackly.coordinator.transaction_state import TxnConfig
from ackly.errors import ErrorCode
from ackly.protocol.messages import build_request
from ackly.replication.partition import Partition
from ackly.types import TopicPartition

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

log = logging.getLogger("ackly.transactions")

ADD_PARTITIONS_TO_TXN_KEY = 24
VERIFY_VERSION = 4
ADD_VERSION = 5  # a broker adds partitions for a transaction version 2 client (KIP-890 part 2)
_MAX_POLL_ROUNDS = 100

VerifyDone = Callable[[dict[TopicPartition, ErrorCode]], None]

# KIP-588: PRODUCER_FENCED is answered from AddPartitionsToTxn, AddOffsetsToTxn and EndTxn v2;
# older versions get INVALID_PRODUCER_EPOCH.
_FENCED_ERROR_FROM_VERSION = 2


def fenced_for_version(code: ErrorCode, api_version: int) -> ErrorCode:
    """`code` as AddPartitionsToTxn, AddOffsetsToTxn and EndTxn of `api_version` answer it."""
    if code == ErrorCode.producer_fenced and api_version < _FENCED_ERROR_FROM_VERSION:
        return ErrorCode.invalid_producer_epoch
    return code


def start_error_code_request(node: BrokerNode, ctx: RequestContext,
                             denied: ErrorCode | None = None) -> Respond[ErrorCode] | None:
    """The waiter of a transaction coordinator request whose response is one error code
    (AddOffsetsToTxn, EndTxn); None once answered: `denied` (the authorizer's refusal, which
    comes first as in Kafka) or NOT_COORDINATOR while the coordinator's state is not loaded."""
    def fields(code: ErrorCode) -> dict[str, Any]:
        return {"error_code": fenced_for_version(code, ctx.api_version)}

    waiter: Respond[ErrorCode] = Respond(ctx, fields, fields)
    if denied is not None:
        waiter.fail(denied)
        return None
    if not node.transactions.coordinator.loaded:
        waiter.fail(ErrorCode.not_coordinator)
        return None
    return waiter


class _AddAnswer:
    """The coordinator's one code for an implicit add, as a code per partition."""

    def __init__(self, partitions: tuple[TopicPartition, ...], done: VerifyDone) -> None:
        self.partitions = partitions
        self.done = done

    def complete(self, result: ErrorCode) -> None:
        self.done(dict.fromkeys(self.partitions, result))

    def fail(self, code: ErrorCode) -> None:
        self.complete(code)


def txn_config(config: BrokerConfig) -> TxnConfig:
    return TxnConfig(
        max_timeout_ms=int(config.get("transaction.max.timeout.ms")),
        id_expiration_ms=int(config.get("transactional.id.expiration.ms")),
        abort_check_interval_ms=int(config.get("transaction.abort.timed.out.transaction.cleanup.interval.ms")),
        remove_expired_interval_ms=int(config.get("transaction.remove.expired.transaction.cleanup.interval.ms")),
    )


class TransactionsBroker:
    def __init__(self, node: BrokerNode, now_ms: int) -> None:
        self.node = node
        self.coordinator = TransactionCoordinator(
            config=replace(txn_config(node.config), wall_clock=node.wall_clock),
            scheduler=PurgatoryScheduler(node.purgatory),
            write_timeout_ms=int(node.config.get("request.timeout.ms")),
            new_producer_id=node.producer_ids.generate,
        )
        self.markers = MarkerChannel(node, self.coordinator)
        self._verifications: dict[int, tuple[tuple[TopicPartition, ...], VerifyDone]] = {}
        # The produce path's requests waiting behind a verification, per producer.
        self.verified_appends = VerifiedAppends()
        self._out: list[PeerRequest] = []

    # --- the internal topic and its shards -------------------------------------------------

    def on_partition_leadership(self, p: Partition, leader: bool, now_ms: int) -> None:
        if p.tp.topic != TRANSACTION_STATE_TOPIC:
            return
        state = self.node.topics.get(TRANSACTION_STATE_TOPIC)
        if leader and state is not None:
            if not self.coordinator.loaded:
                self.coordinator.set_partition_count(state.partition_count)
            shard_log = PartitionShardLog(p, self.node.after_append)
            # In slices run by the tick; its ids answer COORDINATOR_LOAD_IN_PROGRESS meanwhile.
            self.coordinator.load_shard(p.tp.partition, shard_log, p.leader_epoch, now_ms,
                                        at_once=False)
        else:
            self.coordinator.unload_shard(p.tp.partition)

    def ensure_topic(self, now_ms: int) -> TransactionCoordinator:
        """Create `__transaction_state` if needed, with transaction.state.log.replication.factor
        replicas (`internal_replication_factor`); raises KafkaError(COORDINATOR_NOT_AVAILABLE)
        while it does not exist yet or too few brokers are alive (clients retry
        FindCoordinator)."""
        node = self.node
        if TRANSACTION_STATE_TOPIC not in node.topics:
            replicas = internal_replication_factor(node, TRANSACTION_STATE_TOPIC,
                                                   "transaction.state.log.replication.factor")
            # Capped by the replicas: a lone broker's one replica (internal_replication_factor).
            min_isr = min(int(node.config.get("transaction.state.log.min.isr")), replicas)
            create_internal_topic(
                node, TRANSACTION_STATE_TOPIC, int(node.config.get("transaction.state.log.num.partitions")),
                replicas, {
                    # One record per transactional id wins: compaction (log/cleaner.py) keeps
                    # the log bounded by the live transactional ids.
                    "cleanup.policy": "compact",
                    "min.insync.replicas": str(min_isr),
                    "segment.bytes": str(node.config.get("transaction.state.log.segment.bytes")),
                    "unclean.leader.election.enable": "false",
                }, int(node.config.get("request.timeout.ms")), now_ms,
            )
        if not self.coordinator.loaded:
            self.coordinator.set_partition_count(node.topics[TRANSACTION_STATE_TOPIC].partition_count)
        return self.coordinator

    def coordinator_of(self, transactional_id: str) -> BrokerInfo | None:
        """The broker coordinating `transactional_id`: the leader of its partition."""
        return key_leader(self.node, TRANSACTION_STATE_TOPIC, transactional_id)

    # --- KIP-890: verification (part 1) and implicit adds (part 2) for the produce path --------

    def verify_partitions(self, transactional_id: str, producer_id: int, producer_epoch: int,
                          partitions: Sequence[TopicPartition], now_ms: int, done: VerifyDone,
                          *, add: bool = False) -> None:
        """Is each partition in this producer's ongoing transaction? With `add` (a transaction
        version 2 client's Produce v12 or TxnOffsetCommit v5, which send no
        AddPartitionsToTxn): add them to it, as Kafka's AddPartitionsToTxnManager has the
        coordinator do. `done` gets a code per partition, at once or once the coordinator
        (its record committed, or its broker's answer) has answered."""
        parts = tuple(partitions)
        if self.coordinator.loaded and self.coordinator.here(transactional_id):
            if add:
                self.coordinator.add_partitions(transactional_id, producer_id, producer_epoch, parts,
                                                _AddAnswer(parts, done), now_ms, transaction_version=TV_2)
                return
            done(self.coordinator.verify_partitions(transactional_id, producer_id, producer_epoch, parts))
            return
        broker = self.coordinator_of(transactional_id)
        if broker is None:
            done(dict.fromkeys(parts, ErrorCode.coordinator_not_available))
            return
        if broker.broker_id == self.node.broker_id:
            # Leader here, shard not loaded (still loading, or not any more).
            done(dict.fromkeys(parts, self.coordinator.not_here(transactional_id)
                               or ErrorCode.not_coordinator))
            return
        topics: dict[str, list[int]] = {}
        for tp in parts:
            topics.setdefault(tp.topic, []).append(tp.partition)
        request = build_request(ADD_PARTITIONS_TO_TXN_KEY, ADD_VERSION if add else VERIFY_VERSION, {"transactions": [{
            "transactional_id": transactional_id, "producer_id": producer_id,
            "producer_epoch": producer_epoch, "verify_only": not add,
            "topics": [{"name": t, "partitions": ids} for t, ids in topics.items()],
        }]})
        request_id = self.node.new_request_id()
        self._verifications[request_id] = (parts, done)
        self._out.append(PeerRequest(request_id, broker.broker_id, request, channel=TXN_CHANNEL))

    def _on_verify_response(self, request_id: int, response: Any) -> None:
        parts, done = self._verifications.pop(request_id)
        top = ErrorCode(getattr(response, "error_code", ErrorCode.none))
        codes: dict[TopicPartition, ErrorCode] = {}
        for txn in getattr(response, "results_by_transaction", ()):
            for topic in txn.topic_results:
                for part in topic.results_by_partition:
                    codes[TopicPartition(topic.name, int(part.partition_index))] = ErrorCode(part.partition_error_code)
        fallback = top if top != ErrorCode.none else ErrorCode.unknown_server_error
        done({tp: codes.get(tp, fallback) for tp in parts})

    # --- peer requests ---------------------------------------------------------------------

    def owns(self, request_id: int) -> bool:
        return request_id in self._verifications or self.markers.owns(request_id)

    def on_peer_response(self, request_id: int, response: Any, now_ms: int) -> None:
        if request_id in self._verifications:
            self._on_verify_response(request_id, response)
        else:
            self.markers.on_response(request_id, response, now_ms)

    def on_peer_failure(self, request_id: int, reason: str, now_ms: int) -> None:
        if request_id in self._verifications:
            parts, done = self._verifications.pop(request_id)
            log.info("verification request %d failed: %s", request_id, reason)
            done(dict.fromkeys(parts, ErrorCode.coordinator_not_available))
        else:
            self.markers.on_failure(request_id, reason, now_ms)

    # --- time and progress -----------------------------------------------------------------

    def poll(self, now_ms: int, out: list[PeerRequest]) -> None:
        """After every input: hand over again the decisions of shards whose decision write
        failed, take committed decisions, send the markers that are due, write Complete
        records."""
        coordinator = self.coordinator
        for _ in range(_MAX_POLL_ROUNDS):
            for index in coordinator.take_retries():
                coordinator.resend_decisions(index, now_ms)
            decisions = coordinator.take_decisions()
            for decision in decisions:
                self.markers.add(decision)
            before = len(self.markers)
            self.markers.poll(now_ms, out)
            if not decisions and len(self.markers) == before:
                break
        out.extend(self._out)
        self._out.clear()

    def tick(self, now_ms: int) -> None:
        self.coordinator.tick(now_ms)

    def next_deadline_ms(self) -> int | None:
        deadlines = [d for d in (self.coordinator.next_deadline_ms(), self.markers.next_deadline_ms())
                     if d is not None]
        return min(deadlines) if deadlines else None
