"""Checkers of transactions and producer fencing (docs/guarantees.md rules 19, 20, 23; KIP-98, KIP-890).

- aborted-read (G1a): a read of a write that definitely did not happen: a failed send (by any
  reader) or a write of an aborted transaction (by a read_committed reader; read_uncommitted
  readers may see aborted records).
- early-read: a read that completed before its write could have been visible: before the send
  was invoked, or, for a read_committed reader, before the transaction commit was requested (the
  txn op's extra "commit_invoke_ms", else its invocation).
- torn-transaction: a read_committed consumer read some of a committed transaction's writes and,
  on a key, read across the offset of another of its writes without returning it.
- G0 (write cycle): two or more committed transactions whose writes are ordered one way on one
  key and the other way on another. Kafka does not isolate writes, so it is reported, not failed.
- G1c (read cycle): committed transactions each of which read a write of the next, round to the
  first. A read_committed read of a transaction's write comes after that transaction committed,
  so such a cycle means some read saw a write before its commit. Only read->write (wr) edges are
  followed: write order (ww) says nothing about commit order in Kafka, so cycles through ww edges
  are allowed (that is G0's territory).
- fencing-violation: an operation of a producer with a transactional id and an older
  "producer_epoch" (or "instance", when the client hides the epoch) than one that already
  completed an operation ok, started after that fencing was visible, and was acknowledged or read.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Any

from ackly.verify.checkers.model import READ_COMMITTED, Model, Read, Segment, Write
from ackly.verify.findings import Example, Finding, example, finding
from ackly.verify.history import Op, Process, pair_ops


def aborted_read(model: Model) -> Finding:
    found: list[Example] = []
    for (key, value), reads in model.reads_by_kv.items():
        write = model.writes.get((key, value))
        if write is None or write.outcome != "fail":
            continue
        bad = [r for r in reads if not write.txn or r.isolation == READ_COMMITTED]
        if bad:
            ops = {write.invoke_index, *(r.complete_index for r in bad)}
            if write.complete_index is not None:
                ops.add(write.complete_index)
            note = "read of an aborted transaction's write" if write.txn else "read of a failed send"
            found.append(example(key, sorted({r.offset for r in bad}), [value], ops, note))
    return finding("aborted-read", found)


def _early(write: Write, read: Read) -> str | None:
    if read.complete_index < write.invoke_index:
        return "read completed before the send was invoked"
    if write.txn and read.isolation == READ_COMMITTED and read.complete_ms < write.commit_ms:
        return "read_committed read completed before the transaction commit was requested"
    return None


def early_read(model: Model) -> Finding:
    found: list[Example] = []
    for (key, value), reads in model.reads_by_kv.items():
        write = model.writes.get((key, value))
        if write is None or write.outcome == "fail":
            continue
        for read in reads:
            why = _early(write, read)
            if why is not None:
                found.append(example(key, [read.offset], [value], [write.invoke_index, read.complete_index], why))
                break
    return finding("early-read", found)


def _committed_txns(model: Model) -> dict[int, list[Write]]:
    txns: dict[int, list[Write]] = defaultdict(list)
    for write in model.writes.values():
        if write.txn and write.outcome == "ok":
            txns[write.invoke_index].append(write)
    return txns


def torn_transaction(model: Model) -> Finding:
    segments: dict[tuple[Process, str], list[Segment]] = defaultdict(list)
    for segment in model.segments:
        if segment.isolation == READ_COMMITTED:
            segments[(segment.process, segment.key)].append(segment)
    found: list[Example] = []
    for index, writes in _committed_txns(model).items():
        seen_by: dict[Process, list[Read]] = defaultdict(list)
        for write in writes:
            for read in model.reads_by_kv.get((write.key, write.value), ()):
                if read.isolation == READ_COMMITTED:
                    seen_by[read.process].append(read)
        for process, seen in seen_by.items():
            seen_kvs = {(r.key, r.value) for r in seen}
            for write in writes:
                if (write.key, write.value) in seen_kvs:
                    continue
                offset = model.known_offset(write.key, write.value)
                if offset is None:
                    continue
                if any(s.first_offset <= offset <= s.max_offset for s in segments[(process, write.key)]):
                    ops = {index, *(r.complete_index for r in seen)}
                    if write.complete_index is not None:
                        ops.add(write.complete_index)
                    values = sorted(r.value for r in seen)[:4]
                    note = f"process {process} read past offset {offset} without returning the last value"
                    found.append(example(write.key, [offset], [*values, write.value], ops, note))
                    break
    return finding("torn-transaction", found)


def g0(model: Model) -> Finding:
    by_key: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for index, writes in _committed_txns(model).items():
        for write in writes:
            offset = model.known_offset(write.key, write.value)
            if offset is not None:
                by_key[write.key].append((offset, index))
    edges: dict[int, set[int]] = defaultdict(set)
    edge_keys: dict[tuple[int, int], str] = {}
    for key, placed in by_key.items():
        placed.sort()
        for (_, a), (_, b) in itertools.pairwise(placed):
            if a != b:
                edges[a].add(b)
                edge_keys.setdefault((a, b), key)
    found: list[Example] = []
    for component in strongly_connected(edges):
        if len(component) > 1:
            members = set(component)
            keys = sorted({k for (a, b), k in edge_keys.items() if a in members and b in members})
            note = f"write cycle among {len(component)} transactions over keys {', '.join(keys[:5])}"
            found.append(example(keys[0] if keys else None, [], [], sorted(component)[:10], note))
    return finding("G0", found)


def g1c(model: Model) -> Finding:
    # Nodes are committed txn ops, named by their invocation index (as writes name them).
    committed: dict[int, int] = {
        completion.index: invocation.index
        for invocation, completion in model.txn_ops
        if completion is not None and completion.type == "ok"
    }
    edges: dict[int, set[int]] = defaultdict(set)
    for writer, writes in _committed_txns(model).items():
        for write in writes:
            for read in model.reads_by_kv.get((write.key, write.value), ()):
                reader = committed.get(read.complete_index)
                if read.isolation == READ_COMMITTED and reader is not None and reader != writer:
                    edges[writer].add(reader)
    found: list[Example] = []
    for component in strongly_connected(edges):
        if len(component) > 1:
            note = f"read cycle among {len(component)} committed transactions"
            found.append(example(None, [], [], sorted(component)[:10], note))
    return finding("G1c", found)


def strongly_connected(edges: dict[int, set[int]]) -> list[list[int]]:
    """Tarjan's strongly connected components, iteratively (histories can be long)."""
    index_of: dict[int, int] = {}
    low: dict[int, int] = {}
    on_stack: set[int] = set()
    stack: list[int] = []
    out: list[list[int]] = []
    counter = 0
    nodes = set(edges) | {b for targets in edges.values() for b in targets}
    for root in sorted(nodes):
        if root in index_of:
            continue
        work: list[tuple[int, list[int]]] = [(root, sorted(edges.get(root, ())))]
        index_of[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, pending = work[-1]
            if pending:
                nxt = pending.pop()
                if nxt not in index_of:
                    index_of[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(edges.get(nxt, ()))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index_of[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index_of[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                out.append(component)
    return out


def _producer_identity(extra: dict[str, Any]) -> tuple[str, int] | None:
    tid = extra.get("transactional_id")
    epoch = extra.get("producer_epoch", extra.get("instance"))
    if tid is None or epoch is None:
        return None
    return str(tid), int(epoch)


def fencing_violation(model: Model) -> Finding:
    ops: list[tuple[str, int, Op, Op | None, dict[str, Any]]] = []
    for invocation, completion in pair_ops(model.history):
        if not invocation.is_client:
            continue
        extra = {**invocation.extra, **(completion.extra if completion is not None else {})}
        identity = _producer_identity(extra)
        if identity is not None:
            ops.append((identity[0], identity[1], invocation, completion, extra))
    # The first ok completion of each (transactional id, epoch): from then on, older epochs are fenced.
    first_ok: dict[tuple[str, int], Op] = {}
    for tid, epoch, _, completion, _ in ops:
        if completion is not None and completion.type == "ok":
            current = first_ok.get((tid, epoch))
            if current is None or completion.index < current.index:
                first_ok[(tid, epoch)] = completion
    # For each (id, epoch): the earliest first-ok of a newer epoch, i.e. when its fencing showed.
    epochs: dict[str, set[int]] = defaultdict(set)
    for tid, epoch, *_ in ops:
        epochs[tid].add(epoch)
    fenced_by: dict[tuple[str, int], Op] = {}
    for tid, known in epochs.items():
        newest_first: Op | None = None
        for epoch in sorted(known, reverse=True):
            if newest_first is not None:
                fenced_by[(tid, epoch)] = newest_first
            mine = first_ok.get((tid, epoch))
            if mine is not None and (newest_first is None or mine.index < newest_first.index):
                newest_first = mine
    writes_by_op: dict[int, list[Write]] = defaultdict(list)
    for write in model.writes.values():
        writes_by_op[write.invoke_index].append(write)
    found: list[Example] = []
    for tid, epoch, invocation, completion, extra in ops:
        fencer = fenced_by.get((tid, epoch))
        if fencer is None:
            continue
        started_ms = float(extra.get("commit_invoke_ms", invocation.time_ms))
        if invocation.index < fencer.index or started_ms < fencer.time_ms:
            continue
        writes = writes_by_op.get(invocation.index, [])
        read = [w for w in writes if model.was_read(w.key, w.value)]
        acked = completion is not None and completion.type == "ok" and invocation.f in ("send", "txn")
        if acked or read:
            shown = read or writes
            involved = {fencer.index, invocation.index} | ({completion.index} if completion else set())
            note = f"{tid}: epoch {epoch} {'acknowledged' if acked else 'read'} after a newer epoch was fenced in"
            found.append(
                example(
                    shown[0].key if shown else None,
                    [model.known_offset(w.key, w.value) for w in shown[:5]],
                    [w.value for w in shown[:5]],
                    involved,
                    note,
                )
            )
    return finding("fencing-violation", found)
