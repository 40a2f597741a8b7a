"""Seeded histories with the "disk-error" fault (sim/faults.py): a broker's next fsync of a log
fails with EIO (its unflushed writes are lost, as Linux's failed write-back loses them) or its
next append fails with ENOSPC; the broker takes its log directory offline, leaves, exits and
restarts later. The invariants hold after every event and no acknowledged write is lost.

About half of all seeds draw the fault (the CI seeds in test_seeds.py run it too); these
seeds are ones that fire it, on one broker and on three.
"""

from __future__ import annotations

import pytest

from ackly.sim.cluster import run_seed

STEPS = 2_000
SEEDS = [(1, 0), (1, 1), (1, 3), (3, 5), (3, 6), (3, 24)]  # (brokers, seed)


@pytest.mark.parametrize(("brokers", "seed"), SEEDS, ids=[f"b{b}-seed{s}" for b, s in SEEDS])
def test_disk_error_seed(brokers: int, seed: int) -> None:
    result = run_seed(seed, steps=STEPS, brokers=brokers)
    assert result.ok, f"{result.failure}\nreproduce: {result.reproduction}"
    assert result.stats["faults"].get("disk-error", 0) > 0, result.stats["plan"]
    # The seed still fires the fault: a drift that stops it would make this test vacuous.
    assert result.stats["log_dir_failures"] > 0, result.stats
