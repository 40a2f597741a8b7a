"""The admin HTTP listener of an in-process broker: its routes, over real HTTP."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ackly.testing.inprocess import InProcessBroker


def get(url: str) -> tuple[int, str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def test_health_is_200_when_up_and_503_once_the_broker_failed(tmp_path) -> None:
    broker = InProcessBroker(str(tmp_path), {"admin.listener": "127.0.0.1:0"}).start()
    try:
        server = broker.server
        assert server is not None and server.admin_address is not None
        host, port = server.admin_address
        base = f"http://{host}:{port}"
        status, kind, body = get(base + "/v1/health")
        assert status == 200 and kind.startswith("application/json")
        report = json.loads(body)
        assert report["healthy"] is True and report["broker_id"] == 0 and report["reasons"] == []

        status, _, body = get(base + "/v1/cluster/health")
        assert status == 200 and json.loads(body)["is_healthy"] is True

        status, kind, body = get(base + "/metrics")
        assert status == 200 and kind.startswith("text/plain")
        names = {f.name for f in text_string_to_metric_families(body)}
        assert {"ackly_under_replicated_partitions", "ackly_offline_partitions", "ackly_requests",
                "ackly_request_total_time_seconds", "ackly_log_flush_seconds"} <= names

        def fail() -> None:
            server.failure = RuntimeError("planted")

        broker.call(fail)
        status, _, body = get(base + "/v1/health")
        assert status == 503
        assert any("planted" in reason for reason in json.loads(body)["reasons"])
        assert get(base + "/nothing-here")[0] == 404
    finally:
        broker.stop()


def test_no_admin_listener_unless_configured(tmp_path) -> None:
    broker = InProcessBroker(str(tmp_path)).start()
    try:
        assert broker.server is not None and broker.server.admin_address is None
    finally:
        broker.stop()


@pytest.mark.slow
def test_an_admin_port_in_use_refuses_to_start_with_the_key_and_reason(tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "ackly", "serve", "--port", "0", "--data-dir", str(tmp_path / "data"),
             "--config", f"admin.listener=127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=120,
        )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "admin.listener" in result.stderr and f"cannot listen on 127.0.0.1:{port}" in result.stderr


@pytest.mark.slow
def test_a_malformed_admin_listener_is_refused_at_start_up(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ackly", "serve", "--port", "0", "--data-dir", str(tmp_path / "data"),
         "--config", "admin.listener=9644"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert "admin.listener" in result.stderr and "is not host:port" in result.stderr
