"""The cluster a verify run drives, and the levers the nemesis pulls on it.

`OwnCluster` starts etcd and N `ackly serve` processes (ackly.testing.ClusterProcesses) with
two fault proxies and one TCP relay per broker in between:

    clients --> client proxy --> broker i (its real port)
    broker j --> peer proxy (the port broker i advertises) --> broker i
    broker i --> relay i --> etcd

so that client faults (client proxy), inter-broker partitions (peer proxy: every replica fetch
towards a broker) and cuts from the metadata store (relay) are separate levers. Brokers start
with the short session and lag timeouts below, so that a failover takes seconds.

With a `Security` (verify/security.py: `--security ssl|sasl_plaintext|sasl_ssl`) clients and
peers use the brokers' CLIENT and BROKER listeners in that protocol and both proxies terminate
TLS; the launcher's own checks use a PLAINTEXT listener on 127.0.0.1.

`ExternalCluster` is any Kafka-compatible cluster reached through `--bootstrap`: only a client
proxy stands in front of it, so only the proxy faults apply.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

from ackly.librdkafka_log import quiet
from ackly.testing.cluster_processes import ClusterProcesses, wait_until
from ackly.testing.fault_proxy import FaultProxy, parse_address
from ackly.testing.tcp_relay import TcpRelay
from ackly.verify.security import Security, uses_tls

FAST_FAILOVER = {
    "broker.session.timeout.ms": "3000",
    "broker.heartbeat.interval.ms": "500",
    "replica.lag.time.max.ms": "3000",
    "replica.fetch.backoff.ms": "200",
    "replica.fetch.wait.max.ms": "200",
    "offsets.topic.num.partitions": "3",
    "transaction.state.log.num.partitions": "3",
    "group.initial.rebalance.delay.ms": "300",  # the first members of a group start at once
    # KIP-848 members (--group-protocol consumer): as fast as the classic members' settings.
    "group.consumer.session.timeout.ms": "6000",
    "group.consumer.heartbeat.interval.ms": "500",
}


class EtcdMissing(RuntimeError):
    pass


def create_topic(bootstrap: str, topic: str, partitions: int, replication_factor: int,
                 configs: Mapping[str, str], timeout_s: float = 30.0,
                 security: Mapping[str, str] | None = None) -> None:
    """Create the workload's topic (confluent-kafka's admin client, whatever the workload's
    client), and wait until every partition has a leader."""
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    admin = AdminClient(quiet({**(security or {}), "bootstrap.servers": bootstrap, "log_level": 2}))
    futures = admin.create_topics(
        [NewTopic(topic, partitions, replication_factor, config=dict(configs))],
        operation_timeout=timeout_s, request_timeout=timeout_s)
    futures[topic].result(timeout=timeout_s)

    def ready() -> bool:
        meta = admin.list_topics(topic, timeout=5)
        parts = meta.topics[topic].partitions if topic in meta.topics else {}
        return len(parts) == partitions and all(p.leader >= 0 for p in parts.values())

    wait_until(ready, timeout_s, f"topic {topic}: a leader for every partition", interval_s=0.2)


def broker_count(bootstrap: str, timeout_s: float = 10.0, security: Mapping[str, str] | None = None) -> int:
    """How many brokers the cluster's metadata lists."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(quiet({**(security or {}), "bootstrap.servers": bootstrap, "log_level": 2}))
    return len(admin.list_topics(timeout=timeout_s).brokers)


def _leader_via_client(bootstrap: str, topic: str, partition: int,
                       security: Mapping[str, str]) -> int | None:
    from confluent_kafka.admin import AdminClient

    with contextlib.suppress(Exception):
        admin = AdminClient(quiet({**security, "bootstrap.servers": bootstrap, "log_level": 2}))
        meta = admin.list_topics(topic, timeout=3)
        return int(meta.topics[topic].partitions[partition].leader)
    return None


