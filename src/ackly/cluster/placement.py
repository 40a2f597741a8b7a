"""Replica placement: which brokers hold the replicas of new partitions.

A pure function of the eligible brokers, the counts and an injected random.Random, in the spirit
of Kafka's AdminUtils.assignReplicasToBrokers and KRaft's StripedReplicaPlacer (the code is
ackly's own):

- Brokers are laid out on a ring that alternates racks (r1's first broker, r2's first, ...,
  r1's second, ...). Brokers without a rack share one rack, so a cluster with no rack
  information gets plain round robin.
- Partition p's first replica (its preferred leader) is ring[(start + p) % n] with a random
  `start`, so preferred leaders spread evenly and different topics start on different brokers.
- The other replicas walk the ring after the leader from a rotating offset (so followers of a
  broker's partitions are spread, not always its ring neighbours), taking a broker from a rack
  not used yet by this partition whenever one is left: with at least RF racks, every replica of
  a partition is in a different rack.
- A replication factor above the number of eligible brokers is refused with
  INVALID_REPLICATION_FACTOR, never silently capped: the caller decides whether to cap (the
  internal topics do, with a warning) and says so.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence

from ackly.cluster.metadata import BrokerInfo
from ackly.errors import ErrorCode, KafkaError


class PlacementError(KafkaError):
    """The request cannot be placed; the code is what CreateTopics/CreatePartitions answer."""


def place_replicas(
    brokers: Sequence[BrokerInfo],
    partitions: int,
    replication_factor: int,
    rng: random.Random,
    *,
    first_partition: int = 0,
) -> list[tuple[int, ...]]:
    """Replica lists for partitions first_partition .. first_partition + partitions - 1.

    `brokers` are the eligible ones (live and not shutting down); each result lists distinct
    broker ids, preferred leader first.
    """
    if partitions < 1:
        raise PlacementError(ErrorCode.invalid_partitions, f"partition count must be >= 1, not {partitions}")
    if replication_factor < 1:
        raise PlacementError(
            ErrorCode.invalid_replication_factor,
            f"replication factor must be >= 1, not {replication_factor}",
        )
    n = len(brokers)
    if replication_factor > n:
        ids = ", ".join(str(b.broker_id) for b in sorted(brokers, key=lambda b: b.broker_id)) or "none"
        raise PlacementError(
            ErrorCode.invalid_replication_factor,
            f"replication factor {replication_factor} is larger than the number of live brokers "
            f"({n}: {ids})",
        )
    ring = _rack_alternating_ring(brokers)
    rack_of = {b.broker_id: b.rack for b in brokers}
    start = rng.randrange(n)
    shift_base = rng.randrange(n)
    assignment = []
    for p in range(first_partition, first_partition + partitions):
        leader_position = (start + p) % n
        replicas = [ring[leader_position]]
        others = [ring[(leader_position + 1 + k) % n] for k in range(n - 1)]
        if others:
            # Rotate once per trip of the leader around the ring.
            offset = (shift_base + p // n) % len(others)
            others = others[offset:] + others[:offset]
        racks_used = {rack_of[replicas[0]]}
        while len(replicas) < replication_factor:
            pick = next((b for b in others if b not in replicas and rack_of[b] not in racks_used), None)
            if pick is None:
                # Every rack holds a replica already: start another round over the racks.
                assert racks_used, "some broker must be left when RF <= brokers"
                racks_used = set()
                continue
            replicas.append(pick)
            racks_used.add(rack_of[pick])
        assignment.append(tuple(replicas))
    return assignment


def _rack_alternating_ring(brokers: Sequence[BrokerInfo]) -> list[int]:
    by_rack: dict[str, list[int]] = {}
    for b in brokers:
        # "" cannot collide with a real rack name in the sort: real names sort after it.
        by_rack.setdefault(b.rack or "", []).append(b.broker_id)
    lists = [sorted(by_rack[rack]) for rack in sorted(by_rack)]
    ring: list[int] = []
    for depth in range(max((len(ids) for ids in lists), default=0)):
        ring.extend(ids[depth] for ids in lists if depth < len(ids))
    return ring


def assignment_problem(assignment: Sequence[Sequence[int]], live_brokers: Collection[int]) -> str | None:
    """Why an explicit assignment (CreateTopics' `assignments`) is refused, or None.
    Kafka answers INVALID_REPLICA_ASSIGNMENT with this reason."""
    if not assignment:
        return "the assignment lists no partitions"
    sizes = {len(replicas) for replicas in assignment}
    if len(sizes) != 1:
        return "every partition must have the same number of replicas"
    for index, replicas in enumerate(assignment):
        if not replicas:
            return f"partition {index} has no replicas"
        if len(set(replicas)) != len(replicas):
            return f"partition {index} lists a broker twice: {list(replicas)}"
        unknown = sorted(set(replicas) - set(live_brokers))
        if unknown:
            return f"partition {index} names brokers that are not live: {unknown}"
    return None
