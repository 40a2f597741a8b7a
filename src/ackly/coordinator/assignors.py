"""Server-side assignors of consumer groups (KIP-848): `uniform` and `range`.

An assignor is a pure function from the members' subscriptions, the subscribed topics'
partition counts and the current target assignment to the next target assignment. Both
assign every partition of a subscribed topic to exactly one member subscribed to that topic
(none when no member subscribes to it), and are deterministic (same inputs, same output).

- `uniform` (Kafka's UniformAssignor, the default): spreads the partitions evenly over the
  members, keeping each partition with its current owner as long as that keeps the spread
  even (sticky), so a member joining or leaving moves as few partitions as it can.
- `range` (Kafka's RangeAssignor): per topic, its members sorted by id receive consecutive
  ranges of partitions, the first ones one more when the count does not divide evenly;
  members with the same subscriptions get the same partition numbers of co-partitioned
  topics.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping

UNIFORM = "uniform"
RANGE = "range"
ASSIGNORS = (UNIFORM, RANGE)

# member id -> topic id -> partitions
TargetAssignment = dict[str, dict[uuid.UUID, frozenset[int]]]
CurrentTarget = Mapping[str, Mapping[uuid.UUID, frozenset[int]]]
Assignor = Callable[[Mapping[str, frozenset[uuid.UUID]], Mapping[uuid.UUID, int], CurrentTarget], TargetAssignment]


def _finish(members: Mapping[str, frozenset[uuid.UUID]],
            owned: dict[str, dict[uuid.UUID, set[int]]]) -> TargetAssignment:
    return {m: {t: frozenset(ps) for t, ps in owned.get(m, {}).items() if ps} for m in members}


def range_assign(subscriptions: Mapping[str, frozenset[uuid.UUID]], partitions: Mapping[uuid.UUID, int],
                 current: Mapping[str, Mapping[uuid.UUID, frozenset[int]]]) -> TargetAssignment:
    owned: dict[str, dict[uuid.UUID, set[int]]] = {}
    for topic_id, count in sorted(partitions.items(), key=lambda i: i[0].bytes):
        members = sorted(m for m, topics in subscriptions.items() if topic_id in topics)
        if not members:
            continue
        base, extra = divmod(count, len(members))
        start = 0
        for i, m in enumerate(members):
            size = base + (1 if i < extra else 0)
            owned.setdefault(m, {})[topic_id] = set(range(start, start + size))
            start += size
    return _finish(subscriptions, owned)


def uniform_assign(subscriptions: Mapping[str, frozenset[uuid.UUID]], partitions: Mapping[uuid.UUID, int],
                   current: Mapping[str, Mapping[uuid.UUID, frozenset[int]]]) -> TargetAssignment:
    """Sticky and balanced: each member gets at most `quota` partitions (the total of the
    partitions it may take divided by the members, rounded up), its current ones first; the
    rest go one by one to the eligible member holding the fewest (ties: member id)."""
    members = sorted(subscriptions)
    if not members:
        return {}
    all_tps = [(t, p) for t, count in sorted(partitions.items(), key=lambda i: i[0].bytes)
               for p in range(count) if any(t in subscriptions[m] for m in members)]
    quota = -(-len(all_tps) // len(members))
    owned: dict[str, dict[uuid.UUID, set[int]]] = {m: {} for m in members}
    counts = dict.fromkeys(members, 0)
    taken: set[tuple[uuid.UUID, int]] = set()
    for m in members:
        for t, ps in sorted(current.get(m, {}).items(), key=lambda i: i[0].bytes):
            if t not in subscriptions[m] or t not in partitions:
                continue
            for p in sorted(ps):
                if p < partitions[t] and (t, p) not in taken and counts[m] < quota:
                    owned[m].setdefault(t, set()).add(p)
                    taken.add((t, p))
                    counts[m] += 1
    for t, p in all_tps:
        if (t, p) in taken:
            continue
        eligible = [m for m in members if t in subscriptions[m]]
        m = min(eligible, key=lambda x: (counts[x], x))
        owned[m].setdefault(t, set()).add(p)
        counts[m] += 1
    return _finish(subscriptions, owned)


def assignor(name: str) -> Assignor:
    if name == RANGE:
        return range_assign
    if name == UNIFORM:
        return uniform_assign
    raise ValueError(f"unknown assignor {name!r}")