class OwnCluster:
    processes = True

    def __init__(self, base_dir: str, brokers: int, *, configs: Mapping[str, str] | None = None,
                 planted_faults: Sequence[str] = (), topic: str = "", partitions: int = 1,
                 replication_factor: int = 3, record_flushes: bool = False,
                 disk_errors: bool = False, security: Security | None = None) -> None:
        self.base_dir = base_dir
        self.partitions = partitions
        self.replication_factor = min(replication_factor, brokers)
        self.count = brokers
        self.configs = {**FAST_FAILOVER, **dict(configs or {})}
        self.planted_faults = tuple(planted_faults)
        self.record_flushes = record_flushes  # for lose_unflushed (testing/flushed_lengths.py)
        self.disk_errors = disk_errors  # for fail_disk (testing/disk_faults.py)
        self.security = security
        self.topic = topic
        self.etcd: Any = None
        self.cluster: ClusterProcesses | None = None
        self.client_proxy: FaultProxy | None = None
        self.peer_proxy: FaultProxy | None = None
        self.relays: dict[int, TcpRelay] = {}

    @property
    def bootstrap(self) -> str:
        assert self.client_proxy is not None
        return self.client_proxy.bootstrap

    def start(self) -> OwnCluster:
        from ackly.server.etcd_process import EtcdProcess, etcd_binary, free_port

        if etcd_binary() is None:
            raise EtcdMissing("verify's own cluster needs etcd (Debian: apt-get install etcd-server); "
                              "or point it at a running cluster with --bootstrap")
        try:
            self.etcd = EtcdProcess(os.path.join(self.base_dir, "etcd")).start()
            security = self.security
            server_ssl = security.proxy_server_context() if security is not None else None
            upstream_ssl = security.proxy_upstream_context() if security is not None else None
            if security is not None:
                security.add_users(self.etcd.client_url)
            for _attempt in range(10):
                # The brokers' ports are only reserved by number until they start: the proxy's
                # and relays' own listeners (port 0) must not land on one of them.
                ports = {b: free_port() for b in range(self.count)}
                # Secured: each broker's CLIENT and BROKER listeners (PLAINTEXT is `ports`).
                client_ports = {b: free_port() for b in range(self.count)} if security else ports
                peer_ports = {b: free_port() for b in range(self.count)} if security else ports
                real = {b: ("127.0.0.1", p) for b, p in client_ports.items()}
                self.peer_proxy = FaultProxy(upstreams={b: ("127.0.0.1", p) for b, p in peer_ports.items()},
                                             server_ssl=server_ssl, upstream_ssl=upstream_ssl).start()
                advertised = {b: int(a.rsplit(":", 1)[1]) for b, a in self.peer_proxy.listeners.items()}
                self.relays = {b: TcpRelay(("127.0.0.1", self.etcd.client_port)).start()
                               for b in range(self.count)}
                taken = set(advertised.values()) | {r.port for r in self.relays.values()}
                wanted = set(ports.values()) | set(client_ports.values()) | set(peer_ports.values())
                if not taken & wanted and len(wanted) == len(ports) * (3 if security else 1):
                    break
                self.peer_proxy.stop()
                for relay in self.relays.values():
                    relay.stop()
            else:
                raise RuntimeError("could not find free ports for the brokers")
            configs = dict(self.configs)
            broker_configs: dict[int, dict[str, str]] = {}
            if security is not None:
                configs.update(security.broker_configs())
                # With `listeners` the broker takes no --advertised-port: the peer proxy's port
                # is the BROKER listener's advertised one.
                broker_configs = {b: Security.listeners(ports[b], client_ports[b], peer_ports[b], advertised[b])
                                  for b in range(self.count)}
            self.cluster = ClusterProcesses(
                os.path.join(self.base_dir, "cluster"), self.count, configs=configs, etcd=self.etcd,
                broker_configs=broker_configs, ports=ports,
                advertised_ports=advertised if security is None else None,
                metadata_urls={b: f"etcd://{r.address}" for b, r in self.relays.items()},
                faults=self.planted_faults + (("disk-error",) if self.disk_errors else ()),
                record_flushes=self.record_flushes, log_level="WARNING",
            )
            self.cluster.start()
            # Explicit upstreams: clients reach the brokers' real ports, never the peer proxy.
            self.client_proxy = FaultProxy(upstreams=real, server_ssl=server_ssl,
                                           upstream_ssl=upstream_ssl).start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.client_proxy is not None:
            self.client_proxy.stop()
        if self.cluster is not None:
            for b in self.cluster.brokers:
                self.cluster.resume(b)
            self.cluster.stop_all()
        for relay in self.relays.values():
            relay.stop()
        if self.peer_proxy is not None:
            self.peer_proxy.stop()
        if self.etcd is not None:
            self.etcd.stop()

    # --- FaultTarget ----------------------------------------------------------------------

    def _cluster(self) -> ClusterProcesses:
        assert self.cluster is not None
        return self.cluster

    def broker_ids(self) -> list[int]:
        return list(range(self.count))

    def leader_of(self, partition: int) -> int | None:
        view = self._cluster().partition(self.topic, partition)
        return view.leader if view is not None and view.leader >= 0 else None

    def kill(self, broker_id: int) -> None:
        self._cluster().kill(broker_id)

    def lose_unflushed(self, broker_id: int) -> int:
        if not self.record_flushes:
            raise RuntimeError("lose-unflushed needs brokers that record their flushes")
        cut = self._cluster().lose_unflushed(broker_id)
        return sum(before - after for before, after in cut.values())

    def restart(self, broker_id: int) -> None:
        cluster = self._cluster()
        if cluster.running(broker_id):
            cluster.restart(broker_id)
        else:
            cluster.start_broker(broker_id)

    def fail_disk(self, broker_id: int) -> None:
        if not self.disk_errors:
            raise RuntimeError("disk-error needs brokers started with the disk fault")
        self._cluster().fail_disk(broker_id)

    def end_disk_error(self, broker_id: int) -> None:
        cluster = self._cluster()
        if cluster.running(broker_id):
            cluster.withdraw_disk_failure(broker_id)
        else:
            cluster.start_broker(broker_id)

    def pause(self, broker_id: int) -> None:
        self._cluster().pause(broker_id)

    def resume(self, broker_id: int) -> None:
        self._cluster().resume(broker_id)

    def isolate(self, broker_id: int) -> None:
        assert self.peer_proxy is not None
        self.peer_proxy.add_rule(None, "reset", broker_id=broker_id)
        self.peer_proxy.disconnect_all(reset=True)
        self.relays[broker_id].cut()

    def reconnect(self, broker_id: int) -> None:
        assert self.peer_proxy is not None
        self.relays[broker_id].heal()
        self.peer_proxy.clear_rules()

    def client_rule(self, broker_id: int, action: str, **kwargs: Any) -> object:
        assert self.client_proxy is not None
        api_key = kwargs.pop("api_key", None)
        return self.client_proxy.add_rule(api_key, action, broker_id=broker_id, **kwargs)  # type: ignore[arg-type]

    def remove_client_rules(self, rules: Sequence[object]) -> None:
        assert self.client_proxy is not None
        if rules:
            self.client_proxy.clear_rules()

    def reset_clients(self) -> None:
        assert self.client_proxy is not None
        self.client_proxy.disconnect_all(reset=True)

    def wait_healthy(self, timeout_s: float) -> bool:
        """Every broker running and in the cluster, every partition of the topic led with a
        full ISR; bounded by `timeout_s`."""
        cluster = self._cluster()
        for b in self.broker_ids():
            cluster.resume(b)
            if not cluster.running(b):
                cluster.start_broker(b)
        try:
            cluster.wait_ready(timeout_s)
        except TimeoutError:
            return False

        def whole() -> bool:
            for p in range(self.partitions):
                view = cluster.partition(self.topic, p)
                if view is None or view.leader < 0 or len(view.isr) < self.replication_factor:
                    return False
            return True

        try:
            wait_until(whole, timeout_s, "every partition led with a full ISR", interval_s=0.2)
        except TimeoutError:
            return False
        return True

    def broker_logs(self) -> dict[int, str]:
        cluster = self._cluster()
        return {b: cluster.output(b) for b in cluster.brokers}


