"""Real `ackly serve` processes for tests: start, wait until listening, kill -9, restart."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence

_LISTENING = re.compile(r"listening on (\S+):(\d+)")
_LISTENER = re.compile(r"([A-Za-z0-9_-]+)://(\[[^\]]*\]|[^:\s]*):(\d+)/")


class BrokerProcess:
    """One broker process on 127.0.0.1 with its own data directory.

    `port=0` lets the broker pick a free port on first start; restarts reuse that port so
    clients can reconnect to the same bootstrap address.
    """

    def __init__(self, data_dir: str, *, port: int = 0, broker_id: int = 0,
                 configs: Mapping[str, str] | None = None, start_timeout_s: float = 20.0,
                 metadata: str | None = None, advertised_host: str | None = None,
                 advertised_port: int | None = None, log_level: str | None = None,
                 faults: Sequence[str] = (), record_flushes: bool = False,
                 config_file: str | None = None, env: Mapping[str, str] | None = None,
                 log_format: str | None = None) -> None:
        self.data_dir = data_dir
        self.port = port
        self.broker_id = broker_id
        self.configs = dict(configs or {})
        self.metadata = metadata  # e.g. etcd://127.0.0.1:2379; None: single-broker mode
        self.advertised_host = advertised_host
        self.advertised_port = advertised_port
        self.log_level = log_level  # DEBUG, INFO, WARNING (the default) or ERROR
        # Fault points to enable (broker/faults.py), through ackly.testing.faulty_serve only.
        self.faults = tuple(faults)
        # Record each log file's flushed length (testing/flushed_lengths.py), for drop_unflushed.
        self.record_flushes = record_flushes
        self.start_timeout_s = start_timeout_s
        self.log_format = log_format  # text (the default) or json
        self.config_file = config_file  # --config-file
        self.env = dict(env or {})  # added to this process's environment (ACKLY_* configs)
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []
        # Bound port of each listener (`listeners` config), from the start-up line.
        self.listener_ports: dict[str, int] = {}

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def listener_bootstrap(self, name: str) -> str:
        """The address of one listener (`listeners` config) on 127.0.0.1."""
        return f"127.0.0.1:{self.listener_ports[name]}"

    @property
    def flush_record(self) -> str:
        """Where the broker records its flushed lengths (with `record_flushes`)."""
        from ackly.testing.flushed_lengths import RECORD_FILE

        return os.path.join(self.data_dir, RECORD_FILE)

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "ackly"]
        if self.faults or self.record_flushes:
            cmd = [sys.executable, "-m", "ackly.testing.faulty_serve"]
            for name in self.faults:
                cmd += ["--fault", name]
            if self.record_flushes:
                cmd += ["--record-flushes", self.flush_record]
            cmd.append("--")
        if self.log_level is not None:
            cmd += ["--log-level", self.log_level]
        if self.log_format is not None:
            cmd += ["--log-format", self.log_format]
        cmd += ["serve", "--host", "127.0.0.1",
               "--port", str(self.port), "--data-dir", self.data_dir,
               "--broker-id", str(self.broker_id)]
        if self.metadata is not None:
            cmd += ["--metadata", self.metadata]
        if self.advertised_host is not None:
            cmd += ["--advertised-host", self.advertised_host]
        if self.advertised_port is not None:
            cmd += ["--advertised-port", str(self.advertised_port)]
        if self.config_file is not None:
            cmd += ["--config-file", self.config_file]
        for key, value in self.configs.items():
            cmd += ["--config", f"{key}={value}"]
        return cmd

    def start(self) -> BrokerProcess:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.proc = subprocess.Popen(
            self.command(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"},
        )
        ready = threading.Event()
        listening = threading.Event()
        proc = self.proc

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                self.output.append(line)
                match = _LISTENING.search(line)
                if match and not ready.is_set():
                    self.port = int(match.group(2))
                    self.listener_ports = {m.group(1): int(m.group(3))
                                           for m in _LISTENER.finditer(line[match.end():])}
                    listening.set()
                    ready.set()
            ready.set()  # exited: unblock the waiter

        threading.Thread(target=pump, daemon=True).start()
        # Not `proc.poll()` alone: its output can end before the exit is reaped.
        if not ready.wait(self.start_timeout_s) or not listening.is_set() or proc.poll() is not None:
            self.kill()
            raise RuntimeError("ackly serve did not start:\n" + "".join(self.output))
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send `sig` (default: kill -9) and wait for the process to end."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def stop(self) -> int:
        """Clean shutdown (SIGTERM); returns the exit status."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def restart(self) -> BrokerProcess:
        self.kill()
        return self.start()
