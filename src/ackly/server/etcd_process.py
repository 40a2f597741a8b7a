"""A local single-member etcd, run as a child process (for `ackly cluster` and for tests).

It listens on 127.0.0.1 only, on free ports picked at start (client and peer URL), keeps its
data in a directory of its own, and is ready when its /health endpoint says so. A port picked
free may be taken by someone else before etcd binds it; start() then tries again with new
ports (a bounded number of times). Restarts reuse the ports and the data, so brokers that hold
the client URL reconnect to the same store.

Timing: `heartbeat_interval_ms`/`election_timeout_ms` are etcd's own knobs. The defaults here
are 10x smaller than etcd's (a single member has no peers to wait for), which also lowers
etcd's smallest lease TTL, ceil(1.5 x election timeout) seconds, from 2 s to 1 s.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

ETCD_BINARY_ENV = "ACKLY_ETCD"  # path to an etcd binary, when it is not `etcd` on PATH
START_ATTEMPTS = 3


def etcd_binary() -> str | None:
    """The etcd binary to run, or None if none is installed."""
    configured = os.environ.get(ETCD_BINARY_ENV)
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    return shutil.which("etcd")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class EtcdTls:
    """PEM files for an etcd that serves clients over TLS."""

    certfile: str  # etcd's certificate (for 127.0.0.1)
    keyfile: str
    cafile: str  # the CA its certificate chains to (for the health check)
    client_cafile: str = ""  # set: clients must present a certificate from this CA
    client_certfile: str = ""  # the health check's client certificate then
    client_keyfile: str = ""


class EtcdProcess:
    """One etcd member on 127.0.0.1. `client_url` is what brokers take (`etcd://host:port`)."""

    def __init__(
        self,
        data_dir: str,
        *,
        name: str = "ackly",
        binary: str | None = None,
        client_port: int = 0,
        heartbeat_interval_ms: int = 10,
        election_timeout_ms: int = 100,
        start_timeout_s: float = 20.0,
        tls: EtcdTls | None = None,
    ) -> None:
        """`tls`: serve clients over TLS (and, with its CA, require client certificates)."""
        self.tls = tls
        self.data_dir = data_dir
        self.name = name
        self.binary = binary or etcd_binary()
        self.client_port = client_port
        self.peer_port = 0
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.election_timeout_ms = election_timeout_ms
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = os.path.join(data_dir, "etcd.log")

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def client_url(self) -> str:
        """The --metadata value for `ackly serve`."""
        return f"{'etcds' if self.tls else 'etcd'}://{self.endpoint}"

    def command(self) -> list[str]:
        assert self.binary is not None
        client = f"{'https' if self.tls else 'http'}://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        tls: list[str] = []
        if self.tls is not None:
            tls = ["--cert-file", self.tls.certfile, "--key-file", self.tls.keyfile]
            if self.tls.client_cafile:
                tls += ["--trusted-ca-file", self.tls.client_cafile, "--client-cert-auth"]
        return [
            self.binary, *tls, "--name", self.name, "--data-dir", os.path.join(self.data_dir, "member-data"),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"{self.name}={peer}", "--initial-cluster-state", "new",
            "--heartbeat-interval", str(self.heartbeat_interval_ms),
            "--election-timeout", str(self.election_timeout_ms),
            "--logger", "zap", "--log-level", "warn",
        ]

    def start(self) -> EtcdProcess:
        """Start etcd and wait until it is healthy; raises RuntimeError if it cannot start."""
        if self.binary is None:
            raise RuntimeError("etcd is not installed (Debian: apt-get install etcd-server)")
        assert self.proc is None or self.proc.poll() is not None, "already running"
        os.makedirs(self.data_dir, exist_ok=True)
        fixed_ports = self.client_port != 0
        failure = ""
        for _ in range(START_ATTEMPTS):
            if not fixed_ports:
                self.client_port = free_port()
            if not fixed_ports or self.peer_port == 0:
                self.peer_port = free_port()
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True,  # a Ctrl-C in the terminal reaches us, not etcd
                )
            failure = self._wait_healthy()
            if not failure:
                return self
            self.kill()
            if fixed_ports:
                break
        raise RuntimeError(f"etcd did not start: {failure}\n{self.log_tail()}")

    def _wait_healthy(self) -> str:
        """'' once /health answers true; else why not (exited, or still unhealthy)."""
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return f"etcd exited with status {self.proc.returncode}"
            if self.healthy():
                return ""
            time.sleep(0.02)
        return f"not healthy after {self.start_timeout_s} s"

    def healthy(self) -> bool:
        context = None
        if self.tls is not None:
            context = ssl.create_default_context(cafile=self.tls.cafile)
            if self.tls.client_certfile:
                context.load_cert_chain(self.tls.client_certfile, self.tls.client_keyfile)
        url = f"{'https' if self.tls else 'http'}://{self.endpoint}/health"
        with (contextlib.suppress(OSError, ValueError, urllib.error.URLError),
              urllib.request.urlopen(url, timeout=1, context=context) as reply):
            return bool(json.loads(reply.read()).get("health") == "true")
        return False

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError), open(self.log_path, "rb") as f:
            return b"".join(f.readlines()[-lines:]).decode(errors="replace")
        return ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout_s`."""
        if self.proc is None:
            return
        self._signal(signal.SIGCONT)  # a paused etcd cannot act on SIGTERM
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.proc is None:
            return
        self._signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def restart(self) -> EtcdProcess:
        """Kill and start again on the same ports, with the same data."""
        self.kill()
        return self.start()

    def __enter__(self) -> EtcdProcess:
        return self.start() if not self.running else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
