"""Seeded histories with the "wall-step" fault (sim/faults.py, WallSteps): a broker's wall
clock jumps a day forwards or minutes back and is put right later, while every deadline runs
on the monotonic clock. The invariants hold after every event and the history checks pass.

About half of all seeds draw the fault (the CI seeds in test_seeds.py run it too); these are
ones that fire it, on one broker and on three, with and without transactions and compaction.
"""

from __future__ import annotations

from typing import Any

import pytest

from ackly.sim.cluster import run_seed

pytestmark = pytest.mark.slow

STEPS = 2_000
SEEDS: list[tuple[int, int, dict[str, Any]]] = [  # (brokers, seed, options)
    (1, 0, {}), (3, 0, {}), (3, 0, {"transactions": True}),
    (3, 0, {"transactions": True, "compaction": True}),
]


@pytest.mark.parametrize(("brokers", "seed", "options"), SEEDS,
                         ids=[f"b{b}-seed{s}-{'-'.join(o) or 'plain'}" for b, s, o in SEEDS])
def test_wall_step_seed(brokers: int, seed: int, options: dict[str, Any]) -> None:
    result = run_seed(seed, steps=STEPS, brokers=brokers, **options)
    assert result.ok, f"{result.failure}\nreproduce: {result.reproduction}"
    # The seed still steps a clock: a drift that stops it would make this test vacuous.
    assert result.stats["faults"].get("wall-step", 0) > 0, result.stats["plan"]
