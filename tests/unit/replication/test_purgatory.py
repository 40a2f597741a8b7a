"""The purgatory's cost per timer and per check does not grow with the partitions watched."""

from __future__ import annotations

from ackly.replication.purgatory import DelayedOperation, Purgatory


class Op(DelayedOperation):
    def __init__(self, deadline_ms: int) -> None:
        super().__init__(deadline_ms)
        self.ready = False
        self.answers = 0

    def try_complete(self, now_ms: int) -> bool:
        if self.ready:
            self.answers += 1
        return self.ready

    def on_expire(self, now_ms: int) -> None:
        self.answers += 1


def visits_for(partitions: int, ticks: int) -> tuple[int, list[Op]]:
    """A follower's fetch waiting on every partition while `ticks` timers each expire one short
    wait on partition 0; then an append to one partition completes the fetch."""
    purgatory = Purgatory()
    fetch = Op(deadline_ms=10_000)
    purgatory.try_or_watch(fetch, range(partitions), now_ms=0)
    waits = []
    for tick in range(ticks):
        op = Op(deadline_ms=tick + 2)
        purgatory.try_or_watch(op, [0], now_ms=tick + 1)
        purgatory.expire(tick + 2)
        waits.append(op)
    fetch.ready = True
    purgatory.check(7, now_ms=ticks + 2)
    assert purgatory.next_deadline_ms() is None and len(purgatory) == 0
    return purgatory.visits, [fetch, *waits]


def test_every_operation_completes_exactly_once() -> None:
    _, ops = visits_for(partitions=50, ticks=200)
    assert [op.answers for op in ops] == [1] * len(ops)


def test_timers_do_not_walk_every_watched_partition() -> None:
    ticks = 500
    small, _ = visits_for(partitions=100, ticks=ticks)
    big, _ = visits_for(partitions=1_000, ticks=ticks)
    # A purge walks every partition, at most once per as many completions as partitions
    # watched: linear in partitions + ticks, where a walk on every timer is their product.
    assert big <= 4 * (1_000 + ticks), big
    assert big - small <= 4 * (1_000 - 100), (small, big)
