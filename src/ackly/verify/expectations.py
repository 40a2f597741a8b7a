"""What each delivery semantics promises (docs/guarantees.md s.7), as the anomalies it allows.

A run passes when every anomaly that occurred is allowed: by the semantics (at-most-once may
lose, at-least-once may duplicate, exactly-once neither), by a configuration the run chose on
purpose (`--set unclean.leader.election.enable=true`, `acks=1`, ...: the loss is then "allowed
by this configuration", rule 12), or because Kafka's model allows it everywhere (int-send-skip
and G0 are reported, never failed). Anything else is a violation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

# In the order reports list them (docs/guarantees.md s.8).
ANOMALIES: tuple[str, ...] = (
    "lost-write",
    "unseen",
    "duplicate",
    "inconsistent-offsets",
    "nonmonotonic-send",
    "nonmonotonic-poll",
    "poll-skip",
    "aborted-read",
    "early-read",
    "torn-transaction",
    "G1c",
    "fencing-violation",
    "hanging-transaction",
    "stuck-consumer",
    "consume-count",
    "int-send-skip",
    "G0",
)
REPORTED_ONLY: frozenset[str] = frozenset({"int-send-skip", "G0"})
MEANING: dict[str, str] = {
    "lost-write": "an acknowledged send no poll returned, though polls read past its offset",
    "unseen": "an acknowledged send no poll returned, beyond every read (lost or late)",
    "duplicate": "one value at two offsets of its partition",
    "inconsistent-offsets": "one offset holding two different values",
    "nonmonotonic-send": "one producer's sends to a partition got offsets out of send order",
    "nonmonotonic-poll": "a consumer's polls went backwards without a reassignment or seek",
    "poll-skip": "a consumer skipped records that exist, without a reassignment or seek",
    "aborted-read": "a read of a failed send or of an aborted transaction's write (G1a)",
    "early-read": "a read before the write could be visible (before its transaction commit)",
    "torn-transaction": "a read_committed consumer saw part of a committed transaction",
    "G1c": "committed transactions that each read the next one's writes, in a cycle",
    "fencing-violation": "a write of a fenced producer epoch accepted or read after the fencing",
    "hanging-transaction": "after healing, read_committed reads stop short behind a transaction",
    "stuck-consumer": "after healing, the final reads do not reach the end of the partition",
    "consume-count": "the sink applied an acknowledged record other than exactly once",
    "int-send-skip": "sends to one partition within one operation were not at consecutive offsets",
    "G0": "committed transactions whose writes are ordered differently on two partitions",
}

LOSS = frozenset({"lost-write", "unseen"})
# What each row of the s.7 table may show. consume-count only means something with a sink;
# the two weaker rows make no promise about one.
ALLOWED: dict[str, frozenset[str]] = {
    "at-most-once": LOSS | {"consume-count"},
    "at-least-once": frozenset({"duplicate", "consume-count"}),
    "exactly-once": frozenset(),
    "exactly-once-sink": frozenset(),
}
SEMANTICS: tuple[str, ...] = tuple(ALLOWED)

Status = Literal["none", "allowed", "allowed-by-config", "reported", "violation"]

# A truncated leader log loses acknowledged records and then reuses their offsets; a consumer
# already past the new log end gets OFFSET_OUT_OF_RANGE and its auto.offset.reset moves it back
# (a rewind no assign or seek of its own explains); and an acknowledged offset past the
# truncated log end may never be read again, so the final reads stop short of it.
TRUNCATION = LOSS | {"inconsistent-offsets", "nonmonotonic-poll", "stuck-consumer"}


@dataclass(frozen=True, slots=True)
class ConfigRule:
    applies: Callable[[Mapping[str, str]], bool]
    anomalies: frozenset[str]
    reason: str


CONFIG_RULES: tuple[ConfigRule, ...] = (
    ConfigRule(
        lambda c: c.get("unclean.leader.election.enable") == "true",
        TRUNCATION,
        "unclean.leader.election.enable=true: a replica outside the ISR may become leader and "
        "truncate acknowledged records (rule 12)",
    ),
    ConfigRule(
        lambda c: c.get("acks") in ("0", "1"),
        TRUNCATION,
        "acks=0/1: the leader acknowledges alone, a failover can take the record (rule 7)",
    ),
    ConfigRule(
        lambda c: c.get("min.insync.replicas") == "1",
        TRUNCATION,
        "min.insync.replicas=1: acks=all can be answered by the leader alone (rule 8)",
    ),
    ConfigRule(
        # Kafka's flush.messages=1 (log.flush.interval.messages=1) is flush.policy=always.
        lambda c: c.get("flush.policy", c.get("log.flush.policy")) in ("never", "interval")
        and c.get("flush.messages", c.get("log.flush.interval.messages")) != "1",
        TRUNCATION,
        "flush.policy is not always: a crash that drops unflushed data loses acknowledged records (rule 5)",
    ),
    ConfigRule(
        lambda c: c.get("enable.idempotence") == "false" and c.get("retries") != "0" and c.get("acks") != "0",
        frozenset({"duplicate", "nonmonotonic-send"}),
        "enable.idempotence=false with retries: a retried batch can land twice or out of order (rule 17)",
    ),
)


def normalise(config: Mapping[str, Any] | None) -> dict[str, str]:
    """Flat settings: `producer.`/`consumer.`/`topic.` prefixes dropped, values lower-case text."""
    out: dict[str, str] = {}
    for key, value in (config or {}).items():
        name = str(key)
        for prefix in ("producer.", "consumer.", "topic."):
            name = name.removeprefix(prefix)
        text = str(value).strip().lower()
        out[name] = "all" if name == "acks" and text == "-1" else text
    return out


def allowed_by_config(config: Mapping[str, Any] | None) -> dict[str, str]:
    """Anomaly -> why this configuration allows it (the first rule that does)."""
    settings = normalise(config)
    out: dict[str, str] = {}
    for rule in CONFIG_RULES:
        if rule.applies(settings):
            for name in rule.anomalies:
                out.setdefault(name, rule.reason)
    return out


@dataclass(frozen=True, slots=True)
class Judgement:
    name: str
    count: int
    status: Status
    reason: str = ""

    @property
    def failed(self) -> bool:
        return self.status == "violation"


def judge(semantics: str, counts: Mapping[str, int], config: Mapping[str, Any] | None = None) -> list[Judgement]:
    """One judgement per anomaly in ANOMALIES order (then any other name counted)."""
    if semantics not in ALLOWED:
        raise ValueError(f"unknown semantics {semantics!r}; one of {', '.join(SEMANTICS)}")
    by_config = allowed_by_config(config)
    names = list(ANOMALIES) + sorted(set(counts) - set(ANOMALIES))
    out = []
    for name in names:
        count = counts.get(name, 0)
        if count == 0:
            out.append(Judgement(name, 0, "none"))
        elif name in REPORTED_ONLY:
            out.append(Judgement(name, count, "reported", "allowed by Kafka's model; reported only"))
        elif name in ALLOWED[semantics]:
            out.append(Judgement(name, count, "allowed", f"{semantics} allows it"))
        elif name in by_config:
            out.append(Judgement(name, count, "allowed-by-config", by_config[name]))
        else:
            out.append(Judgement(name, count, "violation", f"{semantics} forbids it"))
    return out


def verdict(semantics: str, counts: Mapping[str, int], config: Mapping[str, Any] | None = None) -> bool:
    """True when only allowed anomalies occurred."""
    return not any(j.failed for j in judge(semantics, counts, config))
