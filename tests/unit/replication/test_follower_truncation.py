"""Truncation by leader epoch (rule 11) against a model: replicas whose logs come from a random
history of elections, appends and partial replication, then a follower meets its leader.

Model: a log is a list of record identities (epoch, offset): within one leader epoch there is
one writer, so two replicas holding a record of epoch E at offset O hold the same record.
Histories are built with an oracle (a follower truncates to the longest common prefix with its
leader before copying), including unclean elections (any replica may be elected). Each replica
keeps a real LeaderEpochCache, maintained as the log keeps it: the new epoch assigned at LEO on
election, an entry for the first batch of each epoch, entries dropped on truncation.

Then the real protocol runs: the follower fetches with (LEO, last epoch); the leader answers a
diverging epoch as the fetch handler does (`_divergence`); the follower truncates with
`follower.truncation_offset`; repeat until the leader accepts the fetch. Properties: it ends
within a few exchanges; the follower's log is then a prefix of the leader's; and it truncated
exactly the divergent suffix, never a record the two logs share (KIP-101: never below the
common prefix, in particular never by its own HW).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from ackly.log.disk import SimDisk
from ackly.log.leader_epoch import UNDEFINED_EPOCH_OFFSET, LeaderEpochCache
from ackly.replication.follower import truncation_offset

Record = tuple[int, int]  # (epoch, offset)


@dataclass
class Replica:
    name: str
    cache: LeaderEpochCache
    log: list[Record] = field(default_factory=list)

    @property
    def leo(self) -> int:
        return len(self.log)

    def append(self, records: list[Record]) -> None:
        for epoch, offset in records:
            assert offset == len(self.log)
            if self.cache.latest_epoch is None or self.cache.latest_epoch != epoch:
                self.cache.assign(epoch, offset)
            self.log.append((epoch, offset))

    def truncate(self, offset: int) -> None:
        del self.log[offset:]
        self.cache.truncate_from_end(offset)


def make_replica(name: str, seed: int) -> Replica:
    disk = SimDisk(random.Random(seed))
    path = f"/data/{name}"
    disk.makedirs(path)
    return Replica(name, LeaderEpochCache(disk, path))


def lcp(a: list[Record], b: list[Record]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def divergence(leader: Replica, last_fetched_epoch: int, fetch_offset: int) -> tuple[int, int] | None:
    """The leader's check of a follower fetch (broker/handlers/fetch.py `_divergence`)."""
    if last_fetched_epoch < 0:
        if fetch_offset > leader.leo:
            latest = leader.cache.latest_epoch
            return (latest if latest is not None else -1, leader.leo)
        return None
    epoch, end = leader.cache.end_offset_for(last_fetched_epoch, leader.leo)
    if end == UNDEFINED_EPOCH_OFFSET:
        return None
    if end < fetch_offset or epoch < last_fetched_epoch:
        return (epoch, end)
    return None


# A history step: elect replica i | the leader appends n records | replicate to follower i,
# copying at most n records after catching up with the oracle.
steps = st.lists(
    st.one_of(
        st.tuples(st.just("elect"), st.integers(0, 2)),
        st.tuples(st.just("append"), st.integers(1, 4)),
        st.tuples(st.just("replicate"), st.integers(0, 2), st.integers(0, 6)),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(steps, st.integers(0, 2), st.integers(0, 2))
def test_the_follower_truncates_exactly_its_divergent_suffix(history: list[tuple], last_leader: int,
                                                             follower_index: int) -> None:
    replicas = [make_replica(f"r{i}", i) for i in range(3)]
    epoch = 0
    leader = replicas[0]
    leader.cache.assign(0, 0)
    for step in history:
        if step[0] == "elect":
            epoch += 1
            leader = replicas[step[1]]
            leader.cache.assign(epoch, leader.leo)  # Partition.make_leader
        elif step[0] == "append":
            leader.append([(epoch, leader.leo + i) for i in range(step[1])])
        else:
            follower = replicas[step[1]]
            if follower is leader:
                continue
            follower.truncate(lcp(follower.log, leader.log))  # the oracle
            follower.append(leader.log[follower.leo : follower.leo + step[2]])
    # The final election, then one follower meets the leader.
    epoch += 1
    leader = replicas[last_leader]
    leader.cache.assign(epoch, leader.leo)
    follower = replicas[follower_index]
    if follower is leader:
        return
    shared = lcp(follower.log, leader.log)
    before = list(follower.log)
    for _exchange in range(20):
        latest = follower.cache.latest_epoch
        answer = divergence(leader, latest if latest is not None else -1, follower.leo)
        if answer is None:
            break
        offset, _final = truncation_offset(follower.cache, follower.leo, answer[0], answer[1])
        assert offset <= follower.leo
        # At LEO too: that drops an epoch the follower assigned as leader and never wrote in.
        follower.truncate(offset)
    else:
        raise AssertionError("the truncation exchange did not converge")
    assert follower.log == leader.log[: follower.leo], "the follower's log is a prefix of the leader's"
    assert follower.leo >= shared, f"truncated below the common prefix: {before} vs {leader.log}"
    assert follower.leo == shared, "the divergent suffix is gone, and only it"


def test_the_kip_101_example_keeps_the_committed_record() -> None:
    """KIP-101 scenario 1: leader A has m1 m2; follower B has m1; A dies, B leads epoch 1 and
    appends m3; A returns as follower. Truncating A to its HW (1) would be wrong only if m2 were
    committed; by epoch A keeps exactly what B has."""
    a, b = make_replica("a", 1), make_replica("b", 2)
    a.cache.assign(0, 0)
    a.append([(0, 0), (0, 1)])
    b.append([(0, 0)])
    b.cache.assign(1, b.leo)
    b.append([(1, 1)])
    answer = divergence(b, a.cache.latest_epoch or 0, a.leo)
    assert answer == (0, 1)
    offset, final = truncation_offset(a.cache, a.leo, *answer)
    assert (offset, final) == (1, True)
    a.truncate(offset)
    assert divergence(b, a.cache.latest_epoch or 0, a.leo) is None
    assert a.log == b.log[: a.leo]
