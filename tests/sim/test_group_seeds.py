"""Seeded cluster histories with members of a KIP-848 consumer group (`ackly sim
--consumer-groups`, src/ackly/sim/group_clients.py): two to four members heartbeat to the
group's coordinator, leave and come back under new ids, and are fenced when a fault cuts them
off long enough, while brokers crash, restart, pause and get cut off and coordinator shards
move. Checked: member epochs never go back, members given partitions at one epoch share
none, no partition is owned by two members at once in virtual time (a fenced member's spans
aside, see group_clients.py), and after healing the group converges (one epoch, every
partition owned once).

- `test_group_smoke_seed`: two short histories, with every `make fast`.
- `test_the_checks_catch_a_coordinator_that_assigns_before_release` (slow): with the
  coordinator's release check taken out, a seed that passes fails.
Without `--consumer-groups` no member is drawn, so the other files' seeds replay as before.
"""

from __future__ import annotations

import pytest

from ackly.coordinator.consumer_group import ConsumerGroup
from ackly.sim.cluster import run_seed
from tests.sim.test_seeds import assert_ok

GROUP_SMOKE_SEEDS = (2, 6)
GROUP_STEPS = 3_000


@pytest.mark.parametrize("seed", GROUP_SMOKE_SEEDS)
def test_group_smoke_seed(seed: int) -> None:
    result = run_seed(seed, steps=GROUP_STEPS, consumer_groups=True)
    assert_ok(result)
    assert result.stats["group"]["answers"] > 0
    assert "--consumer-groups" in result.reproduction


@pytest.mark.slow
def test_the_checks_catch_a_coordinator_that_assigns_before_release(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ConsumerGroup, "owner_of", lambda self, tp: None)
    result = run_seed(2, steps=GROUP_STEPS, consumer_groups=True)
    assert not result.ok
    assert result.failure is not None and "at once" in result.failure, result.failure
