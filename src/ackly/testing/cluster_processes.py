"""A real cluster for tests: one etcd and N `ackly serve` processes on 127.0.0.1.

Brokers are numbered 0..N-1; each has its own data directory and keeps its port across
restarts (so clients and the other brokers find it again). Faults are by broker id:
`kill(id)` (SIGKILL by default), `restart(id)`, `pause(id)` / `resume(id)` (SIGSTOP /
SIGCONT: a process that is alive but answers nothing, like a long GC pause), `stop(id)`
(SIGTERM: a controlled shutdown), and with `peer_faults=True` `cut(a, b)` / `heal(a, b)` of
the network between two brokers (testing/peer_cuts.py). Every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from kio.schema.metadata.v12.request import MetadataRequest, MetadataRequestTopic
from kio.schema.types import TopicName

from ackly.server.etcd_process import EtcdProcess, etcd_binary
from ackly.testing.broker_process import BrokerProcess
from ackly.testing.internal_topics import internal_topic_factors
from ackly.testing.peer_cuts import PeerCuts, free_port
from ackly.testing.wire import WireClient

T = TypeVar("T")


@dataclass(frozen=True)
class PartitionView:
    """One partition as a broker's Metadata response shows it."""

    leader: int
    leader_epoch: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    error_code: int


def wait_until(condition: Callable[[], T | None], timeout_s: float, what: str,
               interval_s: float = 0.05) -> T:
    """Poll `condition` until it returns something truthy; TimeoutError naming `what` after
    `timeout_s`. (For conditions in other processes, which cannot notify us.)"""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)

__all__ = ["ClusterProcesses", "EtcdProcess", "PartitionView", "etcd_binary", "wait_until"]


