"""`ackly verify` on secured clusters (verify/security.py).

- `--security sasl_ssl`: verify's own 3-broker cluster with SASL_SSL for clients and between
  brokers, under a leader kill and a leader partition (its usual faults, seed 2): at-least-once
  loses and reorders no acknowledged record;
- `--bootstrap` with `--client-config`: a SASL_PLAINTEXT or SASL_SSL cluster verify did not
  start;
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
@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_client_config_reaches_a_sasl_cluster_verify_did_not_start(
        ackly_cluster_processes: Any, tmp_path: Path, protocol: str) -> None:
    """Over SASL_PLAINTEXT the client proxy's resets act on the authenticated connections; over
    SASL_SSL the clients connect directly (the proxy cannot read TLS) and no fault is injected."""
    import subprocess
    import sys

    from tests.clients.tlskit import make_tls_files

    tls = make_tls_files(tmp_path / "tls")
    cluster = ackly_cluster_processes(1, configs={
        "listeners": f"PLAINTEXT://127.0.0.1:0,{protocol}://127.0.0.1:0",
        **(tls.broker_configs() if protocol == "SASL_SSL" else {}),
    })
    proc = subprocess.run([sys.executable, "-m", "ackly", "users", "set", "tester", "--password-stdin",
                           "--metadata", cluster.metadata_url], input="tester-pw\n",
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    client_config = [f"security.protocol={protocol}", "sasl.mechanism=SCRAM-SHA-512",
                     "sasl.username=tester", "sasl.password=tester-pw"]
    if protocol == "SASL_SSL":
        client_config.append(f"ssl.ca.location={tls.ca}")
    code, output = verify("--bootstrap", cluster.brokers[0].listener_bootstrap(protocol),
                          *(a for c in client_config for a in ("--client-config", c)),
                          "--semantics", "at-least-once", "--duration", "5", "--faults", "reset",
                          "--seed", "2", "--rate", "40", "--out", str(tmp_path / "report"))
    assert (tmp_path / "report" / "summary.json").exists(), output
    data = summary(tmp_path / "report")
    assert data["run"]["security"]["sasl.password"] == "(hidden)"
    if protocol == "SASL_SSL":
        assert data["run"]["schedule"] == [] and "no fault is injected" in output, output
    else:
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
