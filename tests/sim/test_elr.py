"""KIP-966 eligible leader replicas in the simulator.

- The scripted schedule of sim/schedules.py (RF 3, min ISR 2, acks=all, Kafka's default
  flushing; replicas die one after another, the last one standing loses power): without the
  ELR rules it loses acknowledged writes, with them it loses none.
- Swarm seeds with `eligible.leader.replicas.enable` on every broker: the per-event ELR
  invariants (sim/invariants.py) hold through kills, partitions and pauses, and the healed
  cluster converges (with flush.policy=always a crash never costs a replica its eligibility).
"""

from __future__ import annotations

import logging

import pytest

from ackly.sim.cluster import run_seed
from ackly.sim.schedules import WRITES, last_replica_standing
from tests.sim.test_seeds import assert_ok

ELR_SEEDS = (3, 5, 7)
ELR_STEPS = 1_500


@pytest.fixture(autouse=True)
def _quiet() -> None:
    logging.getLogger("ackly").setLevel(logging.CRITICAL)


def test_without_eligible_leader_replicas_the_last_replica_standing_loses_acknowledged_writes() -> None:
    result = last_replica_standing(eligible_leader_replicas=False)
    assert result.acknowledged == WRITES
    assert len(result.lost_writes) == WRITES, result.problems
    # The per-event checks see the committed prefix truncated as it happens.
    assert any("rule 11" in v for v in result.violations), result.violations


def test_with_eligible_leader_replicas_no_acknowledged_write_is_lost() -> None:
    result = last_replica_standing(eligible_leader_replicas=True)
    assert result.acknowledged == WRITES
    assert result.problems == [] and result.violations == [], (result.problems, result.violations)
    a, b = result.roles["A"], result.roles["B"]
    stopped, back, elr_back = (result.states[k] for k in ("stopped", "leader-back", "elr-back"))
    assert stopped is not None and back is not None and elr_back is not None
    # The cleanly stopped replica left the ISR for the ELR (the ISR was at the minimum)...
    assert (stopped.isr, stopped.elr) == ((a,), (b,))
    # ...the last replica standing, back from its power loss, left the ELR and was not elected...
    assert (back.leader, back.isr, back.elr, back.last_known_elr) == (-1, (), (b,), (a,))
    # ...and the ELR member was, as it returned.
    assert (elr_back.leader, elr_back.isr) == (b, (b,))


@pytest.mark.parametrize("seed", ELR_SEEDS)
def test_elr_seed(seed: int) -> None:
    result = run_seed(seed, steps=ELR_STEPS, eligible_leader_replicas=True)
    assert_ok(result)
    assert "--eligible-leader-replicas" in result.reproduction