class ClusterProcesses:
    def __init__(
        self,
        base_dir: str,
        brokers: int = 3,
        *,
        configs: Mapping[str, str] | None = None,
        broker_configs: Mapping[int, Mapping[str, str]] | None = None,
        etcd: EtcdProcess | None = None,
        start_timeout_s: float = 30.0,
        ports: Mapping[int, int] | None = None,
        advertised_ports: Mapping[int, int] | None = None,
        metadata_urls: Mapping[int, str] | None = None,
        log_level: str | None = None,
        faults: Sequence[str] = (),
        record_flushes: bool = False,
        peer_faults: bool = False,
    ) -> None:
        """`ports`: listen port per broker id (default: free ports, kept across restarts);
        `advertised_ports`: the port a broker registers instead (a proxy in front of it);
        `metadata_urls`: a broker's --metadata instead of the etcd's own URL (a relay);
        `faults`: fault points every broker starts with (planted bugs, testing/faulty_serve.py);
        `record_flushes`: brokers record their flushed lengths, for `lose_unflushed`;
        `peer_faults`: brokers advertise a fault proxy's listeners, for `cut` and `heal`."""
        assert brokers >= 1
        self.base_dir = base_dir
        self.count = brokers
        self.configs = {**internal_topic_factors(brokers), **(configs or {})}
        self.broker_configs = {k: dict(v) for k, v in (broker_configs or {}).items()}
        self.own_etcd = etcd is None
        self.etcd = etcd or EtcdProcess(os.path.join(base_dir, "etcd"))
        self.start_timeout_s = start_timeout_s
        self.ports = dict(ports or {})
        self.advertised_ports = dict(advertised_ports or {})
        self.metadata_urls = dict(metadata_urls or {})
        self.log_level = log_level
        self.faults = tuple(faults)
        self.record_flushes = record_flushes
        self.brokers: dict[int, BrokerProcess] = {}
        self.peer_faults = peer_faults
        self.peer_cuts: PeerCuts | None = None

    @property
    def metadata_url(self) -> str:
        return self.etcd.client_url

    @property
    def bootstrap(self) -> str:
        """`host:port,...` of every broker (running or not), for clients."""
        return ",".join(self.brokers[i].bootstrap for i in sorted(self.brokers))

    def address(self, broker_id: int) -> str:
        return self.brokers[broker_id].bootstrap

    def start(self) -> ClusterProcesses:
        """Start etcd (if this object owns it), then every broker; each is listening on return."""
        if self.own_etcd and not self.etcd.running:
            self.etcd.start()
        if self.peer_faults and self.peer_cuts is None:
            assert not self.advertised_ports, "peer_faults chooses the advertised ports"
            self.ports = {b: self.ports.get(b) or free_port() for b in range(self.count)}
            self.peer_cuts = PeerCuts(self.ports)
            self.advertised_ports = dict(self.peer_cuts.advertised_ports)
        try:
            for broker_id in range(self.count):
                configs = {**self.configs, **self.broker_configs.get(broker_id, {})}
                proc = BrokerProcess(
                    os.path.join(self.base_dir, f"broker-{broker_id}"), broker_id=broker_id,
                    configs=configs, metadata=self.metadata_urls.get(broker_id, self.metadata_url),
                    start_timeout_s=self.start_timeout_s, port=self.ports.get(broker_id, 0),
                    advertised_port=self.advertised_ports.get(broker_id), log_level=self.log_level,
                    faults=self.faults, record_flushes=self.record_flushes,
                )
                self.brokers[broker_id] = proc
                proc.start()
            self.wait_ready()
        except BaseException:
            self.stop_all()
            raise
        return self

    # --- what the brokers say (Metadata, asked directly, never through a proxy) -------------

    def metadata(self, broker_id: int, *topics: str, timeout_s: float = 5.0) -> Any | None:
        """broker_id's Metadata response (v12) for `topics` (none: brokers only), or None if
        it cannot be asked right now."""
        request = MetadataRequest(
            topics=tuple(MetadataRequestTopic(name=TopicName(t), topic_id=None) for t in topics),
            allow_auto_topic_creation=False, include_topic_authorized_operations=False,
        )
        try:
            with WireClient(self.address(broker_id), timeout_s=timeout_s) as client:
                return client.request(request)
        except (OSError, ConnectionError, AssertionError):
            return None

    def partition(self, topic: str, partition: int = 0, *,
                  asking: int | None = None) -> PartitionView | None:
        """The partition as one running broker (`asking`, or the first that answers) sees it."""
        candidates = [asking] if asking is not None else [b for b in sorted(self.brokers) if self.running(b)]
        for broker_id in candidates:
            response = self.metadata(broker_id, topic)
            if response is None:
                continue
            for t in response.topics:
                for p in t.partitions:
                    if int(p.partition_index) == partition:
                        return PartitionView(
                            int(p.leader_id), int(p.leader_epoch),
                            tuple(int(b) for b in p.replica_nodes),
                            tuple(int(b) for b in p.isr_nodes), int(p.error_code),
                        )
        return None

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Until every running broker's Metadata lists every running broker and a controller."""
        running = {b for b in self.brokers if self.running(b)}

        def formed() -> bool:
            for broker_id in running:
                response = self.metadata(broker_id)
                if response is None or int(response.controller_id) < 0:
                    return False
                if {int(b.node_id) for b in response.brokers} != running:
                    return False
            return True

        wait_until(formed, timeout_s or self.start_timeout_s, f"brokers {sorted(running)} to form a cluster")

    def kill(self, broker_id: int, sig: int = signal.SIGKILL) -> None:
        proc = self.brokers[broker_id]
        if sig == signal.SIGKILL:
            proc.kill()
        else:
            proc.kill(sig)

    def lose_unflushed(self, broker_id: int) -> dict[str, tuple[int, int]]:
        """SIGKILL, then cut the broker's log files to their flushed lengths (what a power loss
        leaves); restart it with `start_broker`. Needs `record_flushes`. Returns what was cut
        (path -> (size before, size after))."""
        from ackly.testing.flushed_lengths import drop_unflushed

        proc = self.brokers[broker_id]
        assert proc.record_flushes, "lose_unflushed needs brokers started with record_flushes"
        self.resume(broker_id)
        proc.kill()
        return drop_unflushed(proc.flush_record)

    def restart(self, broker_id: int) -> BrokerProcess:
        """Kill -9 if still running, then start again on the same port and data."""
        return self.brokers[broker_id].restart()

    def start_broker(self, broker_id: int) -> BrokerProcess:
        """Start a broker that was killed or stopped."""
        return self.brokers[broker_id].start()

    def stop(self, broker_id: int) -> int:
        """SIGTERM (controlled shutdown); returns the exit status."""
        self.resume(broker_id)
        return self.brokers[broker_id].stop()

    def fail_disk(self, broker_id: int) -> None:
        """The next fsync of a log file of this broker fails with EIO (brokers started with the
        "disk-error" fault: testing/disk_faults.py). The broker then stops by itself."""
        assert "disk-error" in self.brokers[broker_id].faults, "started without the disk fault"
        self._signal(broker_id, signal.SIGUSR1)

    def withdraw_disk_failure(self, broker_id: int) -> None:
        """Withdraw a failure `fail_disk` armed that has not fired yet."""
        self._signal(broker_id, signal.SIGUSR2)

    def cut(self, a: int, b: int) -> None:
        """Cut the network between brokers a and b, both ways, until `heal(a, b)`."""
        assert self.peer_cuts is not None, "network cuts need peer_faults=True"
        self.peer_cuts.cut(a, b)

    def heal(self, a: int, b: int) -> None:
        assert self.peer_cuts is not None, "network cuts need peer_faults=True"
        self.peer_cuts.heal(a, b)

    def pause(self, broker_id: int) -> None:
        self._signal(broker_id, signal.SIGSTOP)

    def resume(self, broker_id: int) -> None:
        self._signal(broker_id, signal.SIGCONT)

    def running(self, broker_id: int) -> bool:
        proc = self.brokers[broker_id].proc
        return proc is not None and proc.poll() is None

    def output(self, broker_id: int) -> str:
        return "".join(self.brokers[broker_id].output)

    def _signal(self, broker_id: int, sig: int) -> None:
        proc = self.brokers[broker_id].proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)

    def stop_all(self) -> None:
        """SIGTERM every broker (paused ones are resumed first), kill -9 what does not exit in
        time, then stop etcd if this object started it."""
        for broker_id, proc in self.brokers.items():
            self.resume(broker_id)
            if proc.proc is not None and proc.proc.poll() is None:
                proc.proc.send_signal(signal.SIGTERM)
        for proc in self.brokers.values():
            if proc.proc is None:
                continue
            try:
                proc.proc.wait(timeout=15)
            except Exception:
                proc.kill()
        if self.own_etcd:
            self.etcd.stop()
        if self.peer_cuts is not None:
            self.peer_cuts.stop()
            self.peer_cuts = None

    def __enter__(self) -> ClusterProcesses:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop_all()
