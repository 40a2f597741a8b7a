"""`ackly cluster info|health` against one `ackly serve`, and their error paths."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from ackly.server.etcd_process import free_port

pytestmark = [pytest.mark.slow, pytest.mark.clients]


def ackly(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ackly", "cluster", *args],
                          capture_output=True, text=True, timeout=60)


def test_info_and_health_of_a_healthy_broker(broker_factory: Any) -> None:
    broker = broker_factory()
    health = ackly("health", "--bootstrap", broker.bootstrap, "--format", "json")
    assert health.returncode == 0, health.stderr
    report = json.loads(health.stdout)
    assert report["is_healthy"] is True and report["brokers"] == [0] and report["reasons"] == []
    table = ackly("health", "--bootstrap", broker.bootstrap)
    assert table.returncode == 0 and "healthy               yes" in table.stdout

    info = ackly("info", "--bootstrap", broker.bootstrap, "--format", "json")
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["brokers"] == [{"id": 0, "address": broker.bootstrap}]


def test_unreachable_bootstrap_exits_2_with_a_clear_message() -> None:
    result = ackly("health", "--bootstrap", f"127.0.0.1:{free_port()}", "--timeout", "3")
    assert result.returncode == 2
    assert "cannot reach the cluster at 127.0.0.1:" in result.stderr
    assert "%3|" not in result.stderr, "librdkafka's log lines go to the log, not the terminal"


def test_a_malformed_client_setting_is_a_usage_error() -> None:
    result = ackly("health", "-X", "no-equals-sign")
    assert result.returncode == 2 and "-X" in result.stderr and "key=value" in result.stderr
