"""Liveness after healing (docs/guarantees.md rule 22; TigerBeetle's "a healed core converges").

The final phase is the client ops whose extra has "final": true, and every op after the last
nemesis op. For each key the final phase assigned or read (or whose topic it subscribed
to), the final polls must reach the highest offset of a send acknowledged before the last final
poll began (sends still running during the final phase may land after it). When they stop short:
- hanging-transaction: a read_committed reader is blocked and a transaction wrote to the key
  (an open transaction holds the LSO back);
- stuck-consumer: otherwise.
Without a final phase (no nemesis ops and none marked) liveness is not checked.
"""

from __future__ import annotations

from ackly.verify.checkers.model import READ_COMMITTED, Model
from ackly.verify.findings import Example, Finding, example, finding

NO_FINAL_PHASE = "no final phase in the history (no nemesis op and no op marked final)"


def _topic(key: str) -> str:
    return key.rsplit("/", 1)[0]


def _blocked(model: Model) -> tuple[list[Example], list[Example]]:
    final_reads = [r for r in model.reads if r.final]
    reached: dict[str, int] = {}
    last_poll: dict[str, int] = {}
    for read in final_reads:
        reached[read.key] = max(read.offset, reached.get(read.key, -1))
        last_poll[read.key] = max(read.complete_index, last_poll.get(read.key, -1))
    target: dict[str, tuple[int, int, int]] = {}  # key -> (offset, value, op index)
    txn_keys: set[str] = set()
    for write in model.writes.values():
        if write.txn:
            txn_keys.add(write.key)
        if write.outcome != "ok" or write.complete_index is None:
            continue
        if model.final_poll_index is not None and write.complete_index > model.final_poll_index:
            continue  # acknowledged after the last final poll began: it may not have been there to read
        offset = model.known_offset(write.key, write.value)
        if offset is not None and offset > target.get(write.key, (-1, 0, 0))[0]:
            target[write.key] = (offset, write.value, write.complete_index)
    keys = set(model.final_keys) | set(reached)
    keys |= {k for k in target if _topic(k) in model.final_topics}
    committed_readers = any(r.isolation == READ_COMMITTED for r in final_reads)
    hanging: list[Example] = []
    stuck: list[Example] = []
    for key in sorted(keys):
        if key not in target:
            continue
        offset, value, index = target[key]
        got = reached.get(key)
        if got is not None and got >= offset:
            continue
        ops = [index] + ([last_poll[key]] if key in last_poll else [])
        note = "final polls reached the first offset, acknowledged sends the second"
        if got is None:
            note = "final polls returned nothing; acknowledged sends reached the offset"
        if committed_readers and key in txn_keys:
            hanging.append(example(key, [got, offset], [value], ops, note))
        else:
            stuck.append(example(key, [got, offset], [value], ops, note))
    return hanging, stuck


def hanging_transaction(model: Model) -> Finding:
    if model.final_start_index is None:
        return finding("hanging-transaction", [], NO_FINAL_PHASE)
    return finding("hanging-transaction", _blocked(model)[0])


def stuck_consumer(model: Model) -> Finding:
    if model.final_start_index is None:
        return finding("stuck-consumer", [], NO_FINAL_PHASE)
    return finding("stuck-consumer", _blocked(model)[1])
