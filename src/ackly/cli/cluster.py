"""`ackly cluster`: a local cluster of N brokers with one command.

With an `etcd` binary on PATH (Debian: etcd-server), it starts etcd (data in
<data-dir>/etcd, client URL on a free 127.0.0.1 port) and one `ackly serve --metadata etcd://...`
process per broker (broker i: port base-port + i, data in <data-dir>/broker-<i>), so brokers
can be killed and restarted one by one like real ones. Without etcd, every broker runs in this
one process on a shared in-memory metadata store (kept in <data-dir>/metadata, so topics
survive a restart of the command), and it says so.

It prints the bootstrap list once every broker listens, and stops everything on Ctrl-C or
SIGTERM: the brokers first, one after another (each with a controlled shutdown, SIGKILL if it
does not exit in time), then etcd. The child processes run in sessions of their own, so a
Ctrl-C in the terminal reaches this command only and the stopping order holds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence

from ackly.server.etcd_process import EtcdProcess, etcd_binary

BROKER_START_TIMEOUT_S = 60.0
BROKER_STOP_TIMEOUT_S = 20.0
_LISTENING = re.compile(r"listening on (\S+):(\d+)")


def run_cluster(*, brokers: int, data_dir: str, base_port: int, host: str,
                configs: Sequence[str], use_etcd: bool | None, log_level: str,
                log_format: str = "text") -> int:
    """The `ackly cluster` command; returns the exit status."""
    os.makedirs(data_dir, exist_ok=True)
    # The internal topics wait for offsets.topic.replication.factor brokers (Kafka's 3) to be
    # alive before they are created: a smaller local cluster gets every broker as its factor
    # (a --config given by the user comes after, so it wins).
    factor = min(3, brokers)
    configs = [f"offsets.topic.replication.factor={factor}",
               f"transaction.state.log.replication.factor={factor}",
               f"transaction.state.log.min.isr={min(2, factor)}", *configs]
    binary = etcd_binary()
    if use_etcd is True and binary is None:
        print("ackly: --etcd asked for, but no etcd binary is installed "
              "(Debian: apt-get install etcd-server)", file=sys.stderr)
        return 1
    if binary is not None and use_etcd is not False:
        return _run_with_etcd(brokers, data_dir, base_port, host, configs,
                              [log_level, log_format])
    reason = "--no-etcd" if use_etcd is False else "no etcd binary on PATH"
    print(f"ackly: {reason}: running {brokers} brokers in this process on an in-memory metadata "
          f"store (kept in {os.path.join(data_dir, 'metadata')})", flush=True)
    return _run_in_process(brokers, data_dir, base_port, host, configs)


# --- with etcd: one process per broker ------------------------------------------------------


class _Stop:
    """Set by SIGINT/SIGTERM."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal: int | None = None

    def __call__(self, signum: int, _frame: object) -> None:
        self.signal = signum
        self.event.set()


def _broker_command(broker_id: int, data_dir: str, host: str, port: int, metadata: str,
                    configs: Sequence[str], log_args: Sequence[str]) -> list[str]:
    log_level, log_format = log_args
    cmd = [sys.executable, "-m", "ackly", "--log-level", log_level, "--log-format", log_format, "serve",
           "--broker-id", str(broker_id), "--host", host, "--port", str(port),
           "--data-dir", data_dir, "--metadata", metadata]
    for item in per_broker_configs(configs, broker_id):
        cmd += ["--config", item]
    return cmd


def per_broker_configs(configs: Sequence[str], broker_id: int) -> list[str]:
    """The configs for broker `broker_id`: an `admin.listener` with a fixed port gives broker
    i that port + i (as the Kafka ports are base-port + i), so every broker has its own."""
    out = []
    for item in configs:
        key, _, value = item.partition("=")
        if key.strip() == "admin.listener" and value.strip():
            host, _, port = value.strip().rpartition(":")
            if port.isdigit() and int(port) != 0:
                item = f"admin.listener={host}:{int(port) + broker_id}"
        out.append(item)
    return out


def _pump_output(broker_id: int, proc: subprocess.Popen[str], ready: threading.Event,
                 failed: threading.Event) -> None:
    """Echo a broker's output with its id, and say when it listens."""
    assert proc.stdout is not None
    for line in proc.stdout:
        print(f"[broker {broker_id}] {line}", end="", flush=True)
        if _LISTENING.search(line):
            ready.set()
    if not ready.is_set():
        failed.set()
    ready.set()


