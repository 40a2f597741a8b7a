"""`ackly transactions`: the open transactions of a cluster, and the hanging ones.

Open transactions (Kafka's `kafka-transactions.sh list` + `describe`): every broker is asked
for the transactions it coordinates (ListTransactions v1, states Ongoing, PrepareCommit,
PrepareAbort, PrepareEpochFence), then each coordinator describes its own
(DescribeTransactions v0): producer id and epoch, state, start, timeout, partitions.

Hanging transactions (`--hanging`, Kafka's `kafka-transactions.sh find-hanging`): every
partition leader is asked which producers have a transaction open on it (DescribeProducers v0,
`current_txn_start_offset` >= 0). One is hanging if no coordinator lists an open transaction of
that producer id that includes the partition, or if it is older than the largest transaction
timeout (`--max-timeout-ms`, transaction.max.timeout.ms): a coordinator aborts a transaction
past its timeout, so an open one that old has lost its coordinator's attention (its LSO is
stuck, and read_committed consumers with it).

The requests are plain blocking Kafka requests (ackly.testing.wire's client), one broker at a
time; a broker that cannot be reached is reported and skipped.
"""

from __future__ import annotations

import datetime
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import click

from ackly.protocol.messages import build_request

OPEN_STATES = ("Ongoing", "PrepareCommit", "PrepareAbort", "PrepareEpochFence")
DEFAULT_MAX_TIMEOUT_MS = 900_000  # transaction.max.timeout.ms default
METADATA, DESCRIBE_PRODUCERS, DESCRIBE_TRANSACTIONS, LIST_TRANSACTIONS = 3, 61, 65, 66


@dataclass(frozen=True)
class OpenTransaction:
    transactional_id: str
    coordinator: int
    producer_id: int
    producer_epoch: int
    state: str
    start_ms: int
    timeout_ms: int
    partitions: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class HangingTransaction:
    topic: str
    partition: int
    leader: int
    producer_id: int
    producer_epoch: int
    start_offset: int
    last_timestamp_ms: int
    reason: str


@dataclass
class Report:
    open: list[OpenTransaction] = field(default_factory=list)
    hanging: list[HangingTransaction] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)


def _ms(value: Any) -> int:
    if isinstance(value, datetime.timedelta):
        return value // datetime.timedelta(milliseconds=1)
    if isinstance(value, datetime.datetime):
        return round(value.timestamp() * 1000)
    return int(value)


class _Cluster:
    """One blocking connection per broker, opened when first needed."""

    def __init__(self, bootstrap: str, timeout_s: float) -> None:
        from ackly.testing.wire import WireClient

        self._client = WireClient
        self.timeout_s = timeout_s
        self.clients: dict[str, Any] = {}
        self.metadata = self.ask(bootstrap, build_request(METADATA, 12, {
            "topics": None, "allow_auto_topic_creation": False,
            "include_topic_authorized_operations": False}))
        self.brokers = {int(b.node_id): f"{b.host}:{b.port}" for b in self.metadata.brokers}

    def ask(self, address: str, request: Any) -> Any:
        client = self.clients.get(address)
        if client is None:
            client = self.clients[address] = self._client(address, self.timeout_s)
        return client.request(request)

    def close(self) -> None:
        for client in self.clients.values():
            client.close()


def collect(bootstrap: str, *, hanging: bool = False, max_timeout_ms: int = DEFAULT_MAX_TIMEOUT_MS,
            now_ms: int | None = None, timeout_s: float = 10.0) -> Report:
    """Ask the cluster (see the module docstring)."""
    report = Report()
    cluster = _Cluster(bootstrap, timeout_s)
    try:
        for broker_id, address in sorted(cluster.brokers.items()):
            try:
                report.open.extend(_open_on(cluster, broker_id, address))
            except OSError as exc:
                report.unreachable.append(f"broker {broker_id} at {address}: {exc}")
        if hanging:
            now = int(time.time() * 1000) if now_ms is None else now_ms
            report.hanging = _hanging(cluster, report, max_timeout_ms, now)
    finally:
        cluster.close()
    report.open.sort(key=lambda t: t.transactional_id)
    return report


def _open_on(cluster: _Cluster, broker_id: int, address: str) -> list[OpenTransaction]:
    listed = cluster.ask(address, build_request(LIST_TRANSACTIONS, 1, {
        "state_filters": list(OPEN_STATES), "producer_id_filters": [], "duration_filter": -1}))
    ids = [t.transactional_id for t in listed.transaction_states]
    if not ids:
        return []
    described = cluster.ask(address, build_request(DESCRIBE_TRANSACTIONS, 0, {"transactional_ids": ids}))
    out = []
    for t in described.transaction_states:
        if int(t.error_code) != 0:
            continue  # it moved or finished between the two requests
        out.append(OpenTransaction(
            transactional_id=t.transactional_id, coordinator=broker_id, producer_id=int(t.producer_id),
            producer_epoch=int(t.producer_epoch), state=t.transaction_state,
            start_ms=_ms(t.transaction_start_time), timeout_ms=_ms(t.transaction_timeout),
            partitions=tuple((topic.topic, int(p)) for topic in t.topics for p in topic.partitions),
        ))
    return out


