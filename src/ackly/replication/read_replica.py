"""Which replica a consumer should read from (KIP-392, fetching from the closest replica).

A leader asked for records by a consumer that names its rack (Fetch v11+ `rack_id`, the
client's `client.rack`) may answer with a preferred read replica instead of records; the
consumer then fetches from that broker, which serves it up to its own HW (LSO for
read_committed). Only the leader decides, and only for consumers (Kafka's
ReplicaManager.findPreferredReadReplica); the rule is Kafka's RackAwareReplicaSelector:

- no rack named, or the leader is in the client's rack: the leader (no redirect);
- otherwise, among the followers in the client's rack that are in the ISR and already hold the
  fetch offset (their LEO as this leader last saw it is at or past it), the most caught-up one
  (largest LEO, then the one caught up most recently); none: the leader.

An ISR member is chosen, never a lagging replica, so a consumer sent to a follower reads what
the leader would have given it, only later by at most the follower's replication lag (its HW
trails the leader's). Pure: the caller gives the partition's state and the brokers' racks.
"""

from __future__ import annotations

from collections.abc import Callable

from ackly.replication.partition import Partition


def preferred_read_replica(
    p: Partition, client_rack: str, fetch_offset: int, rack_of: Callable[[int], str | None],
    now_ms: int,
) -> int | None:
    """The broker id a consumer in `client_rack` should fetch `p` from, or None for the leader
    (this broker). `rack_of(broker_id)` is the broker's registered rack (None: unknown)."""
    if not client_rack or rack_of(p.broker_id) == client_rack:
        return None
    best: tuple[int, int, int] | None = None
    for f in p.followers.values():
        if f.broker_id not in p.isr or f.log_end_offset < fetch_offset:
            continue
        if rack_of(f.broker_id) != client_rack:
            continue
        # Kafka's ReplicaView.comparator: the largest LEO, then the shortest time since the
        # replica was last caught up.
        rank = (f.log_end_offset, -(now_ms - f.last_caught_up_ms), f.broker_id)
        if best is None or rank > best:
            best = rank
    return None if best is None else best[2]
