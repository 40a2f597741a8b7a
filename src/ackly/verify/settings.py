"""What one verify run asks of the clients and the topic: the semantics presets and `--set`.

A preset (docs/guarantees.md s.7) fixes the producer's settings, the consumer's, the topic's and
when the consumer's offset commit happens relative to processing:

| semantics | producer | consumer | topic | offset commit |
|---|---|---|---|---|
| at-most-once | acks=0, no retries | read_uncommitted | min ISR 1 | before processing |
| at-least-once | acks=all, retries | read_uncommitted | min ISR 2 | after processing |
| exactly-once | idempotent + transactional | read_committed | min ISR 2 | in the transaction |

Settings use the librdkafka / Java client property names (`acks`, `enable.idempotence`, ...);
`clients.py` translates them for kafka-python and aiokafka. `--set key=value` overrides one:
a topic config name (ackly's `TOPIC_CONFIGS`: `min.insync.replicas`, `flush.policy`,
`unclean.leader.election.enable`, ...) goes to the topic, a known consumer property to the
consumer, anything else to the producer; `producer.`, `consumer.` and `topic.` prefixes say
it explicitly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from ackly.config import TOPIC_CONFIGS

SEMANTICS: tuple[str, ...] = ("at-most-once", "at-least-once", "exactly-once", "exactly-once-sink")
CommitMode = Literal["before", "after", "transaction"]
WorkloadName = Literal["queue", "transactional", "sink"]

CONSUMER_KEYS = frozenset(
    {
        "isolation.level",
        "enable.auto.commit",
        "auto.commit.interval.ms",
        "auto.offset.reset",
        "session.timeout.ms",
        "heartbeat.interval.ms",
        "max.poll.interval.ms",
        "fetch.wait.max.ms",
        "fetch.min.bytes",
        "group.instance.id",
        "partition.assignment.strategy",
        "group.protocol",
        "group.remote.assignor",
    }
)


@dataclass(frozen=True)
class RunSettings:
    semantics: str
    producer: Mapping[str, str]
    consumer: Mapping[str, str]
    topic: Mapping[str, str]
    offset_commit: CommitMode
    workload: WorkloadName
    overrides: Mapping[str, str] = field(default_factory=dict)

    @property
    def acks(self) -> str:
        return str(self.producer.get("acks", "all")).replace("-1", "all")

    @property
    def idempotent(self) -> bool:
        return str(self.producer.get("enable.idempotence", "false")).lower() == "true"

    @property
    def transactional(self) -> bool:
        return self.workload == "transactional"

    def to_json(self) -> dict[str, object]:
        return {
            "semantics": self.semantics,
            "producer": dict(self.producer),
            "consumer": dict(self.consumer),
            "topic": dict(self.topic),
            "offset_commit": self.offset_commit,
            "workload": self.workload,
            "overrides": dict(self.overrides),
        }


def preset(semantics: str) -> RunSettings:
    """The settings a semantics stands for; ValueError for an unknown one."""
    if semantics == "at-most-once":
        return RunSettings(
            semantics,
            producer={"acks": "0", "retries": "0", "enable.idempotence": "false"},
            consumer={"isolation.level": "read_uncommitted"},
            topic={"min.insync.replicas": "1"},
            offset_commit="before",
            workload="queue",
        )
    if semantics == "at-least-once":
        return RunSettings(
            semantics,
            producer={"acks": "all", "retries": "2147483647", "enable.idempotence": "false"},
            consumer={"isolation.level": "read_uncommitted"},
            topic={"min.insync.replicas": "2", "unclean.leader.election.enable": "false"},
            offset_commit="after",
            workload="queue",
        )
    if semantics in ("exactly-once", "exactly-once-sink"):
        # The same client settings; only the workload differs (the sink's consumer stores
        # what it reads in a database, ackly.eos).
        return RunSettings(
            semantics,
            producer={"acks": "all", "enable.idempotence": "true"},
            consumer={"isolation.level": "read_committed"},
            topic={"min.insync.replicas": "2", "unclean.leader.election.enable": "false"},
            offset_commit="transaction",
            workload="transactional" if semantics == "exactly-once" else "sink",
        )
    raise ValueError(f"unknown semantics {semantics!r}; one of {', '.join(SEMANTICS)}")


def parse_assignments(items: Iterable[str]) -> dict[str, str]:
    """`key=value` strings as a dict; ValueError naming the bad one."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set wants key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def with_overrides(settings: RunSettings, overrides: Mapping[str, str]) -> RunSettings:
    """`settings` with each `--set` routed to the producer, consumer, topic or the run."""
    producer, consumer, topic = dict(settings.producer), dict(settings.consumer), dict(settings.topic)
    offset_commit, workload = settings.offset_commit, settings.workload
    for key, value in overrides.items():
        if key.startswith("producer."):
            producer[key.removeprefix("producer.")] = value
        elif key.startswith("consumer."):
            consumer[key.removeprefix("consumer.")] = value
        elif key.startswith("topic."):
            topic[key.removeprefix("topic.")] = value
        elif key == "offset.commit":
            if value not in ("before", "after", "transaction"):
                raise ValueError("offset.commit is before, after or transaction")
            offset_commit = value  # type: ignore[assignment]
        elif key == "workload":
            if value not in ("queue", "transactional", "sink"):
                raise ValueError("workload is queue, transactional or sink")
            workload = value  # type: ignore[assignment]
        elif key in TOPIC_CONFIGS:
            topic[key] = value
        elif key in CONSUMER_KEYS:
            consumer[key] = value
        else:
            producer[key] = value
    if producer.get("acks") == "-1":
        producer["acks"] = "all"
    return dataclasses.replace(
        settings,
        producer=producer,
        consumer=consumer,
        topic=topic,
        offset_commit=offset_commit,
        workload=workload,
        overrides={**settings.overrides, **overrides},
    )


def with_group_protocol(settings: RunSettings, protocol: str) -> RunSettings:
    """`settings` with the consumers in the classic group protocol (as before) or in KIP-848's
    (`group.protocol=consumer`: the broker assigns the partitions and sets the session and
    heartbeat timing, so the client's own session.timeout.ms and heartbeat.interval.ms go)."""
    if protocol == "classic":
        return settings
    consumer = {k: v for k, v in settings.consumer.items()
                if k not in ("session.timeout.ms", "heartbeat.interval.ms", "partition.assignment.strategy")}
    consumer["group.protocol"] = protocol
    return dataclasses.replace(settings, consumer=consumer)
