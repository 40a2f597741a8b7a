"""`ackly verify` on secured clusters (verify/security.py).

- `--security sasl_ssl`: verify's own 3-broker cluster with SASL_SSL for clients and between
  brokers, under a leader kill and a leader partition (its usual faults, seed 2): at-least-once
  loses and reorders no acknowledged record;
- `--bootstrap` with `--client-config`: a SASL_PLAINTEXT cluster verify did not start, the
  client proxy's resets acting on the authenticated connections;
- the options that do not go together are refused before anything starts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ackly.cli.main import cli
from ackly.server.etcd_process import etcd_binary
from ackly.verify.nemesis import plan

NO_LOSS_NO_REORDER = ("lost-write", "unseen", "nonmonotonic-send", "nonmonotonic-poll", "poll-skip")
needs_etcd = pytest.mark.skipif(etcd_binary() is None, reason="etcd is not installed (Debian: etcd-server)")


def verify(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["verify", *args], catch_exceptions=False)
    return result.exit_code, result.output


def summary(report_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((report_dir / "summary.json").read_text())
    return data


def counts(data: dict[str, Any]) -> dict[str, int]:
    return {a["name"]: a["count"] for a in data["check"]["anomalies"]}


@pytest.mark.slow
@pytest.mark.clients
@pytest.mark.timeout(180)
@needs_etcd
def test_at_least_once_over_sasl_ssl_keeps_every_acknowledged_record_in_order(tmp_path: Path) -> None:
    seed = 2  # a leader kill, then a leader partition (checked against plan() below)
    code, output = verify("--security", "sasl_ssl", "--semantics", "at-least-once", "--duration", "16",
                          "--seed", str(seed), "--rate", "60", "--out", str(tmp_path))
    data = summary(tmp_path)
    assert data["run"]["security"] == "sasl_ssl"
    kinds = [e["kind"] for e in data["run"]["schedule"]]
    assert kinds == ["kill", "partition"], kinds
    assert data["run"]["schedule"] == [e.to_json() for e in plan(seed, ("kill", "partition", "pause"),
                                                                 16.0, 3, 3)]
    assert data["run"]["stats"]["faults injected"] == 2, output
    # Every broker served clients and its peers over SASL_SSL (the start-up line of each).
    for broker in range(3):
        log = (tmp_path / f"broker-{broker}.log").read_text()
        assert re.search(r"CLIENT://127\.0\.0\.1:\d+/SASL_SSL BROKER://127\.0\.0\.1:\d+/SASL_SSL", log), log[:2000]
    throughput = data["stats"]["throughput"]
    assert throughput["send"]["ok"] > 100 and throughput["poll"]["ok"] > 0, output
    found = counts(data)
    assert all(found[n] == 0 for n in NO_LOSS_NO_REORDER), f"{found}\n{output}"
    assert code == 0 and data["ok"], output
    # The generated credentials stay out of the report.
    assert "password" not in (tmp_path / "summary.json").read_text()


@pytest.mark.slow
@pytest.mark.clients
@pytest.mark.timeout(120)
@needs_etcd
def test_client_config_reaches_a_sasl_cluster_verify_did_not_start(
        ackly_cluster_processes: Any, tmp_path: Path) -> None:
    import subprocess
    import sys

    cluster = ackly_cluster_processes(1, configs={
        "listeners": "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0",
    })
    proc = subprocess.run([sys.executable, "-m", "ackly", "users", "set", "tester", "--password-stdin",
                           "--metadata", cluster.metadata_url], input="tester-pw\n",
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    bootstrap = cluster.brokers[0].listener_bootstrap("SASL_PLAINTEXT")
    code, output = verify("--bootstrap", bootstrap, "--client-config", "security.protocol=SASL_PLAINTEXT",
                          "--client-config", "sasl.mechanism=SCRAM-SHA-512",
                          "--client-config", "sasl.username=tester", "--client-config", "sasl.password=tester-pw",
                          "--semantics", "at-least-once", "--duration", "6", "--faults", "reset",
                          "--seed", "2", "--rate", "40", "--out", str(tmp_path / "report"))
    data = summary(tmp_path / "report")
    assert data["run"]["security"]["sasl.password"] == "(hidden)"
    assert data["run"]["stats"]["faults injected"] >= 1, output
    assert data["stats"]["throughput"]["send"]["ok"] > 0, output
    assert all(counts(data)[n] == 0 for n in NO_LOSS_NO_REORDER), output
    assert code == 0 and data["ok"], output


@pytest.mark.parametrize(("args", "message"), [
    (["--security", "sasl_ssl", "--bootstrap", "127.0.0.1:1"], "--client-config"),
    (["--client-config", "security.protocol=SSL"], "goes with --bootstrap"),
    (["--security", "ssl", "--client", "kafka-python"], "confluent only"),
    (["--bootstrap", "127.0.0.1:1", "--client-config", "acks=all"], "only security.protocol"),
    (["--bootstrap", "127.0.0.1:1", "--client-config", "sasl.username"], "is not KEY=VALUE"),
])
def test_options_that_do_not_go_together_are_refused(args: list[str], message: str) -> None:
    code, output = verify(*args)
    assert code == 2 and message in output, output
