"""What the console asks the cluster through the Kafka protocol: groups, lag, transactions,
and its two writes (create a topic, reset a group's offsets).

A consumer group lives on its coordinator, which may be another broker, and a partition's HW
on its leader: the console therefore asks the cluster as any client would, through
confluent-kafka's AdminClient connected to this broker's own listener (as
`kafka-consumer-groups.sh` does), and the transactions as `ackly transactions` does. Every
function here blocks and is run in the console's worker threads, never on the event loop;
every request has a timeout.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ackly.cli.transactions import Report as TransactionsReport
from ackly.cli.transactions import collect as collect_transactions

REQUEST_TIMEOUT_S = 8.0
log = logging.getLogger("ackly.console")


class ConsoleError(Exception):
    """A request the cluster refused or did not answer: its message is shown on the page."""


@dataclass(frozen=True)
class MemberRow:
    member_id: str
    client_id: str
    host: str
    instance_id: str | None
    assignment: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class OffsetRow:
    topic: str
    partition: int
    committed: int
    high_watermark: int | None
    owner: str | None  # the client id of the member assigned the partition

    @property
    def lag(self) -> int | None:
        if self.high_watermark is None or self.committed < 0:
            return None
        return max(self.high_watermark - self.committed, 0)


@dataclass(frozen=True)
class GroupRow:
    group_id: str
    state: str
    coordinator: int | None
    protocol: str
    members: tuple[MemberRow, ...] = ()
    offsets: tuple[OffsetRow, ...] = ()

    @property
    def total_lag(self) -> int:
        return sum(o.lag or 0 for o in self.offsets)

    @property
    def topics(self) -> list[str]:
        return sorted({o.topic for o in self.offsets} | {t for m in self.members for t, _ in m.assignment})


@dataclass(frozen=True)
class ResetPlan:
    """The new offsets of a reset, as shown on its confirmation page."""

    group_id: str
    topic: str
    to: str  # earliest | latest | offset
    offset: int | None
    rows: tuple[tuple[int, int | None, int], ...]  # partition, current committed, new


@dataclass
class Groups:
    rows: list[GroupRow] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _ck() -> Any:
    import confluent_kafka
    import confluent_kafka.admin

    return confluent_kafka


class KafkaOps:
    """One AdminClient to this broker's listener, made on first use (in a worker thread)."""

    def __init__(self, bootstrap: str, max_txn_timeout_ms: int) -> None:
        self.bootstrap = bootstrap
        self.max_txn_timeout_ms = max_txn_timeout_ms
        self._admin: Any = None

    @property
    def admin(self) -> Any:
        if self._admin is None:
            self._admin = _ck().admin.AdminClient({
                "bootstrap.servers": self.bootstrap,
                # librdkafka's connection chatter goes to a logger, not to the broker's stderr.
                "logger": logging.getLogger("ackly.librdkafka"),
                "log_level": 3,
            })
        return self._admin

    def _result(self, future: Any, what: str) -> Any:
        try:
            return future.result(timeout=REQUEST_TIMEOUT_S + 2)
        except _ck().KafkaException as exc:
            raise ConsoleError(f"{what}: {exc.args[0].str() if exc.args else exc}") from None
        except TimeoutError:
            raise ConsoleError(f"{what}: no answer within {REQUEST_TIMEOUT_S + 2:.0f} s") from None

    # --- reads ------------------------------------------------------------------------------

    def groups(self, with_offsets: Iterable[str] | None = None) -> Groups:
        """Every group with its members; the committed offsets and lag of those in
        `with_offsets` (all of them when None)."""
        out = Groups()
        listed = self._result(self.admin.list_consumer_groups(request_timeout=REQUEST_TIMEOUT_S),
                              "ListGroups")
        out.errors.extend(str(e) for e in listed.errors)
        ids = sorted(g.group_id for g in listed.valid)
        if not ids:
            return out
        wanted = set(ids if with_offsets is None else with_offsets)
        described = self.admin.describe_consumer_groups(ids, request_timeout=REQUEST_TIMEOUT_S)
        for group_id in ids:
            try:
                d = self._result(described[group_id], f"DescribeGroups {group_id}")
            except ConsoleError as exc:
                out.errors.append(str(exc))
                continue
            members = tuple(
                MemberRow(m.member_id, m.client_id, m.host, m.group_instance_id,
                          tuple(sorted((tp.topic, tp.partition) for tp in m.assignment.topic_partitions)))
                for m in d.members
            )
            offsets: tuple[OffsetRow, ...] = ()
            if group_id in wanted:
                try:
                    offsets = self._offsets(group_id, members)
                except ConsoleError as exc:
                    out.errors.append(str(exc))
            coordinator = getattr(d, "coordinator", None)
            out.rows.append(GroupRow(
                group_id=group_id, state=_state_name(d.state),
                coordinator=None if coordinator is None else int(coordinator.id),
                protocol=d.partition_assignor or "", members=members, offsets=offsets,
            ))
        return out

    def group(self, group_id: str) -> GroupRow | None:
        found = self.groups(with_offsets=[group_id])
        row = next((g for g in found.rows if g.group_id == group_id), None)
        if row is None and found.errors:
            raise ConsoleError("; ".join(found.errors))
        return row

    def _offsets(self, group_id: str, members: tuple[MemberRow, ...]) -> tuple[OffsetRow, ...]:
        ck = _ck()
        answer = self.admin.list_consumer_group_offsets(
            [ck.ConsumerGroupTopicPartitions(group_id)], request_timeout=REQUEST_TIMEOUT_S)
        committed = self._result(answer[group_id], f"OffsetFetch {group_id}").topic_partitions or []
        owners = {tp: m.client_id for m in members for tp in m.assignment}
        tps = sorted({(tp.topic, tp.partition) for tp in committed} | set(owners))
        by_tp = {(tp.topic, tp.partition): tp.offset for tp in committed}
        hws = self.offsets_of(tps, "latest")
        return tuple(OffsetRow(t, p, by_tp.get((t, p), -1), hws.get((t, p)), owners.get((t, p)))
                     for t, p in tps)

    def offsets_of(self, tps: Iterable[tuple[str, int]], spec: str) -> dict[tuple[str, int], int]:
        """ListOffsets: each partition's HW (`latest`, read_uncommitted) or log start
        (`earliest`); a partition whose leader does not answer is left out."""
        ck = _ck()
        wanted = list(tps)
        if not wanted:
            return {}
        make = ck.admin.OffsetSpec.latest if spec == "latest" else ck.admin.OffsetSpec.earliest
        futures = self.admin.list_offsets({ck.TopicPartition(t, p): make() for t, p in wanted},
                                          request_timeout=REQUEST_TIMEOUT_S)
        out = {}
        for tp, future in futures.items():
            try:
                answer = self._result(future, f"ListOffsets {tp.topic}-{tp.partition}")
                out[(tp.topic, tp.partition)] = int(answer.offset)
            except ConsoleError as exc:
                log.info("%s", exc)
        return out

    def topic_partitions(self, topic: str) -> list[int]:
        # All topics, not the one: a Metadata request naming a topic may create it on a
        # cluster with auto.create.topics.enable, and a look-up must not.
        metadata = self.admin.list_topics(timeout=REQUEST_TIMEOUT_S)
        t = metadata.topics.get(topic)
        if t is None or t.error is not None:
            raise ConsoleError(f"unknown topic {topic!r}" if t is None else f"topic {topic!r}: {t.error.str()}")
        return sorted(t.partitions)

    def transactions(self) -> TransactionsReport:
        host, _, port = self.bootstrap.rpartition(":")
        return collect_transactions(f"{host}:{port}", hanging=True, max_timeout_ms=self.max_txn_timeout_ms,
                                    timeout_s=REQUEST_TIMEOUT_S)

    # --- writes -----------------------------------------------------------------------------

    def create_topic(self, name: str, partitions: int, replication_factor: int,
                     configs: dict[str, str]) -> None:
        ck = _ck()
        new = ck.admin.NewTopic(name, num_partitions=partitions, replication_factor=replication_factor,
                                config=configs)
        futures = self.admin.create_topics([new], operation_timeout=REQUEST_TIMEOUT_S,
                                           request_timeout=REQUEST_TIMEOUT_S)
        self._result(futures[name], f"CreateTopics {name}")

    def plan_reset(self, group_id: str, topic: str, to: str, offset: int | None) -> ResetPlan:
        """The offsets a reset would commit, clamped to [log start, HW] as
        kafka-consumer-groups.sh --reset-offsets does."""
        if to not in ("earliest", "latest", "offset"):
            raise ConsoleError(f"unknown reset target {to!r} (earliest, latest or offset)")
        if to == "offset" and (offset is None or offset < 0):
            raise ConsoleError("a reset to an offset needs an offset >= 0")
        partitions = self.topic_partitions(topic)
        tps = [(topic, p) for p in partitions]
        earliest = self.offsets_of(tps, "earliest")
        latest = self.offsets_of(tps, "latest")
        missing = [p for p in partitions if (topic, p) not in earliest or (topic, p) not in latest]
        if missing:
            raise ConsoleError(f"no offsets for partitions {missing} of {topic!r} (leader unavailable?)")
        row = self.group(group_id)
        current = {(o.topic, o.partition): o.committed for o in (row.offsets if row else ())}
        rows = []
        for p in partitions:
            low, high = earliest[(topic, p)], latest[(topic, p)]
            new = low if to == "earliest" else high if to == "latest" else min(max(offset or 0, low), high)
            committed = current.get((topic, p), -1)
            rows.append((p, None if committed < 0 else committed, new))
        return ResetPlan(group_id, topic, to, offset, tuple(rows))

    def apply_reset(self, plan: ResetPlan) -> None:
        row = self.group(plan.group_id)
        if row is not None and row.members:
            # Kafka's rule (ConsumerGroupCommand): offsets of a group are reset only while it
            # has no active member, who would overwrite them at its next commit.
            raise ConsoleError(f"group {plan.group_id!r} has {len(row.members)} active members "
                               f"(state {row.state}): stop its consumers first")
        ck = _ck()
        request = ck.ConsumerGroupTopicPartitions(
            plan.group_id, [ck.TopicPartition(plan.topic, p, new) for p, _, new in plan.rows])
        futures = self.admin.alter_consumer_group_offsets([request], request_timeout=REQUEST_TIMEOUT_S)
        answer = self._result(futures[plan.group_id], f"OffsetCommit {plan.group_id}")
        failed = [f"{tp.topic}-{tp.partition}: {tp.error.str()}" for tp in answer.topic_partitions
                  if tp.error is not None]
        if failed:
            raise ConsoleError("offsets not committed: " + "; ".join(failed))


def _state_name(state: Any) -> str:
    name = getattr(state, "name", str(state))
    return name.title().replace("_", "") if name.isupper() else name
