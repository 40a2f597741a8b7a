"""`ackly cluster` as a user runs it: it prints the bootstrap list, the brokers form one cluster,
and Ctrl-C (SIGINT) or SIGTERM stops every process it started, etcd last."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ackly.server.etcd_process import etcd_binary
from ackly.testing.cluster_processes import wait_until
from ackly.testing.wire import WireClient
from tests.integration import wire_requests as rq

pytestmark = pytest.mark.slow


def free_base_port(count: int) -> int:
    """A port p such that p .. p+count-1 are free now (bounded tries)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base + count >= 65535:
            continue
        try:
            socks = []
            for i in range(count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no free port range")


class ClusterCommand:
    def __init__(self, args: list[str], global_args: list[str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ackly", *(global_args or []), "cluster", *args], stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[str] = []
        self.bootstrap = ""
        self.ready = threading.Event()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if line.startswith("bootstrap.servers="):
                self.bootstrap = line.split("=", 1)[1].strip()
                self.ready.set()
        self.ready.set()

    def output(self) -> str:
        return "".join(self.lines)

    def stop(self, sig: int) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)


def brokers_seen(address: str) -> set[int]:
    try:
        with WireClient(address, timeout_s=5) as client:
            return {int(b.node_id) for b in client.request(rq.metadata()).brokers}
    except (OSError, ConnectionError):
        return set()


def child_pids(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(entry))
    return found


@pytest.mark.parametrize("mode", ["etcd", "in-process"])
def test_ackly_cluster_starts_brokers_that_form_one_cluster_and_stops_them_all(
    tmp_path: Path, mode: str,
) -> None:
    if mode == "etcd" and etcd_binary() is None:
        pytest.skip("etcd is not installed")
    base = free_base_port(3)
    args = ["--brokers", "3", "--data-dir", str(tmp_path / "c"), "--base-port", str(base)]
    args.append("--etcd" if mode == "etcd" else "--no-etcd")
    command = ClusterCommand(args)
    try:
        assert command.ready.wait(60) and command.bootstrap, command.output()
        assert command.bootstrap == ",".join(f"127.0.0.1:{base + i}" for i in range(3))
        if mode == "in-process":
            assert "in-memory metadata store" in command.output()
        children = child_pids(command.proc.pid)
        assert len(children) == (4 if mode == "etcd" else 0), command.output()  # etcd + 3 brokers
        for address in command.bootstrap.split(","):
            wait_until(lambda a=address: brokers_seen(a) == {0, 1, 2}, 30, f"{address} to see all brokers")
        status = command.stop(signal.SIGINT if mode == "etcd" else signal.SIGTERM)
        assert status == 0, command.output()
        for pid in children:
            assert not os.path.exists(f"/proc/{pid}") or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
        for i in range(3):  # the ports are free again
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", base + i))
    finally:
        if command.proc.poll() is None:
            command.proc.kill()
            command.proc.wait(10)
