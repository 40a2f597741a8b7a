"""pytest plugin: brokers for tests (in-process, or real `ackly serve` processes)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ackly.server.etcd_process import EtcdProcess
    from ackly.testing.broker_process import BrokerProcess
    from ackly.testing.cluster import InProcessCluster
    from ackly.testing.cluster_processes import ClusterProcesses
    from ackly.testing.fault_proxy import FaultProxy
    from ackly.testing.inprocess import InProcessBroker
    from ackly.testing.postgres import PostgresServer


@pytest.fixture
def ackly_broker(tmp_path: Path) -> Iterator[InProcessBroker]:
    """A broker in this process on a free port, data in a temporary directory."""
    from ackly.testing.inprocess import InProcessBroker

    broker = InProcessBroker(str(tmp_path / "data")).start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def ackly_cluster(tmp_path: Path) -> Iterator[Callable[..., InProcessCluster]]:
    """A factory of in-process clusters: `ackly_cluster(brokers=3, properties={...})` starts N
    brokers in this process (one event loop, one shared metadata store, real loopback sockets
    between them and to clients). Every cluster is torn down at the end of the test."""
    from ackly.testing.cluster import InProcessCluster

    started: list[InProcessCluster] = []

    def make(brokers: int = 3, properties: dict[str, str] | None = None, **kwargs: Any) -> InProcessCluster:
        cluster = InProcessCluster(str(tmp_path / f"cluster{len(started)}"), brokers, properties, **kwargs)
        started.append(cluster)
        return cluster.start_all()

    try:
        yield make
    finally:
        for cluster in started:
            cluster.close()


@pytest.fixture
def ackly_process(tmp_path: Path) -> Iterator[Callable[..., BrokerProcess]]:
    """A factory of `ackly serve` processes; all are killed at the end of the test."""
    from ackly.testing.broker_process import BrokerProcess

    started: list[BrokerProcess] = []

    def make(name: str = "data", **kwargs: Any) -> BrokerProcess:
        proc = BrokerProcess(str(tmp_path / name), **kwargs).start()
        started.append(proc)
        return proc

    try:
        yield make
    finally:
        for proc in started:
            proc.kill()


@pytest.fixture
def fault_proxy() -> Iterator[Callable[..., FaultProxy]]:
    """A factory of fault proxies: `fault_proxy("127.0.0.1:9092") -> FaultProxy`, started.

    Keyword arguments go to `FaultProxy`. Every proxy is stopped at the end of the test.
    """
    from ackly.testing.fault_proxy import FaultProxy, parse_address

    started: list[FaultProxy] = []

    def make(upstream_bootstrap: str, **kwargs: Any) -> FaultProxy:
        first = upstream_bootstrap.split(",")[0]
        proxy = FaultProxy(upstream=parse_address(first), **kwargs).start()
        started.append(proxy)
        return proxy

    try:
        yield make
    finally:
        for proxy in started:
            proxy.stop()


@pytest.fixture
def etcd_server(tmp_path: Path) -> Iterator[EtcdProcess]:
    """A fresh single-member etcd on free 127.0.0.1 ports (data in a temporary directory),
    healthy on return; stopped at the end. Skips the test if etcd is not installed."""
    from ackly.server.etcd_process import EtcdProcess, etcd_binary

    if etcd_binary() is None:
        pytest.skip("etcd is not installed (Debian: apt-get install etcd-server)")
    server = EtcdProcess(str(tmp_path / "etcd")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def ackly_cluster_processes(tmp_path: Path) -> Iterator[Callable[..., ClusterProcesses]]:
    """A factory of real clusters: `ackly_cluster_processes(brokers=3, configs={...})` starts
    etcd and one `ackly serve --metadata etcd://...` per broker. Everything is stopped at the
    end of the test. Skips the test if etcd is not installed."""
    from ackly.testing.cluster_processes import ClusterProcesses, etcd_binary

    if etcd_binary() is None:
        pytest.skip("etcd is not installed (Debian: apt-get install etcd-server)")
    started: list[ClusterProcesses] = []

    def make(brokers: int = 3, **kwargs: Any) -> ClusterProcesses:
        cluster = ClusterProcesses(str(tmp_path / f"cluster-{len(started)}"), brokers, **kwargs)
        started.append(cluster)
        return cluster.start()

    try:
        yield make
    finally:
        for cluster in started:
            cluster.stop_all()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One private PostgreSQL server for the test session (initdb in a temporary directory,
    127.0.0.1 only, run as the `postgres` user under root). Skips only if PostgreSQL is not
    installed."""
    from ackly.testing.postgres import PostgresServer, postgres_bin_dir

    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    server = PostgresServer(bin_dir).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_database(postgres_server: PostgresServer) -> str:
    """The conninfo of a new, empty database on the session's PostgreSQL server."""
    return postgres_server.create_database()