class ExternalCluster:
    """A cluster verify did not start: faults only through a client proxy in front of it."""

    processes = False

    def __init__(self, bootstrap: str, topic: str = "", security: Mapping[str, str] | None = None) -> None:
        self.real_bootstrap = bootstrap
        self.topic = topic
        self.security = dict(security or {})
        self.client_proxy = FaultProxy(upstream=parse_address(bootstrap.split(",")[0]))
        # Over TLS the proxy would need the cluster's own certificate and key to see frames:
        # the clients then connect directly, and no fault applies.
        self.direct = uses_tls(self.security)

    @property
    def bootstrap(self) -> str:
        return self.real_bootstrap if self.direct else self.client_proxy.bootstrap

    def start(self) -> ExternalCluster:
        if not self.direct:
            self.client_proxy.start()
        return self

    def stop(self) -> None:
        self.client_proxy.stop()

    def broker_ids(self) -> list[int]:
        if self.direct:
            return [0]
        return sorted(self.client_proxy.listeners) or [0]

    def leader_of(self, partition: int) -> int | None:
        return _leader_via_client(self.real_bootstrap, self.topic, partition, self.security)

    def _refuse(self, broker_id: int) -> None:
        raise RuntimeError("process faults need a cluster that verify started")

    def _refuse_loss(self, broker_id: int) -> int:
        raise RuntimeError("process faults need a cluster that verify started")

    lose_unflushed = _refuse_loss
    kill = restart = pause = resume = isolate = reconnect = fail_disk = end_disk_error = _refuse

    def client_rule(self, broker_id: int, action: str, **kwargs: Any) -> object:
        if self.direct:
            raise RuntimeError("client faults need the proxy, which cannot read TLS")
        api_key = kwargs.pop("api_key", None)
        return self.client_proxy.add_rule(api_key, action, broker_id=broker_id, **kwargs)  # type: ignore[arg-type]

    def remove_client_rules(self, rules: Sequence[object]) -> None:
        if rules and not self.direct:
            self.client_proxy.clear_rules()

    def reset_clients(self) -> None:
        if not self.direct:
            self.client_proxy.disconnect_all(reset=True)

    def wait_healthy(self, timeout_s: float) -> bool:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(quiet({**self.security, "bootstrap.servers": self.real_bootstrap, "log_level": 2}))

        def led() -> bool:
            meta = admin.list_topics(self.topic, timeout=5)
            parts = meta.topics[self.topic].partitions if self.topic in meta.topics else {}
            return bool(parts) and all(p.leader >= 0 and len(p.isrs) == len(p.replicas) for p in parts.values())

        try:
            wait_until(led, timeout_s, "every partition led with a full ISR", interval_s=0.2)
        except TimeoutError:
            return False
        return True
