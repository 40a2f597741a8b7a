"""`ackly cluster info` and `ackly cluster health`: a cluster as its Kafka Metadata shows it.

Both speak the Kafka protocol through confluent-kafka's AdminClient (one Metadata request for
every topic), not the admin HTTP listener, so they work against any Kafka cluster and need no
extra port open. `health` mirrors `rpk cluster health`: healthy means a controller is known,
no broker named in a partition's replicas is missing from the cluster, no partition is without
a leader and no partition's ISR is smaller than its replicas. It exits 0 when healthy, 1 with
the reasons when not, and 2 when the cluster cannot be reached.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ackly.librdkafka_log import quiet

EXIT_UNHEALTHY = 1
EXIT_UNREACHABLE = 2
_SHOWN = 5  # partitions named per reason

log = logging.getLogger("ackly.cli.cluster")


@dataclass
class ClusterView:
    cluster_id: str | None
    controller_id: int
    brokers: dict[int, str]
    partitions: dict[str, list[tuple[int, int, list[int], list[int]]]] = field(default_factory=dict)

    def health(self) -> dict[str, Any]:
        down: set[int] = set()
        leaderless: list[str] = []
        under: list[str] = []
        for topic, parts in sorted(self.partitions.items()):
            for index, leader, replicas, isr in parts:
                down.update(b for b in replicas if b not in self.brokers)
                name = f"{topic}-{index}"
                if leader < 0:
                    leaderless.append(name)
                if len(isr) < len(replicas):
                    under.append(name)
        reasons = []
        if self.controller_id < 0:
            reasons.append("no controller")
        if down:
            reasons.append(f"brokers down: {', '.join(map(str, sorted(down)))}")
        if leaderless:
            reasons.append(f"{len(leaderless)} leaderless partitions ({_names(leaderless)})")
        if under:
            reasons.append(f"{len(under)} under-replicated partitions ({_names(under)})")
        return {
            "is_healthy": not reasons, "reasons": reasons, "controller_id": self.controller_id,
            "brokers": sorted(self.brokers), "brokers_down": sorted(down),
            "leaderless_partitions": leaderless, "under_replicated_partitions": under,
        }


def _names(names: list[str]) -> str:
    return ", ".join(names[:_SHOWN]) + (", ..." if len(names) > _SHOWN else "")


def fetch_view(bootstrap: str, client_config: Mapping[str, str], timeout_s: float) -> ClusterView:
    """One Metadata request for all topics. RuntimeError with a clear message if the cluster
    cannot be reached within timeout_s."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    # librdkafka's own log lines go to our log (shown with --log-level DEBUG), not stderr.
    try:
        admin = AdminClient(quiet({"bootstrap.servers": bootstrap, **client_config}))
    except (KafkaException, ValueError, TypeError) as exc:
        raise RuntimeError(f"bad client setting: {exc}") from None
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise RuntimeError(f"cannot reach the cluster at {bootstrap}: {exc.args[0].str()}") from None
    view = ClusterView(
        cluster_id=metadata.cluster_id, controller_id=metadata.controller_id,
        brokers={b.id: f"{b.host}:{b.port}" for b in metadata.brokers.values()},
    )
    for name, topic in metadata.topics.items():
        view.partitions[name] = sorted(
            (p.id, p.leader, list(p.replicas), list(p.isrs)) for p in topic.partitions.values()
        )
    return view


def run(command: str, bootstrap: str, client_config: Mapping[str, str], output: str,
        timeout_s: float) -> int:
    """`info` or `health`; returns the exit status."""
    try:
        view = fetch_view(bootstrap, client_config, timeout_s)
    except RuntimeError as exc:
        print(f"ackly: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if command == "info":
        info: dict[str, Any] = {
            "cluster_id": view.cluster_id, "controller_id": view.controller_id,
            "brokers": [{"id": b, "address": a} for b, a in sorted(view.brokers.items())],
            "topics": len(view.partitions),
            "partitions": sum(len(p) for p in view.partitions.values()),
        }
        if output == "json":
            print(json.dumps(info))
        else:
            print(f"cluster id   {view.cluster_id}\ncontroller   {view.controller_id}")
            print(f"topics       {info['topics']} ({info['partitions']} partitions)\nbrokers")
            for b in info["brokers"]:
                marker = " (controller)" if b["id"] == view.controller_id else ""
                print(f"  {b['id']:>4}  {b['address']}{marker}")
        return 0
    health = view.health()
    if output == "json":
        print(json.dumps(health))
    else:
        print(f"healthy               {'yes' if health['is_healthy'] else 'no'}")
        print(f"controller            {health['controller_id']}")
        print(f"brokers               {', '.join(map(str, health['brokers']))}")
        print(f"brokers down          {', '.join(map(str, health['brokers_down'])) or '-'}")
        print(f"leaderless            {len(health['leaderless_partitions'])}")
        print(f"under-replicated      {len(health['under_replicated_partitions'])}")
        for reason in health["reasons"]:
            print(f"ackly: unhealthy: {reason}", file=sys.stderr)
    return 0 if health["is_healthy"] else EXIT_UNHEALTHY
