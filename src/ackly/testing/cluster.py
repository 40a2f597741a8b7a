"""An in-process cluster for tests: N BrokerServers on one event-loop thread, one shared store.

Each broker is a real BrokerServer on its own loopback port with its own data directory; they
share one in-memory metadata store (server/memory_store_bridge.py) and talk to each other over
real TCP connections (server/peers.py), exactly as `ackly serve --metadata ...` processes do.
Real clients connect to `bootstrap`.

Faults, from the test's thread:
- `kill(b)`: the broker stops abruptly, as a SIGKILL would leave it: its sockets close, nothing
  is handed over, its logs are not closed cleanly (their data stays in the page cache: a process
  crash, not a power loss). Its lease is revoked at once unless `revoke=False`, so the cluster
  notices now instead of after broker.session.timeout.ms.
- `start(b)`: (re)start it on the same port and data directory (recovery runs as after a crash).
- `stop(b)`: a clean stop (controlled shutdown, leave, close).
- `restart(b)`: `kill(b)` then `start(b)`.
- `cut(a, b)` / `heal(a, b)`: a network cut between two brokers (only with
  `peer_faults=True`; testing/peer_cuts.py): replica fetches and transaction markers between
  them fail while both keep serving clients. The metadata store is shared in this process
  and stays reachable: a cut from the store is a process fault (testing/cluster_processes.py
  with a relay).
  A paused broker (alive, answering nothing) is a process fault: `ackly_cluster_processes`.

Everything runs on the fixture's loop thread; `call(fn)` runs fn there. `wait_until` polls a
condition evaluated on that thread (no sleeps standing in for conditions: a bounded poll of a
predicate over the brokers' state).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

from ackly.cluster.metadata import ClusterMetadata, PartitionState
from ackly.cluster.store import RevokeLease
from ackly.server.app import BrokerServer
from ackly.server.memory_store_bridge import SharedMemoryStore
from ackly.testing.internal_topics import internal_topic_factors
from ackly.testing.peer_cuts import PeerCuts, free_port
from ackly.types import TopicPartition

T = TypeVar("T")

# Kafka's timeouts scaled for tests: failures are noticed and healed in seconds, not minutes.
FAST_CLUSTER_CONFIG = {
    "broker.session.timeout.ms": "6000",
    "broker.heartbeat.interval.ms": "1000",
    "replica.lag.time.max.ms": "5000",
    "replica.fetch.wait.max.ms": "200",
    "replica.fetch.backoff.ms": "100",
    "replica.socket.timeout.ms": "5000",
    "offsets.topic.num.partitions": "3",
    "group.initial.rebalance.delay.ms": "0",
}



class InProcessCluster:
    def __init__(self, root: str, brokers: int = 3, properties: Mapping[str, str] | None = None,
                 first_id: int = 1, *, peer_faults: bool = False,
                 broker_properties: Mapping[int, Mapping[str, str]] | None = None,
                 scram_users: Mapping[str, str] | None = None) -> None:
        """`broker_properties`: one broker's own (e.g. its `listeners`, on ports kept across
        restarts); `scram_users`: name -> password, SCRAM-SHA-512 credentials written into the
        store before any broker starts (as `ackly users set` does for etcd)."""
        self.root = root
        self.peer_faults = peer_faults
        self.peer_cuts: PeerCuts | None = None
        self.advertised_ports: dict[int, int] = {}
        self.broker_ids = list(range(first_id, first_id + brokers))
        self.properties = {**FAST_CLUSTER_CONFIG, **internal_topic_factors(brokers),
                           **(properties or {})}
        self.broker_properties = {b: dict(p) for b, p in (broker_properties or {}).items()}
        self.scram_users = dict(scram_users or {})
        self.servers: dict[int, BrokerServer | None] = {b: None for b in self.broker_ids}
        self.ports: dict[int, int] = {b: 0 for b in self.broker_ids}
        self.hub: SharedMemoryStore | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._revoke_ids = itertools.count(1)

    # --- life cycle -------------------------------------------------------------------------

    def start_all(self, timeout_s: float = 30.0) -> InProcessCluster:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self.loop = loop
            self.hub = SharedMemoryStore()
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="ackly-cluster", daemon=True)
        self._thread.start()
        ready.wait(10)
        if self.peer_faults:
            # The proxy needs each broker's port before the broker starts (it advertises the
            # proxy's listener): take free ports now, as the process clusters do.
            self.ports = {b: free_port() for b in self.broker_ids}
            self.peer_cuts = PeerCuts(self.ports)
            self.advertised_ports = self.peer_cuts.advertised_ports
        if self.scram_users:
            self.call(self._write_users)
        for b in self.broker_ids:
            self.start(b)
        self.wait_until(lambda: self._all_registered(), timeout_s, "every broker registered")
        return self

    def _write_users(self) -> None:
        from ackly.cluster.metadata import KeySpace
        from ackly.cluster.scram import ScramCredential
        from ackly.cluster.store import Put

        assert self.hub is not None
        keys = KeySpace()
        self.hub.submit("test-users", [
            Put(i + 1, keys.scram("SCRAM-SHA-512", name),
                ScramCredential.from_password(name, "SCRAM-SHA-512", password, 4096).encode())
            for i, (name, password) in enumerate(sorted(self.scram_users.items()))
        ])

    def _all_registered(self) -> bool:
        running = [b for b, s in self.servers.items() if s is not None]
        for b in running:
            metadata = self.metadata(b)
            if not set(running) <= set(metadata.brokers) or metadata.controller is None:
                return False
        return True

    def start(self, broker_id: int) -> BrokerServer:
        assert self.servers[broker_id] is None, f"broker {broker_id} is running"
        assert self.hub is not None

        async def go() -> BrokerServer:
            server = BrokerServer(
                data_dir=f"{self.root}/b{broker_id}", port=self.ports[broker_id],
                properties={**self.properties, **self.broker_properties.get(broker_id, {}),
                            "broker.id": str(broker_id)}, metadata_hub=self.hub,
                advertised_port=self.advertised_ports.get(broker_id),
            )
            await server.start()
            return server

        server = self._run(go())
        self.servers[broker_id] = server
        self.ports[broker_id] = server.port
        return server

    def kill(self, broker_id: int, *, revoke: bool = True) -> None:
        server = self.servers[broker_id]
        assert server is not None, f"broker {broker_id} is not running"
        self.servers[broker_id] = None
        lease = server.node.member.lease_id
        self._run(_kill(server))
        if revoke and lease is not None:
            assert self.hub is not None
            self.hub.submit("test-harness", [RevokeLease(next(self._revoke_ids), lease)])

    def restart(self, broker_id: int) -> BrokerServer:
        """A crash and a restart on the same port and data directory (see `kill`)."""
        self.kill(broker_id)
        return self.start(broker_id)

    def cut(self, a: int, b: int) -> None:
        """Cut the network between brokers a and b, both ways, until `heal(a, b)`."""
        self._peer_cuts().cut(a, b)

    def heal(self, a: int, b: int) -> None:
        """End the cut between a and b (the brokers reconnect on their own)."""
        self._peer_cuts().heal(a, b)

    def _peer_cuts(self) -> PeerCuts:
        if self.peer_cuts is None:
            raise RuntimeError("network cuts need the cluster started with peer_faults=True")
        return self.peer_cuts

    def stop(self, broker_id: int) -> None:
        server = self.servers[broker_id]
        assert server is not None
        self.servers[broker_id] = None
        self._run(server.stop())

    def close(self) -> None:
        for b, server in list(self.servers.items()):
            if server is not None:
                self.servers[b] = None
                with contextlib.suppress(Exception):  # best effort at teardown
                    self._run(_kill(server), timeout_s=30)
        if self.loop is not None and self._thread is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(30)
        if self.peer_cuts is not None:
            self.peer_cuts.stop()

    # --- access -----------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.ports[b]}" for b in self.broker_ids if self.servers[b] is not None)

    def running(self) -> list[int]:
        return [b for b, s in self.servers.items() if s is not None]

    def server(self, broker_id: int) -> BrokerServer:
        server = self.servers[broker_id]
        assert server is not None
        return server

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) on the cluster's loop thread (directly, if called from it)."""
        if threading.current_thread() is self._thread:
            return fn(*args)

        async def wrapper() -> T:
            return fn(*args)

        return self._run(wrapper())

    def metadata(self, broker_id: int) -> ClusterMetadata:
        return self.call(lambda: self.server(broker_id).node.metadata)

    def partition_state(self, topic: str, partition: int = 0) -> PartitionState | None:
        """The partition as the store holds it now."""
        assert self.hub is not None
        hub = self.hub

        def read() -> PartitionState | None:
            store = hub.store
            kvs = store.range("/ackly/")  # type: ignore[union-attr]
            view = ClusterMetadata.from_kvs(kvs, store.revision)  # type: ignore[union-attr]
            return view.partition(TopicPartition(topic, partition))

        return self.call(read)

    def leader(self, topic: str, partition: int = 0) -> int:
        state = self.partition_state(topic, partition)
        return -1 if state is None else state.leader

    def wait_until(self, condition: Callable[[], bool], timeout_s: float = 30.0, what: str = "") -> None:
        """Poll `condition` (on the loop thread) until it holds; fail after timeout_s."""
        deadline = time.monotonic() + timeout_s
        while not self.call(condition):
            if time.monotonic() > deadline:
                raise TimeoutError(f"not reached within {timeout_s} s: {what or condition}")
            time.sleep(0.02)  # poll interval of a condition, not a stand-in for one

    def _run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 60.0) -> T:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)


async def _kill(server: BrokerServer) -> None:
    """What SIGKILL leaves of a broker: sockets gone, no hand-over, logs not closed."""
    # The test kit reaches into the shell on purpose: a kill is not something it offers.
    for listening in server._servers:
        listening.close()
    if server.admin is not None:
        await server.admin.stop()
    for conn in list(server.connections):
        conn.abort()
    server._stopping = True
    if server._timer is not None:
        server._timer.cancel()
    if server.cluster is not None:
        await server.cluster.close()
    # Close the files without flushing or checkpointing: recovery at the next start finds them
    # as a crash leaves them (the data written is in the page cache).
    for p in server.node.all_partitions():
        for segment in p.log.segments:
            segment.close()
    server._flusher.shutdown(wait=False)
    await asyncio.sleep(0)
