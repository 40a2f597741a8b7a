"""What the clients themselves say went wrong, read from the history's error fields.

producer-state-lost (docs/guarantees.md rules 16-17): an idempotent producer was told by a broker
that its producer id or sequence is unknown there (UNKNOWN_PRODUCER_ID, or a sequence gap:
OUT_OF_ORDER_SEQUENCE_NUMBER) on a partition where it already had a send acknowledged (the
producer client is the send op's extra "producer"). With acks=all and unclean leader election off, every batch a
producer saw acknowledged is committed, so whichever replica leads next rebuilds that
producer's state from its log: the broker has lost state it must keep. librdkafka then fails
for good ("unable to retry without risking duplication"), and a client that bumps its epoch
instead writes a retried batch twice. With acks=0/1 or unclean election, a failover may
truncate acknowledged batches and the error is then allowed by that configuration.

first-batch-refused: the same refusal before the producer had anything acknowledged on that
partition. Reported, never failed: the broker refused a batch that overtook the producer's first
one, or followed batches the client dropped at their timeout. Kafka since KIP-360, and ackly,
accept any sequence from a producer a partition has no state for; a broker that refuses makes
librdkafka fail for good.

pipelined-batch-refused: OUT_OF_ORDER_SEQUENCE_NUMBER for a request that was not the first
unacknowledged one of its partition. Reported, never failed: the request before it was refused
with a retriable error and nothing written (NOT_ENOUGH_REPLICAS while the ISR is short, or a
KIP-890 verification whose coordinator moved or whose connection was reset), so the next one
arrives with a gap and Kafka's ProducerAppendInfo.checkSequence answers it OUT_OF_ORDER as
ackly does. The producer's state is intact: the earlier request, retried, would be taken.
librdkafka tells the two apart by comparing the refused request's base sequence with the next
one it expects acknowledged: the head of line refused is a desynchronisation, a fatal error
("sequence desynchronization", or "rewound sequence number"); a request behind it is
"skipped sequence numbers", which an idempotent producer retries after an epoch bump without
telling the application, and a transactional producer raises as an abortable (not FATAL)
error: the transaction is aborted and the epoch bumped (KIP-360). So a transaction that failed
with a non-fatal OUT_OF_ORDER_SEQUENCE_NUMBER lost nothing, while a fatal one on a partition
with an acknowledged send is producer-state-lost.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from ackly.verify.expectations import Judgement
from ackly.verify.findings import Example, Finding, example, finding
from ackly.verify.history import Op, pair_ops

PRODUCER_STATE_LOST = "producer-state-lost"
FIRST_BATCH_REFUSED = "first-batch-refused"
PIPELINED_BATCH_REFUSED = "pipelined-batch-refused"
_PARTITION_IN_ERROR = re.compile(r"for (\S+) \[(\d+)\]")
STATE_ERRORS = ("UNKNOWN_PRODUCER_ID", "OUT_OF_ORDER_SEQUENCE_NUMBER")
# librdkafka's words for a refused request behind the head of line (see the module doc).
_SKIPPED_SEQUENCES = "skipped sequence numbers"


def _behind_head_of_line(op: Op, error: str) -> bool:
    """A transaction's OUT_OF_ORDER_SEQUENCE_NUMBER that librdkafka raised as abortable (not
    FATAL: its repr says "FATAL" for fatal errors) for a request behind a retriably refused
    one."""
    return (op.f == "txn" and "OUT_OF_ORDER_SEQUENCE_NUMBER" in error
            and "FATAL" not in error and _SKIPPED_SEQUENCES in error)


def _error_key(op: Op, error: str) -> str | None:
    """The partition an error names (librdkafka: "... for <topic> [<partition>] ..."), else the
    op's own key."""
    match = _PARTITION_IN_ERROR.search(error)
    if match:
        return f"{match.group(1)}/{match.group(2)}"
    mops = op.value if isinstance(op.value, list) else []
    sends = [m for m in mops if isinstance(m, list) and m and m[0] == "send"]
    return str(sends[0][1]) if sends else None


def producer_state_lost(history: Sequence[Op]) -> tuple[Finding, Finding, Finding]:
    """(producer-state-lost, first-batch-refused, pipelined-batch-refused): refusals of a
    producer on a partition where it already had a send acknowledged (its state must be
    there), refusals before any (a pipelined batch that overtook the producer's first one on a
    new leader, refused by a broker that does not follow KIP-360; librdkafka then fails for
    good), and refusals of a request behind a retriably refused one (see the module doc)."""
    acked: set[tuple[str, str]] = set()  # (producer client, key)
    lost: list[Example] = []
    first: list[Example] = []
    pipelined: list[Example] = []
    for invocation, completion in pair_ops(history):
        if completion is None or invocation.f not in ("send", "txn"):
            continue
        producer = str(invocation.extra.get("producer", invocation.process))
        mops = invocation.value if isinstance(invocation.value, list) else []
        sends = [m for m in mops if isinstance(m, list) and len(m) == 3 and m[0] == "send"]
        if completion.type == "ok":
            acked.update((producer, str(m[1])) for m in sends)
            continue
        error = completion.error or ""
        if not any(name in error for name in STATE_ERRORS):
            continue
        key = _error_key(invocation, error)
        values = [int(m[2]) for m in sends if isinstance(m[2], int)]
        found = example(key, [], values, [invocation.index, completion.index], error[:200])
        if _behind_head_of_line(invocation, error):
            pipelined.append(found)
        else:
            (lost if (producer, str(key)) in acked else first).append(found)
    return (finding(PRODUCER_STATE_LOST, lost), finding(FIRST_BATCH_REFUSED, first),
            finding(PIPELINED_BATCH_REFUSED, pipelined))


def judge_producer_state(found: Finding, config: Mapping[str, str]) -> Judgement:
    if found.count == 0:
        return Judgement(PRODUCER_STATE_LOST, 0, "none")
    if config.get("enable.idempotence", "false").lower() != "true":
        return Judgement(PRODUCER_STATE_LOST, found.count, "reported", "the producer is not idempotent")
    if config.get("acks", "all") not in ("all", "-1"):
        return Judgement(PRODUCER_STATE_LOST, found.count, "allowed-by-config",
                         "acks=0/1: a failover can truncate acknowledged batches (rule 7)")
    if config.get("unclean.leader.election.enable", "false").lower() == "true":
        return Judgement(PRODUCER_STATE_LOST, found.count, "allowed-by-config",
                         "unclean.leader.election.enable=true: a leader outside the ISR (rule 12)")
    return Judgement(PRODUCER_STATE_LOST, found.count, "violation",
                     "a broker lost an idempotent producer's state (rules 16-17)")
