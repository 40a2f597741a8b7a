"""Seeded cluster histories with the log cleaner running (`ackly sim --compaction`): the
compacted internal topics (`__transaction_state` here, with transactional producers) roll
small segments and every replica cleans its copy while brokers crash, restart, pause and get
cut off. The per-event invariants hold, with their compacted-topic form (a batch keeps its
offsets, every record is the one any replica had at its offset), and so do the transaction
checks after healing, with coordinators loading compacted `__transaction_state` partitions.

What this proves is the cleaner's interplay with crashes, truncations, pauses and
replication (swaps racing appends and failovers; no replica diverging). It is weak on what a
clean keeps: a cleaner that dropped the latest record of each key in `__transaction_state`
still passes these seeds; tests/unit/log/test_cleaner.py is what catches that.

Without `--compaction` the simulator does not run the cleaner at all, so the seeds of the
other files replay exactly as they did.
"""

from __future__ import annotations

import pytest

from ackly.sim.cluster import run_seed
from tests.sim.test_seeds import assert_ok

# Seeds whose histories compact (and, for 202, crash brokers 32 times meanwhile).
COMPACTION_SEEDS = (202, 203, 205)
COMPACTION_STEPS = 8_000


@pytest.mark.slow
@pytest.mark.parametrize("seed", COMPACTION_SEEDS)
def test_compaction_seed(seed: int) -> None:
    result = run_seed(seed, steps=COMPACTION_STEPS, transactions=True, compaction=True)
    assert_ok(result)
    assert "--compaction" in result.reproduction


@pytest.mark.slow
def test_the_compaction_seeds_do_compact() -> None:
    cleans = sum(
        run_seed(seed, steps=COMPACTION_STEPS, transactions=True, compaction=True).stats["cleans"]
        for seed in COMPACTION_SEEDS
    )
    assert cleans > 0, "no clean ran: these seeds no longer exercise compaction"
