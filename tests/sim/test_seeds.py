"""Seeded cluster histories (src/ackly/sim): many seeds in CI, replays, and proof that the
checkers catch real bugs.

- `test_smoke_seed`: a few short histories, run with every `make fast`.
- `test_ci_seed` (slow): CI_SEEDS histories of CI_STEPS events each, swarm faults, invariants
  after every event, then the liveness phase and the history checks.
- `test_regression_seed`: every seed that once failed, with what it found. A fixed bug stays
  fixed for that history (the history itself may drift as the core changes; the seed still
  runs a hard one).
- determinism: one seed twice gives one trace; so does one seed under two hash seeds, in two
  processes (what `ackly sim --seed N` relies on to replay a CI failure).
- fault points: with a deliberate bug switched on in every broker, some seed of a small set must
  fail, and with the right complaint: the checkers are not vacuous.
A failure prints the one-line reproduction: `ackly sim --seed N --steps M`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from ackly.broker.faults import ACK_BEFORE_REPLICATION, FORGET_PRODUCER_STATE, SERVE_ABOVE_HW
from ackly.cli.main import cli
from ackly.sim.cluster import SimResult, run_seed

SMOKE_SEEDS = range(10)
SMOKE_STEPS = 1_000
# 120 histories of 4,000 events: about 2.5 minutes on one core (the suite's largest share; more
# seeds run with `ackly sim --seeds N`). 300 events (the first plan) end before most seeds'
# first fault; 4,000 hold several kills, partitions, pauses and failovers.
CI_SEEDS = range(1_000, 1_120)
CI_STEPS = 4_000

# Core bugs still open, by name; a seed that fails on one is an expected failure (xfail, not
# strict: a history drifts as the core changes) until the bug is fixed. Then delete the entry.
OPEN_BUGS: dict[str, str] = {}
OPEN_CI_SEEDS: dict[int, str] = {}

# Found by the seeds below and fixed: a leader forgot its pending ISR expansion before its
# metadata view showed the outcome (check_isr abandoned and re-sent it; a COMPARE_FAILED, which
# its own earlier successful send causes, abandoned it). HW then advanced over the smaller ISR,
# the controller elected the added member (in the stored ISR) and acknowledged records were
# truncated (rules 11, 13). Fixed as Kafka's Partition.handleAlterPartitionError does: the
# change stays pending until the metadata view reaches the refusal's revision, and a change
# the store applied stays pending, never re-sent, until the view shows it.
PENDING_ISR_FIXED = None

# Every seed that ever failed, with what it found: (seed, steps, brokers, finding, open bug or
# None). Seeds found by an earlier simulator version no longer replay that history; they still
# run a hard one.
REGRESSION_SEEDS: list[tuple[int, int, int, str, str | None]] = [
    (34, 2_000, 3, "livelock: a follower whose leader-epoch cache ended with an epoch it assigned as "
                   "leader and never wrote in sent that epoch forever; the leader answered 'diverging' "
                   "and truncation to LEO was a no-op that left the entry; the ISR never healed "
                   "(fixed: PartitionLog.truncate_to trims the cache, as Kafka's UnifiedLog.truncateTo)",
     None),
    (9_024, 6_000, 5, "simulator bug: after a pause, an input arriving at the resume overtook the "
                      "backlog, so a registration's put reached a broker before its earlier delete and "
                      "its view lost the broker for good (fixed in sim/broker.py)", None),
    (1_042, 6_000, 3, "pending ISR, through the COMPARE_FAILED path (an earlier fault plan)", None),
    (5_241, 6_000, 3, "pending ISR, through the check_isr path (an earlier simulator)", None),
    (40_204, 4_000, 3, "pending ISR: leader b3 (ISR {1,3}) asked to add b2; the store took it, but b3 "
                       "dropped the change (check_isr re-sent it, refused: its own write had moved the "
                       "partition epoch), acknowledged acks=all writes at offsets 40-44 with HW over "
                       "{1,3}, then the controller made b2 (LEO 40) leader: three acknowledged writes "
                       "lost", PENDING_ISR_FIXED),
    (10_007, 6_000, 3, "pending ISR: acks=all records committed at HW 2 over ISR {2,3} truncated after "
                       "the preferred replica, still short of them, was elected", PENDING_ISR_FIXED),
    (10_032, 6_000, 3, "pending ISR: a consumer read offsets 86-90, later truncated", PENDING_ISR_FIXED),
    (20_170, 8_000, 5, "pending ISR: two replicas hold different committed batches at offset 137 "
                       "(the last path: a change the store had applied was re-sent, refused on the "
                       "leader's stale view and abandoned; fixed: an applied change is never re-sent)",
     PENDING_ISR_FIXED),
    (20_236, 8_000, 5, "pending ISR: a replica truncated below its HW", PENDING_ISR_FIXED),
    (20_263, 8_000, 5, "pending ISR: consumers read 40 records later lost", PENDING_ISR_FIXED),
    (50_448, 5_000, 4, "pending ISR: an acks=all write acknowledged at offset 30 on its first attempt "
                       "lost (seen at the end with the per-event checks off)", PENDING_ISR_FIXED),
    (50_238, 5_000, 4, "pending ISR: two replicas hold different committed batches at offset 2; an "
                       "acks=all write acknowledged there lost", PENDING_ISR_FIXED),
]


def expected_failure(bug: str | None, open_bugs: dict[str, str] = OPEN_BUGS, *,
                     slow: bool = False) -> list[pytest.MarkDecorator]:
    """The marks of a seed that fails on open core bug `bug` (none for None): xfail, not
    strict; with `slow`, it runs with the slow seeds only."""
    if bug is None:
        return []
    xfail = pytest.mark.xfail(reason=f"open core bug {bug}: {open_bugs[bug][:120]}...", strict=False)
    return [xfail, pytest.mark.slow] if slow else [xfail]


# Deliberate bugs, the seeds that must catch them, and what the complaint must mention. Each
# range starts at the first seed that caught its bug when this was written (10, 0 and 14) and
# leaves room for the histories to drift as the core changes.
FAULT_POINT_CASES = [
    (ACK_BEFORE_REPLICATION, range(10, 50), ("lost write", "inconsistent read", "phantom read")),
    (SERVE_ABOVE_HW, range(0, 10), ("rule 3", "inconsistent read", "phantom read")),
    (FORGET_PRODUCER_STATE, range(14, 60), ("duplicate",)),
]
FAULT_POINT_STEPS = 2_000


def assert_ok(result: SimResult) -> None:
    if not result.ok:
        pytest.fail(
            f"{result.failure}\nplan: {result.stats.get('plan')}\nlast events:\n  "
            + "\n  ".join(result.trace_tail[-15:])
            + f"\nreproduce: {result.reproduction}",
            pytrace=False,
        )


@pytest.mark.parametrize("seed", SMOKE_SEEDS)
def test_smoke_seed(seed: int) -> None:
    assert_ok(run_seed(seed, steps=SMOKE_STEPS))


@pytest.mark.slow
@pytest.mark.parametrize(
    "seed", [pytest.param(seed, marks=expected_failure(OPEN_CI_SEEDS.get(seed))) for seed in CI_SEEDS]
)
def test_ci_seed(seed: int) -> None:
    assert_ok(run_seed(seed, steps=CI_STEPS))


@pytest.mark.parametrize(
    ("seed", "steps", "brokers", "found"),
    [
        pytest.param(seed, steps, brokers, found, id=f"seed{seed}", marks=expected_failure(bug))
        for seed, steps, brokers, found, bug in REGRESSION_SEEDS
    ],
)
def test_regression_seed(seed: int, steps: int, brokers: int, found: str) -> None:
    assert_ok(run_seed(seed, steps=steps, brokers=brokers))


def test_a_seed_replays_exactly() -> None:
    first = run_seed(7, steps=SMOKE_STEPS)
    second = run_seed(7, steps=SMOKE_STEPS)
    assert (first.trace_hash, first.events, first.stats) == (second.trace_hash, second.events, second.stats)
    assert run_seed(8, steps=SMOKE_STEPS).trace_hash != first.trace_hash


def test_a_seed_replays_exactly_in_another_process_with_another_hash_seed() -> None:
    """CI runs with a random PYTHONHASHSEED; `ackly sim --seed N` must replay its history anyway,
    so nothing in the simulator or the core may depend on the order of a set of strings."""
    hashes = []
    for hash_seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-m", "ackly", "--log-level", "ERROR", "sim", "--seed", "11", "--steps", "1500",
             "--json"],
            capture_output=True, text=True, timeout=120, check=False,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
        )
        assert out.stdout, out.stderr
        hashes.append(json.loads(out.stdout.splitlines()[0])["trace_hash"])
    assert hashes[0] == hashes[1]


@pytest.mark.parametrize(("fault", "seeds", "complaints"), FAULT_POINT_CASES,
                         ids=[c[0] for c in FAULT_POINT_CASES])
def test_the_checkers_catch_a_deliberate_bug(fault: str, seeds: range, complaints: tuple[str, ...]) -> None:
    for seed in seeds:
        result = run_seed(seed, steps=FAULT_POINT_STEPS, fault_points=(fault,))
        if not result.ok:
            assert result.failure is not None
            assert any(c in result.failure for c in complaints), result.failure
            assert f"--fault-point {fault}" in result.reproduction
            return
    pytest.fail(f"no seed of {seeds} caught the fault point {fault!r}")


def test_the_cli_prints_the_reproduction_of_a_failure() -> None:
    result = CliRunner().invoke(cli, ["sim", "--seed", "17", "--steps", "500", "--fault-point", SERVE_ABOVE_HW])
    assert result.exit_code == 1, result.output
    assert f"reproduce: ackly sim --seed 17 --steps 500 --fault-point {SERVE_ABOVE_HW}" in result.output


def test_the_cli_runs_a_passing_seed() -> None:
    result = CliRunner().invoke(cli, ["sim", "--seed", "3", "--steps", "300"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("seed 3: ok;")