def _hanging(cluster: _Cluster, report: Report, max_timeout_ms: int, now_ms: int) -> list[HangingTransaction]:
    by_producer: dict[int, list[OpenTransaction]] = {}
    for txn in report.open:
        by_producer.setdefault(txn.producer_id, []).append(txn)
    by_leader: dict[int, list[tuple[str, int]]] = {}
    for topic in cluster.metadata.topics:
        for p in topic.partitions:
            if int(p.leader_id) >= 0:
                by_leader.setdefault(int(p.leader_id), []).append((str(topic.name), int(p.partition_index)))
    out = []
    for leader, partitions in sorted(by_leader.items()):
        address = cluster.brokers.get(leader)
        if address is None:
            continue
        try:
            answer = cluster.ask(address, build_request(DESCRIBE_PRODUCERS, 0, {"topics": [
                {"name": t, "partition_indexes": ids} for t, ids in _group(partitions).items()]}))
        except OSError as exc:
            report.unreachable.append(f"broker {leader} at {address}: {exc}")
            continue
        for topic in answer.topics:
            for part in topic.partitions:
                if int(part.error_code) != 0:
                    continue
                for producer in part.active_producers:
                    start = int(producer.current_txn_start_offset)
                    if start < 0:
                        continue
                    reason = _why_hanging(by_producer.get(int(producer.producer_id), []),
                                          (topic.name, int(part.partition_index)),
                                          int(producer.last_timestamp), max_timeout_ms, now_ms)
                    if reason:
                        out.append(HangingTransaction(
                            topic.name, int(part.partition_index), leader, int(producer.producer_id),
                            int(producer.producer_epoch), start, int(producer.last_timestamp), reason))
    return out


def _why_hanging(open_txns: list[OpenTransaction], tp: tuple[str, int], last_timestamp_ms: int,
                 max_timeout_ms: int, now_ms: int) -> str:
    if not any(tp in t.partitions for t in open_txns):
        return "no coordinator lists an open transaction of this producer on this partition"
    if last_timestamp_ms >= 0 and now_ms - last_timestamp_ms > max_timeout_ms:
        return f"open for more than the largest transaction timeout ({max_timeout_ms} ms)"
    return ""


def _group(partitions: Iterable[tuple[str, int]]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for topic, index in partitions:
        out.setdefault(topic, []).append(index)
    return out


def _print(report: Report, hanging: bool, now_ms: int) -> None:
    click.echo(f"{'TRANSACTIONAL ID':<24} {'COORDINATOR':>11} {'PRODUCER ID':>12} {'EPOCH':>5} "
               f"{'STATE':<14} {'DURATION MS':>11} {'TIMEOUT MS':>10} PARTITIONS")
    for t in report.open:
        duration = now_ms - t.start_ms if t.start_ms >= 0 else -1
        parts = ",".join(f"{topic}-{p}" for topic, p in t.partitions)
        click.echo(f"{t.transactional_id:<24} {t.coordinator:>11} {t.producer_id:>12} {t.producer_epoch:>5} "
                   f"{t.state:<14} {duration:>11} {t.timeout_ms:>10} {parts}")
    if hanging:
        click.echo("")
        click.echo(f"hanging transactions: {len(report.hanging)}")
        for h in report.hanging:
            click.echo(f"{h.topic}-{h.partition} leader {h.leader} producer {h.producer_id} epoch "
                       f"{h.producer_epoch} from offset {h.start_offset}: {h.reason}")
    for line in report.unreachable:
        click.echo(f"unreachable: {line}", err=True)


@click.command()
@click.option("--bootstrap", required=True, metavar="HOST:PORT", help="any broker of the cluster")
@click.option("--hanging", is_flag=True, help="also look for hanging transactions on every partition")
@click.option("--max-timeout-ms", default=DEFAULT_MAX_TIMEOUT_MS, show_default=True, type=click.IntRange(1),
              help="the cluster's transaction.max.timeout.ms (older open transactions are hanging)")
def transactions(bootstrap: str, hanging: bool, max_timeout_ms: int) -> None:
    """List the open transactions (and with --hanging, the hanging ones)."""
    now_ms = int(time.time() * 1000)
    try:
        report = collect(bootstrap, hanging=hanging, max_timeout_ms=max_timeout_ms, now_ms=now_ms)
    except OSError as exc:
        raise click.ClickException(f"cannot reach {bootstrap}: {exc}") from None
    _print(report, hanging, now_ms)
    if hanging and report.hanging:
        sys.exit(2)
