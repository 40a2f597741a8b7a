"""`ackly verify`: run a workload under seeded faults and say which guarantees held.

    ackly verify --semantics at-least-once --brokers 3 --duration 60 --faults kill,partition,pause
    ackly verify --semantics exactly-once --bootstrap host1:9092,host2:9092
    ackly verify --matrix
    ackly verify --security sasl_ssl --duration 20
    ackly verify --bootstrap host1:9093 --client-config security.protocol=SASL_SSL \
        --client-config sasl.mechanism=SCRAM-SHA-512 --client-config sasl.username=... ...

Exit status: 0 when only allowed anomalies occurred (in every row of --matrix that ran), 1
when a forbidden one did, 2 when a single run could not be carried out (e.g. the broker has no
transactions) or the options are wrong.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click

from ackly.verify.clients import CLIENTS
from ackly.verify.nemesis import FAULT_KINDS, parse_faults
from ackly.verify.security import SECURITY_MODES, SecurityUnavailable, check_available, parse_client_config
from ackly.verify.settings import SEMANTICS, parse_assignments, preset, with_group_protocol, with_overrides

VERDICT_WIDTH = 22


def verdict_table(result: Any) -> list[str]:
    """The per-anomaly lines printed after a run."""
    lines = [f"{'anomaly':<{VERDICT_WIDTH}} {'count':>6}  verdict"]
    if result.check is None:
        return [*lines, f"{'(not run)':<{VERDICT_WIDTH}} {'-':>6}  {result.reason}"]
    for j in result.check.judgements:
        if j.status == "none":
            verdict = "ok"
        elif j.status == "violation":
            verdict = f"VIOLATION ({j.reason})"
        else:
            verdict = f"{j.status} ({j.reason})"
        lines.append(f"{j.name:<{VERDICT_WIDTH}} {j.count:>6}  {verdict}")
    return lines


def _print_result(result: Any) -> None:
    click.echo("")
    for line in verdict_table(result):
        click.echo(line)
    throughput = result.summary.get("stats", {}).get("throughput", {})
    for f, row in throughput.items():
        if f not in ("send", "poll", "txn"):
            continue
        click.echo(f"{f:<{VERDICT_WIDTH}} ok {int(row['ok'])} fail {int(row['fail'])} info {int(row['info'])} "
                   f"({row['ok_per_s']:.1f}/s)")
    word = {"pass": "PASS", "fail": "FAIL", "unfinished": "UNFINISHED"}[result.status]
    why = f": {result.reason}" if result.reason else ""
    click.echo(f"\n{result.semantics}: {word}{why} (seed {result.seed}; report in {result.out_dir})")


@click.command()
@click.option("--semantics", type=click.Choice(SEMANTICS), default="at-least-once", show_default=True,
              help="the delivery semantics to configure and to hold the run to")
@click.option("--matrix", is_flag=True, help="run every semantics in turn and report them together")
@click.option("--brokers", type=click.IntRange(1, 9), default=3, show_default=True,
              help="brokers of the cluster verify starts (without --bootstrap)")
@click.option("--duration", "duration_s", type=click.FloatRange(2, 3600), default=60, show_default=True,
              help="seconds of workload (faults in the first three quarters)")
@click.option("--faults", default="kill,partition,pause", show_default=True,
              help=f"comma-separated, or none; known: {', '.join(FAULT_KINDS)}")
@click.option("--seed", type=int, default=None, help="replay this fault schedule (default: random)")
@click.option("--bootstrap", default=None, metavar="HOST:PORT[,...]",
              help="verify a running Kafka-compatible cluster instead of starting one")
@click.option("--client", type=click.Choice(CLIENTS), default="confluent", show_default=True)
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="override a client or topic setting, e.g. acks=1, "
                   "unclean.leader.election.enable=true (repeatable)")
@click.option("--out", "out_dir", default=None, help="report directory (default: ./verify-reports/...)")
@click.option("--partitions", type=click.IntRange(1, 64), default=3, show_default=True)
@click.option("--producers", type=click.IntRange(1, 32), default=2, show_default=True)
@click.option("--consumers", type=click.IntRange(0, 32), default=2, show_default=True)
@click.option("--rate", "ops_per_s", type=click.FloatRange(1, 10_000), default=50, show_default=True,
              help="operations per second per producer")
@click.option("--security", type=click.Choice(SECURITY_MODES), default="plaintext", show_default=True,
              help="the security protocol of the cluster verify starts, for clients and between "
                   "brokers (TLS certificates and SCRAM users are made for the run)")
@click.option("--client-config", "client_config", multiple=True, metavar="KEY=VALUE",
              help="with --bootstrap: a client security setting (security.protocol, sasl.*, ssl.*; "
                   "librdkafka's names), repeatable")
@click.option("--group-protocol", type=click.Choice(("classic", "consumer")), default="classic",
              show_default=True,
              help="the consumers' group protocol: consumer is KIP-848's (ConsumerGroupHeartbeat), "
                   "with --client confluent and the queue workload (at-most-once, at-least-once)")
@click.option("--keep-data", is_flag=True, help="keep the cluster's data directories")
@click.option("--planted-fault", "planted_faults", multiple=True, hidden=True,
              help="testing only: start the brokers with this fault point enabled")
def verify(semantics: str, matrix: bool, brokers: int, duration_s: float, faults: str,
           seed: int | None, bootstrap: str | None, client: str, assignments: Sequence[str],
           out_dir: str | None, partitions: int, producers: int, consumers: int, ops_per_s: float,
           security: str, client_config: Sequence[str], group_protocol: str, keep_data: bool,
           planted_faults: Sequence[str]) -> None:
    """Run a workload under faults, check its history, print a verdict per anomaly."""
    import logging
    import os

    # Under faults the proxies and clients log every refused connection: that is the point.
    for name in ("ackly.fault_proxy", "kafka", "aiokafka"):
        logging.getLogger(name).setLevel(logging.CRITICAL)

    from ackly.librdkafka_log import written_to
    from ackly.verify.runner import RunOptions, default_out_dir, run

    try:
        kinds = parse_faults(faults)
        overrides = parse_assignments(assignments)
        rows = list(SEMANTICS) if matrix else [semantics]
        settings = [with_group_protocol(with_overrides(preset(s), overrides), group_protocol)
                    for s in rows]
        client_security = parse_client_config(client_config)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if security != "plaintext" and bootstrap is not None:
        raise click.UsageError("--security sets up the cluster verify starts; "
                               "for --bootstrap give the clients' settings with --client-config")
    if client_security and bootstrap is None:
        raise click.UsageError("--client-config goes with --bootstrap; the cluster verify starts "
                               "is secured with --security")
    if group_protocol == "consumer" and client != "confluent":
        raise click.UsageError("--group-protocol consumer needs --client confluent: kafka-python and "
                               "aiokafka speak only the classic group protocol")
    if group_protocol == "consumer" and any(s.workload != "queue" for s in settings):
        raise click.UsageError("--group-protocol consumer runs the queue workload only "
                               "(--semantics at-most-once or at-least-once)")
    if (security != "plaintext" or client_security) and client != "confluent":
        raise click.UsageError("a secured cluster is driven with --client confluent only")
    try:
        check_available(security)
    except SecurityUnavailable as exc:
        raise click.UsageError(str(exc)) from None
    if planted_faults and bootstrap is not None:
        raise click.UsageError("--planted-fault needs the cluster verify starts itself")
    if matrix and seed is None:  # one schedule for every row, so the rows compare
        import secrets

        seed = secrets.randbelow(2**31)
    base = out_dir or default_out_dir("matrix" if matrix else semantics)
    # librdkafka's lines (connections refused under faults, ...) go to the report directory,
    # not between the progress lines; --log-level DEBUG shows them as well.
    with written_to(os.path.join(base, "librdkafka.log")):
        results = []
        for row in settings:
            options = RunOptions(
                settings=row, out_dir=os.path.join(base, row.semantics) if matrix else base,
                duration_s=duration_s, brokers=brokers, faults=kinds, seed=seed, bootstrap=bootstrap,
                client=client, partitions=partitions, producers=producers, consumers=consumers,
                ops_per_s=ops_per_s, planted_faults=tuple(planted_faults), keep_data=keep_data,
                security=security, client_config=client_security,
            )
            try:
                result = run(options, progress=lambda line: click.echo(line))
            except Exception as exc:
                click.echo(f"ackly verify: {row.semantics}: the run could not be carried out: {exc}", err=True)
                sys.exit(2)
            _print_result(result)
            results.append(result)
    if matrix:
        click.echo("\nmatrix:")
        for r in results:
            failed = [j.name for j in r.check.violations()] if r.check is not None else []
            detail = f"violations: {', '.join(failed)}" if failed else r.reason
            click.echo(f"  {r.semantics:<18} {r.status.upper():<11} {detail}")
        sys.exit(1 if any(r.status == "fail" for r in results) else 0)
    sys.exit(results[0].exit_code)
