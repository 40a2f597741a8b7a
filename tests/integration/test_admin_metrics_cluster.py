"""The admin listener on a 3-broker cluster (etcd, one `ackly serve` process each).

A broker is killed: the brokers still up report under-replicated partitions (the topic with
three replicas) and, on the controller, offline partitions (the one-replica partition the
killed broker held) in /metrics; `/v1/cluster/health` names the broker down; and
`ackly cluster health` exits non-zero with the reasons. After the broker is restarted and
back in every ISR, both counts return to 0 and the CLI exits 0.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

from ackly.testing.cluster_processes import ClusterProcesses, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.clients, pytest.mark.timeout(300)]

CONFIGS = {
    "broker.session.timeout.ms": "3000",
    "broker.heartbeat.interval.ms": "500",
    "replica.lag.time.max.ms": "4000",
    "replica.fetch.backoff.ms": "200",
    "admin.listener": "127.0.0.1:0",
}
WAIT_S = 60.0
_ADMIN = re.compile(r"admin on (http://[^\s;)]+)")


def admin_url(cluster: ClusterProcesses, broker_id: int) -> str:
    """The admin listener of the broker's current incarnation (port 0: it changes on restart)."""
    found = [m.group(1) for line in cluster.brokers[broker_id].output if (m := _ADMIN.search(line))]
    assert found, f"broker {broker_id} printed no admin listener"
    return found[-1]


def scrape(url: str) -> dict[str, float] | None:
    """Unlabelled samples of one scrape (None if the broker does not answer)."""
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=5) as response:
            text = response.read().decode()
    except (OSError, urllib.error.URLError):
        return None
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}


def labelled(url: str, name: str, **labels: str) -> float:
    """One labelled sample of one scrape (0 if absent)."""
    with urllib.request.urlopen(url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and s.labels == labels)


def totals(cluster: ClusterProcesses, names: tuple[str, ...]) -> dict[str, float] | None:
    """Each metric summed over the running brokers (None unless every one answered)."""
    sums = dict.fromkeys(names, 0.0)
    for broker_id in sorted(cluster.brokers):
        if not cluster.running(broker_id):
            continue
        samples = scrape(admin_url(cluster, broker_id))
        if samples is None:
            return None
        for name in names:
            sums[name] += samples[name]
    return sums


def cluster_health_cli(bootstrap: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ackly", "cluster", "health", "--bootstrap", bootstrap, "--timeout", "20"],
        capture_output=True, text=True, timeout=60,
    )


COUNTS = ("ackly_under_replicated_partitions", "ackly_offline_partitions", "ackly_active_controller")


def test_metrics_and_cluster_health_follow_a_broker_down_and_back(tmp_path) -> None:
    with ClusterProcesses(str(tmp_path), 3, configs=CONFIGS) as cluster:
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        futures = admin.create_topics([NewTopic("replicated", 3, 3), NewTopic("single", 3, 1)],
                                      operation_timeout=30)
        for future in futures.values():
            future.result(timeout=60)
        wait_until(lambda: all((v := cluster.partition("replicated", i)) and len(v.isr) == 3 for i in range(3))
                   and all((v := cluster.partition("single", i)) and v.leader >= 0 for i in range(3)),
                   WAIT_S, "every partition led, the replicated ones fully in sync")
        producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all"})
        for i in range(30):
            producer.produce("replicated", value=b"r%d" % i, partition=i % 3)
        assert producer.flush(30) == 0

        calm = wait_until(
            lambda: (t := totals(cluster, COUNTS)) and t["ackly_under_replicated_partitions"] == 0
            and t["ackly_offline_partitions"] == 0 and t["ackly_active_controller"] == 1 and t,
            WAIT_S, "a healthy cluster in /metrics",
        )
        assert calm["ackly_active_controller"] == 1
        healthy = cluster_health_cli(cluster.bootstrap)
        assert healthy.returncode == 0, healthy.stdout + healthy.stderr

        victim = cluster.partition("single", 0).leader  # type: ignore[union-attr]
        cluster.kill(victim)
        survivors = [b for b in sorted(cluster.brokers) if b != victim]

        down = wait_until(
            lambda: (t := totals(cluster, COUNTS)) and t["ackly_under_replicated_partitions"] >= 3
            and t["ackly_offline_partitions"] >= 1 and t["ackly_active_controller"] == 1 and t,
            WAIT_S, "under-replicated and offline partitions in /metrics",
        )
        assert down["ackly_under_replicated_partitions"] == 3, "each replicated partition, counted by its leader"
        with urllib.request.urlopen(admin_url(cluster, survivors[0]) + "/v1/cluster/health", timeout=5) as r:
            report = json.loads(r.read())
        assert report["brokers_down"] == [victim] and report["is_healthy"] is False
        assert "single-0" in report["leaderless_partitions"]

        offline_writes = sum(labelled(admin_url(cluster, b), "ackly_controller_partition_changes_total",
                                      reason="offline") for b in survivors)
        assert offline_writes >= 1, "the controller counted the partition it took offline"

        bootstrap = ",".join(cluster.address(b) for b in survivors)
        unhealthy = cluster_health_cli(bootstrap)
        assert unhealthy.returncode == 1, unhealthy.stdout + unhealthy.stderr
        assert f"brokers down: {victim}" in unhealthy.stderr and "leaderless" in unhealthy.stderr

        cluster.restart(victim)
        wait_until(
            lambda: (t := totals(cluster, COUNTS)) and t["ackly_under_replicated_partitions"] == 0
            and t["ackly_offline_partitions"] == 0 and t,
            WAIT_S, "the counts back to 0 after the broker returned",
        )
        wait_until(lambda: cluster_health_cli(cluster.bootstrap).returncode == 0, WAIT_S,
                   "`ackly cluster health` to exit 0 again")
        shrinks = sum((scrape(admin_url(cluster, b)) or {}).get("ackly_isr_shrinks_total", 0) for b in survivors)
        expands = sum((scrape(admin_url(cluster, b)) or {}).get("ackly_isr_expands_total", 0)
                      for b in sorted(cluster.brokers))
        assert shrinks >= 1 and expands >= 1, (shrinks, expands)
