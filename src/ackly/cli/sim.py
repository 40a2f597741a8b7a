"""`ackly sim`: run (or replay) seeded simulations of a whole cluster (src/ackly/sim/).

One seed is one history: `ackly sim --seed 42 --steps 2000` replays exactly the history CI ran
under that seed, and a failing run ends with that one line to copy. `--seeds K` runs K seeds
from `--seed` on, for exploring.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TYPE_CHECKING

import click

from ackly.broker.faults import KNOWN_FAULTS

if TYPE_CHECKING:
    from ackly.sim.cluster import SimResult


def _summary(result: SimResult, elapsed_s: float) -> str:
    stats = result.stats
    status = "ok" if result.ok else f"FAILED in the {result.phase} phase"
    return (
        f"seed {result.config.seed}: {status}; {result.events} events, "
        f"{result.virtual_ms / 1000:.1f} s virtual, {elapsed_s:.2f} s real; "
        f"{stats.get('writes', 0)} writes ({stats.get('acknowledged', 0)} acked), "
        f"{stats.get('reads', 0)} reads, faults {stats.get('faults', {})}, "
        f"elections {stats.get('elections', 0)}; trace {result.trace_hash[:16]}"
        + (f"; transactions {stats['transactions']}, {stats.get('committed_reads', 0)} committed reads"
           if "transactions" in stats else "")
    )


@click.command("sim")
@click.option("--seed", type=int, required=True, help="the history to run (everything follows from it)")
# The simulator (the whole broker) is imported when a simulation runs, not whenever `ackly` starts.
@click.option("--steps", type=int, default=None, help="events in the fault phase  [default: 2000]")
@click.option("--brokers", type=int, default=3, show_default=True)
@click.option("--seeds", type=int, default=1, show_default=True, help="run this many seeds from --seed on")
@click.option("--fault-point", "fault_points", multiple=True, type=click.Choice(sorted(KNOWN_FAULTS)),
              help="switch on a deliberate bug in every broker (proves the checkers catch it)")
@click.option("--verbose", is_flag=True,
              help="print the fault plan, the brokers' warnings and the last events of a failure")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per seed")
@click.option("--transactions", is_flag=True,
              help="add transactional producers and read_committed consumers (tests/sim's txn seeds)")
@click.option("--compaction", is_flag=True,
              help="run the log cleaner, with small segments of the compacted internal topics")
@click.option("--consumer-groups", is_flag=True,
              help="add members of a consumer group of the KIP-848 protocol (ConsumerGroupHeartbeat)")
@click.option("--eligible-leader-replicas", "elr", is_flag=True,
              help="every broker with eligible.leader.replicas.enable=true (KIP-966)")
@click.option("--flush-policy", type=click.Choice(("always", "interval", "never")), default="always",
              show_default=True, help="the user topic's flush.policy (never: Kafka's flushing)")
@click.option("--transaction-version", type=click.Choice(["0", "2"]), default="0", show_default=True,
              help="with --transactions: 2 makes the producers speak KIP-890 part 2 and resend some "
                   "EndTxn late, after the next transaction began")
def sim(seed: int, steps: int | None, brokers: int, seeds: int, fault_points: tuple[str, ...], verbose: bool,
        as_json: bool, transactions: bool, compaction: bool, consumer_groups: bool, elr: bool,
        flush_policy: str, transaction_version: str) -> None:
    """Simulate a cluster under faults, deterministically, and check every guarantee."""
    from ackly.sim.cluster import DEFAULT_STEPS

    steps = DEFAULT_STEPS if steps is None else steps
    if steps < 1 or brokers < 1 or seeds < 1:
        raise click.UsageError("--steps, --brokers and --seeds must be at least 1")
    logger = logging.getLogger("ackly")
    level = logger.level
    if not verbose:
        # A history crashes brokers on purpose: their recovery warnings, and the coordinators'
        # errors for appends refused while the ISR is short, are expected noise.
        logger.setLevel(logging.CRITICAL)
    try:
        failed = _run(seed, seeds, steps, brokers, tuple(fault_points), verbose, as_json, transactions,
                      compaction, consumer_groups, elr, flush_policy, int(transaction_version))
    finally:
        logger.setLevel(level)
    if seeds > 1 and not as_json:
        click.echo(f"{seeds - failed} of {seeds} seeds passed")
    sys.exit(1 if failed else 0)


def _run(seed: int, seeds: int, steps: int, brokers: int, fault_points: tuple[str, ...], verbose: bool,
         as_json: bool, transactions: bool, compaction: bool = False, consumer_groups: bool = False,
         elr: bool = False, flush_policy: str = "always", transaction_version: int = 0) -> int:
    """Run the seeds, print one line each (or JSON); return how many failed."""
    from ackly.sim.cluster import run_seed

    failed = 0
    for s in range(seed, seed + seeds):
        started = time.perf_counter()
        result = run_seed(s, steps=steps, brokers=brokers, fault_points=fault_points, transactions=transactions,
                          compaction=compaction, consumer_groups=consumer_groups,
                          eligible_leader_replicas=elr, flush_policy=flush_policy,
                          transaction_version=transaction_version)
        elapsed = time.perf_counter() - started
        if as_json:
            click.echo(json.dumps({
                "seed": s, "ok": result.ok, "phase": result.phase, "failure": result.failure,
                "events": result.events, "virtual_ms": result.virtual_ms, "trace_hash": result.trace_hash,
                "stats": result.stats, "reproduction": result.reproduction,
            }))
        else:
            click.echo(_summary(result, elapsed))
            if verbose:
                click.echo(f"  {result.stats.get('plan', '')}")
        if not result.ok:
            failed += 1
            if not as_json:
                click.echo(f"  {result.failure}")
                if verbose:
                    click.echo("  last events:\n    " + "\n    ".join(result.trace_tail))
                click.echo(f"  reproduce: {result.reproduction}")
    return failed
