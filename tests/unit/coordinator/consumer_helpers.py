"""Consumers of the KIP-848 protocol driven against a coordinator Harness: each remembers its
member id, epoch and the partitions it owns, and applies each answer the way a client does
(owns exactly the assignment it was last given)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from ackly.coordinator.consumer_group import HeartbeatRequest, HeartbeatResult, TopicsView
from ackly.coordinator.consumer_group_records import Assignment
from ackly.errors import ErrorCode

from .helpers import Box, Harness

GROUP = "cg"


def topic_id(name: str) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_DNS, name)


def view(counts: dict[str, int]) -> TopicsView:
    return TopicsView({name: (topic_id(name), n) for name, n in counts.items()})


@dataclass
class Consumer:
    member_id: str
    topics: tuple[str, ...]
    instance_id: str | None = None
    assignor: str | None = None
    epoch: int = 0
    owned: Assignment = field(default_factory=dict)
    last: HeartbeatResult | None = None
    resend: bool = False  # the subscription changed: send it in the next heartbeat
    regex: str | None = None

    def request(self, full: bool) -> HeartbeatRequest:
        return HeartbeatRequest(
            member_id=self.member_id, member_epoch=self.epoch, instance_id=self.instance_id,
            rebalance_timeout_ms=60_000 if full else -1,
            subscribed_topic_names=self.topics if full else None,
            subscribed_topic_regex=self.regex if full else None,
            server_assignor=self.assignor if full else None,
            owned=dict(self.owned), client_id="c", client_host="/127.0.0.1")


def heartbeat(h: Harness, c: Consumer, topics: TopicsView, *, epoch: int | None = None,
              group_id: str = GROUP) -> HeartbeatResult:
    """One heartbeat, answered (the logs commit at once); the consumer applies the answer."""
    if epoch is not None:
        c.epoch = epoch
    req = c.request(full=c.epoch == 0 or c.resend)
    box = Box()
    h.coordinator.consumer_group_heartbeat(group_id, req, topics, box, h.now_ms)
    h.settle()
    result = box.value
    assert isinstance(result, HeartbeatResult), result
    c.last = result
    if result.error is ErrorCode.none:
        c.resend = False
        c.epoch = result.member_epoch
        if result.assignment is not None:
            c.owned = dict(result.assignment)
    elif result.error in (ErrorCode.fenced_member_epoch, ErrorCode.unknown_member_id):
        c.epoch, c.owned = 0, {}  # the client drops its partitions and rejoins
    return result


def owned_by(consumers: list[Consumer]) -> dict[tuple[uuid.UUID, int], str]:
    out: dict[tuple[uuid.UUID, int], str] = {}
    for c in consumers:
        for t, ps in c.owned.items():
            for p in ps:
                assert (t, p) not in out, f"{(t, p)} owned by {out[(t, p)]} and {c.member_id}"
                out[(t, p)] = c.member_id
    return out
