"""KIP-966 eligible leader replicas in the simulator.

- The scripted schedule of sim/schedules.py (RF 3, min ISR 2, acks=all, Kafka's default
  flushing; replicas die one after another, the last one standing loses power): without the
  ELR rules it loses acknowledged writes, with them it loses none.
- Swarm seeds with `eligible.leader.replicas.enable` on every broker: the per-event ELR
  invariants (sim/invariants.py) hold through kills, partitions and pauses, and the healed
  cluster converges. With flush.policy=always a crash never costs a replica its eligibility;
  with flush.policy=never (Kafka's flushing) every power loss does, and still no
  acknowledged acks=all write is lost and the healed cluster converges (rule 13's premise:
  never two replicas' disks lost at once). Without the ELR rules such seeds can truncate
  committed records (`ackly sim --flush-policy never` finds some: rule 11 broken).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from ackly.sim.cluster import run_seed
from ackly.sim.schedules import WRITES, last_replica_standing
from tests.sim.test_seeds import assert_ok

# Seeds whose histories write ELRs (replicas leave an ISR at the minimum).
ELR_SEEDS = (101, 109)
ELR_STEPS = 1_500
# Seeds whose kills make replicas leave the ELR by an unclean shutdown (flush.policy=never).
UNFLUSHED_ELR_SEEDS = (301, 308)


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    """The simulated brokers' logs are noise here; the level is put back for later tests
    (tests/unit/broker/test_event_logs.py reads the log records)."""
    logger = logging.getLogger("ackly")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


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


@pytest.mark.slow
@pytest.mark.parametrize("seed", ELR_SEEDS)
def test_elr_seed(seed: int) -> None:
    result = run_seed(seed, steps=ELR_STEPS, eligible_leader_replicas=True)
    assert_ok(result)
    assert result.stats["elr_states"] > 0
    assert "--eligible-leader-replicas" in result.reproduction


@pytest.mark.slow
@pytest.mark.parametrize("seed", UNFLUSHED_ELR_SEEDS)
def test_elr_seed_with_kafkas_flushing(seed: int) -> None:
    result = run_seed(seed, steps=ELR_STEPS, eligible_leader_replicas=True, flush_policy="never")
    assert_ok(result)
    assert result.stats["elr_states"] > 0 and result.stats["kills"] > 0
    assert "--flush-policy never" in result.reproduction
