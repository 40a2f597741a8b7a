"""Topic changes made through the cluster metadata, each answered once it has taken effect.

Owns: CreateTopics, DeleteTopics, CreatePartitions, AlterConfigs, ACL changes,
AlterUserScramCredentials and AlterClientQuotas as this broker asks them of the metadata store through its ClusterMember
(the controller places replicas and creates the partition states), and the wait for their outcome.
An operation is answered:
- at once, with the planner's error, if it cannot be placed (INVALID_REPLICATION_FACTOR, ...);
- with TOPIC_ALREADY_EXISTS if its create-if-absent lost (COMPARE_FAILED), or REQUEST_TIMED_OUT
  if the store's answer is unknown (UNAVAILABLE) or never came: the change may still happen,
  and the client retries;
- with success once this broker's view shows the change: the write's revision, and for new
  partitions their states, written by the controller right after. If the controller is slow
  the answer goes out at the operation's deadline anyway (the topic does exist), as Kafka
  answers once the records are committed, before every broker has seen them.

In single-broker mode the store is in-process and every step happens before the request's
handler returns, so the answer is immediate; in a cluster it comes with the store's round trips.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ackly.cluster.metadata import ClusterMetadata
from ackly.cluster.store import CommandResult, StoreError
from ackly.errors import ErrorCode, KafkaError

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

log = logging.getLogger("ackly.admin")

Done = Callable[[ErrorCode, str | None], None]
DEFAULT_TIMEOUT_MS = 30_000  # for requests that carry no timeout of their own (AlterConfigs)


@dataclass
class _Op:
    kind: str  # create, delete, partitions, configs, catch-up, acl, scram, quota
    topic: str
    deadline_ms: int
    done: Done
    partitions: int = 0  # create, partitions: how many the topic must show
    request_id: int = -1
    revision: int = 0  # the write's revision, once the store answered ok
    finished: bool = False

    def shown_in(self, metadata: ClusterMetadata) -> bool:
        if self.revision == 0 or metadata.revision < self.revision:
            return False
        if self.kind in ("create", "partitions"):
            return sum(1 for _ in metadata.partitions_of(self.topic)) >= self.partitions
        return True


class AdminOps:
    def __init__(self, node: BrokerNode) -> None:
        self.node = node
        self._ops: list[_Op] = []
        self._by_request: dict[int, _Op] = {}

    def _ready(self, op: _Op) -> bool:
        member = self.node.member
        if member.synced and member.registration() is not None:
            return True
        self._finish(op, ErrorCode.request_timed_out, "this broker has not joined the cluster yet")
        return False

    def _start(self, op: _Op, send: Callable[[], int | None]) -> None:
        if not self._ready(op):
            return
        try:
            request_id = send()
        except KafkaError as exc:
            self._finish(op, exc.code, exc.message or None)
            return
        if request_id is None:
            self._finish(op, ErrorCode.unknown_topic_or_partition, f"topic {op.topic!r} does not exist")
            return
        op.request_id = request_id
        self._by_request[request_id] = op
        self._ops.append(op)

    # --- operations ------------------------------------------------------------------------

    def create_topic(
        self, name: str, partitions: int, replication_factor: int, configs: dict[str, str],
        assignment: list[tuple[int, ...]] | None, now_ms: int, timeout_ms: int, done: Done,
    ) -> None:
        count = len(assignment) if assignment else partitions
        op = _Op("create", name, now_ms + timeout_ms, done, partitions=count)
        member = self.node.member
        self._start(op, lambda: member.create_topic(
            name, partitions, replication_factor, now_ms, configs=configs, assignment=assignment,
        ))

    def delete_topic(self, name: str, now_ms: int, timeout_ms: int, done: Done) -> None:
        op = _Op("delete", name, now_ms + timeout_ms, done)
        self._start(op, lambda: self.node.member.delete_topic(name, now_ms))

    def create_partitions(self, name: str, total: int, now_ms: int, timeout_ms: int, done: Done) -> None:
        op = _Op("partitions", name, now_ms + timeout_ms, done, partitions=total)
        self._start(op, lambda: self.node.member.create_partitions(name, total, now_ms))

    def alter_configs(self, name: str, configs: dict[str, str], now_ms: int, timeout_ms: int,
                      done: Done) -> None:
        op = _Op("configs", name, now_ms + timeout_ms, done)
        self._start(op, lambda: self.node.member.alter_topic_configs(name, configs, now_ms))

    def acl_change(self, send: Callable[[], int], now_ms: int, timeout_ms: int, done: Done) -> None:
        """One ACL write (ClusterMember.put_acl / delete_acl), answered once the view shows it."""
        op = _Op("acl", "", now_ms + timeout_ms, done)
        self._start(op, send)

    def write_scram(self, user: str, send: Callable[[], int], now_ms: int, timeout_ms: int, done: Done) -> None:
        """One SCRAM credential write (member.put_scram_credential or delete_scram_credential),
        answered once this broker's view holds it: the next SaslAuthenticate here sees it."""
        op = _Op("scram", user, now_ms + timeout_ms, done)
        self._start(op, send)

    def write_quota(self, send: Callable[[], int], now_ms: int, timeout_ms: int, done: Done) -> None:
        """One client-quota entity's write (member.put_client_quotas or delete_client_quotas),
        answered once this broker's view holds it: its next request is measured against it."""
        op = _Op("quota", "", now_ms + timeout_ms, done)
        self._start(op, send)

    def catch_up(self, now_ms: int, timeout_ms: int, done: Done) -> None:
        """`done` once this broker's view holds every write the store had made when asked (a
        read barrier, ClusterMember.read_revision), or at the deadline, or when the store
        cannot say (REQUEST_TIMED_OUT). Asked before refusing a request for something the view
        lacks (too few brokers for a replication factor): the view may trail the store by a
        watch event, and Kafka refuses only what its controller, the authority, lacks."""
        op = _Op("catch-up", "", now_ms + timeout_ms, done)
        self._start(op, lambda: self.node.member.read_revision(now_ms))

    # --- outcomes ----------------------------------------------------------------------------

    def on_results(self, results: list[CommandResult]) -> None:
        for result in results:
            op = self._by_request.pop(result.request_id, None)
            if op is None or op.finished:
                continue
            if result.ok:
                op.revision = max(result.revision, 1)
                continue
            if result.error is StoreError.COMPARE_FAILED and op.kind not in ("scram", "quota"):
                if op.kind == "create":
                    self._finish(op, ErrorCode.topic_already_exists, f"topic {op.topic!r} already exists")
                elif op.topic not in self.node.member.metadata.topics:
                    self._finish(op, ErrorCode.unknown_topic_or_partition, f"topic {op.topic!r} does not exist")
                else:
                    self._finish(op, ErrorCode.request_timed_out,
                                 f"topic {op.topic!r} changed meanwhile; try again")
            else:
                self._finish(op, ErrorCode.request_timed_out,
                             f"the metadata store did not confirm the change ({result.error})")

    def check(self, now_ms: int) -> None:
        """Answer the operations the view now shows, and those past their deadline."""
        if not self._ops:
            return
        metadata = self.node.member.metadata
        for op in list(self._ops):
            if op.finished:
                continue
            if op.shown_in(metadata):
                self._finish(op, ErrorCode.none, None)
            elif now_ms >= op.deadline_ms:
                if op.revision and op.kind == "catch-up":
                    self._finish(op, ErrorCode.request_timed_out, "the view did not catch up in time")
                elif op.revision:
                    log.warning("%s of %s: written, not yet shown by the metadata; answering", op.kind, op.topic)
                    self._finish(op, ErrorCode.none, None)
                else:
                    self._finish(op, ErrorCode.request_timed_out, "no answer from the metadata store")
        self._ops = [op for op in self._ops if not op.finished]

    def next_deadline_ms(self) -> int | None:
        return min((op.deadline_ms for op in self._ops if not op.finished), default=None)

    def _finish(self, op: _Op, code: ErrorCode, message: str | None) -> None:
        if op.finished:
            return
        op.finished = True
        self._by_request.pop(op.request_id, None)
        op.done(code, message)


class Countdown:
    """Runs `then` once `count` operations have reported (at once when count is 0): how a
    handler with several topics answers after the last one's outcome."""

    def __init__(self, count: int, then: Callable[[], None]) -> None:
        self._left = count
        self._then = then
        if count == 0:
            then()

    def one_done(self) -> None:
        assert self._left > 0, "more outcomes than operations"
        self._left -= 1
        if self._left == 0:
            self._then()