def _run_with_etcd(brokers: int, data_dir: str, base_port: int, host: str,
                   configs: Sequence[str], log_args: Sequence[str]) -> int:
    stop = _Stop()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    etcd = EtcdProcess(os.path.join(data_dir, "etcd"))
    procs: dict[int, subprocess.Popen[str]] = {}
    try:
        try:
            etcd.start()
        except RuntimeError as exc:
            print(f"ackly: {exc}", file=sys.stderr)
            return 1
        print(f"etcd listening on {etcd.endpoint} (data in {etcd.data_dir})", flush=True)
        waits: list[tuple[int, threading.Event, threading.Event]] = []
        for broker_id in range(brokers):
            proc = subprocess.Popen(
                _broker_command(broker_id, os.path.join(data_dir, f"broker-{broker_id}"), host,
                                base_port + broker_id, etcd.client_url, configs, log_args),
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
            )
            procs[broker_id] = proc
            ready, failed = threading.Event(), threading.Event()
            threading.Thread(target=_pump_output, args=(broker_id, proc, ready, failed), daemon=True).start()
            waits.append((broker_id, ready, failed))
        for broker_id, ready, failed in waits:
            if stop.event.is_set():
                break
            if not ready.wait(BROKER_START_TIMEOUT_S) or failed.is_set():
                print(f"ackly: broker {broker_id} did not start", file=sys.stderr)
                return 1
        if not stop.event.is_set():
            bootstrap = ",".join(f"{host}:{base_port + i}" for i in range(brokers))
            print(f"\n{brokers} brokers on etcd {etcd.client_url}\nbootstrap.servers={bootstrap}\n"
                  "Ctrl-C stops the cluster.", flush=True)
        reported: set[int] = set()
        while not stop.event.wait(0.5):
            for broker_id, proc in procs.items():
                if proc.poll() is not None and broker_id not in reported:
                    reported.add(broker_id)
                    print(f"ackly: broker {broker_id} exited with status {proc.returncode}", flush=True)
        return 0
    finally:
        _stop_brokers(procs)
        etcd.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop_brokers(procs: dict[int, subprocess.Popen[str]]) -> None:
    """SIGTERM each broker in turn and wait for it (controlled shutdown moves its leadership to
    the brokers still running); SIGKILL one that does not exit in time."""
    for broker_id, proc in sorted(procs.items()):
        if proc.poll() is not None:
            continue
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(BROKER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            print(f"ackly: broker {broker_id} did not stop in {BROKER_STOP_TIMEOUT_S:.0f} s; killing it",
                  file=sys.stderr)
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)


# --- without etcd: every broker in this process ---------------------------------------------


def _run_in_process(brokers: int, data_dir: str, base_port: int, host: str,
                    configs: Sequence[str]) -> int:
    from ackly.config import parse_properties
    from ackly.errors import ConfigError
    from ackly.server.process import DataDirInUse, data_dir_lock

    try:
        props = [parse_properties(tuple(per_broker_configs(configs, b))) for b in range(brokers)]
    except ConfigError as exc:
        print(f"ackly: {exc}", file=sys.stderr)
        return 2
    try:
        with contextlib.ExitStack() as locks:
            for broker_id in range(brokers):
                locks.enter_context(data_dir_lock(os.path.join(data_dir, f"broker-{broker_id}")))
            asyncio.run(_serve_in_process(brokers, data_dir, base_port, host, props))
    except DataDirInUse as exc:
        print(f"ackly: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"ackly: cannot run the cluster: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve_in_process(brokers: int, data_dir: str, base_port: int, host: str,
                            props: list[dict[str, str]]) -> None:
    from ackly.cluster.durable_store import DurableMemoryStore
    from ackly.log.disk import RealDisk
    from ackly.server.app import BrokerServer
    from ackly.server.memory_store_bridge import SharedMemoryStore, monotonic_ms

    metadata_dir = os.path.join(data_dir, "metadata")
    os.makedirs(metadata_dir, exist_ok=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def metadata_failed(error: BaseException) -> None:  # in the writer thread
        print(f"ackly: the cluster's metadata store failed: {error}", file=sys.stderr, flush=True)
        loop.call_soon_threadsafe(stop.set)

    # The store's file is written in a thread of its own, never on the brokers' event loop.
    writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ackly-metadata-write")
    hub = SharedMemoryStore(DurableMemoryStore(RealDisk(), metadata_dir, monotonic_ms()),
                            writer=writer, on_failure=metadata_failed)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    servers: list[BrokerServer] = []
    watchers: list[asyncio.Task[None]] = []

    async def stop_on_failure(broker_id: int, server: BrokerServer) -> None:
        # A broker whose disk failed (or that failed on a cluster input) stops alone; the
        # others carry on, as separate processes would.
        await server.failed.wait()
        print(f"[broker {broker_id}] stopped: {server.failure}", flush=True)
        await server.stop()

    try:
        for broker_id in range(brokers):
            server = BrokerServer(
                data_dir=os.path.join(data_dir, f"broker-{broker_id}"), host=host,
                port=base_port + broker_id, properties={**props[broker_id], "broker.id": str(broker_id)},
                metadata_hub=hub,
            )
            await server.start()
            servers.append(server)
            watchers.append(asyncio.ensure_future(stop_on_failure(broker_id, server)))
            admin = "" if server.admin_address is None else " (admin on http://{}:{})".format(*server.admin_address)
            print(f"[broker {broker_id}] listening on {server.host}:{server.port}{admin}", flush=True)
        bootstrap = ",".join(f"{s.host}:{s.port}" for s in servers)
        print(f"\n{brokers} brokers in one process\nbootstrap.servers={bootstrap}\n"
              "Ctrl-C stops the cluster.", flush=True)
        await stop.wait()
    finally:
        for watcher, server in zip(watchers, servers, strict=True):
            if not server.failed.is_set():
                watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)  # a failed one's stop finishes
        for server in servers:  # one after another: each hands its leadership to the rest
            await server.stop()
        writer.shutdown(wait=True)
