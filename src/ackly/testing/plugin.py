"""pytest plugin: real Kafka brokers for tests (in-process, or `ackly serve` processes).

Loaded through the `pytest11` entry point wherever ackly is installed, and inert until a test
asks for one of its fixtures: this module imports nothing but pytest at load time, registers
one marker, and every fixture imports what it needs when it first runs. A suite that never
uses the fixtures pays only for loading this file (bench/fixture.py measures it).

docs/testing.md is the reference: what each fixture gives, with examples.

Under pytest-xdist each worker is its own process, so it gets its own brokers on free ports
and its own temporary directories (pytest's tmp_path is per worker); nothing is shared.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
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
    from ackly.testing.topics import ConsumedRecord

CONFIG_MARKER = "ackly_config"
# What the fixtures' brokers change from Kafka's defaults, before a test's own configs: a
# group's first member is not kept waiting for others that a test will not start (Kafka's
# own documentation advises 0 for development and tests), and the internal topics have one
# partition instead of 50 (a broker a test creates, syncs and closes each of them).
TEST_BROKER_DEFAULTS = {
    "group.initial.rebalance.delay.ms": "0",
    "offsets.topic.num.partitions": "1",
    "transaction.state.log.num.partitions": "1",
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{CONFIG_MARKER}(configs=None, /, **configs): broker configs for this test's "
        "`ackly_broker` (and `bootstrap_servers`), e.g. "
        f"@pytest.mark.{CONFIG_MARKER}({{'log.flush.policy': 'never'}})",
    )


def _marker_configs(request: pytest.FixtureRequest) -> dict[str, str]:
    configs: dict[str, str] = {}
    # Closest marker last, so that a test's own marker wins over its class's or module's.
    for marker in reversed(list(request.node.iter_markers(CONFIG_MARKER))):
        for arg in marker.args:
            if not isinstance(arg, Mapping):
                raise TypeError(f"@pytest.mark.{CONFIG_MARKER} takes a dict of configs, not {arg!r}")
            configs.update({str(k): str(v) for k, v in arg.items()})
        configs.update({str(k): str(v) for k, v in marker.kwargs.items()})
    return configs


@pytest.fixture
def ackly_broker_config(request: pytest.FixtureRequest) -> dict[str, str]:
    """The broker configs of this test's `ackly_broker`: those of the `ackly_config` marker,
    then those of an indirect parametrization of this fixture (a dict), which win; over
    TEST_BROKER_DEFAULTS."""
    configs = {**TEST_BROKER_DEFAULTS, **_marker_configs(request)}
    param = getattr(request, "param", None)
    if param is not None:
        if not isinstance(param, Mapping):
            raise TypeError(f"ackly_broker_config is parametrized with dicts of configs, not {param!r}")
        configs.update({str(k): str(v) for k, v in param.items()})
    return configs


@pytest.fixture
def ackly_broker(tmp_path: Path, ackly_broker_config: dict[str, str]) -> Iterator[InProcessBroker]:
    """A broker of this test alone, in this process, on a free port, its data in the test's
    temporary directory; configs from `ackly_broker_config`. Stopped at the end of the test."""
    from ackly.testing.inprocess import InProcessBroker

    broker = InProcessBroker(str(tmp_path / "ackly-data"), ackly_broker_config).start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def ackly_session_broker_config() -> dict[str, str]:
    """The configs of `ackly_session_broker`; override this fixture in a conftest.py to set
    them (a session-scoped fixture cannot take a test's marker)."""
    return dict(TEST_BROKER_DEFAULTS)


@pytest.fixture(scope="session")
def ackly_session_broker(
    tmp_path_factory: pytest.TempPathFactory, ackly_session_broker_config: dict[str, str]
) -> Iterator[InProcessBroker]:
    """One broker for the whole session (one per pytest-xdist worker): faster than a broker a
    test when tests keep to topics of their own (`create_topic()` names a fresh one)."""
    from ackly.testing.inprocess import InProcessBroker

    broker = InProcessBroker(str(tmp_path_factory.mktemp("ackly-session")), ackly_session_broker_config).start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def bootstrap_servers(ackly_broker: InProcessBroker) -> str:
    """`host:port` of this test's `ackly_broker`, for any client's bootstrap.servers."""
    return ackly_broker.bootstrap


@pytest.fixture
def create_topic(bootstrap_servers: str) -> Callable[..., str]:
    """`create_topic(name=None, *, partitions=1, replication_factor=-1, configs=None)` on
    `bootstrap_servers`: returns the name (a fresh unique one if None) once every partition
    has a leader. For another broker or a cluster: `ackly.testing.topics.create_topic`."""
    from ackly.testing.topics import create_topic as create

    def make(name: str | None = None, **kwargs: Any) -> str:
        return create(bootstrap_servers, name, **kwargs)

    return make


@pytest.fixture
def read_topic(bootstrap_servers: str) -> Callable[..., list[ConsumedRecord]]:
    """`read_topic(topic, *, partitions=None, isolation="read_uncommitted")` on
    `bootstrap_servers`: every record from the log start to the high watermark (the last
    stable offset under read_committed), as `ConsumedRecord`s in partition, offset order."""
    from ackly.testing.topics import read_topic as read

    def get(topic: str, **kwargs: Any) -> list[ConsumedRecord]:
        return read(bootstrap_servers, topic, **kwargs)

    return get


@pytest.fixture
def ackly_cluster(tmp_path: Path) -> Iterator[Callable[..., InProcessCluster]]:
    """A factory of in-process clusters: `ackly_cluster(brokers=3, properties={...},
    peer_faults=False)` starts N brokers in this process (one event loop, one shared metadata
    store, real loopback sockets between them and to clients), with `kill`, `start`,
    `restart`, `stop` of a broker and, with `peer_faults=True`, `cut(a, b)` / `heal(a, b)`
    of the network between two brokers. Every cluster is torn down at the end of the test."""
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
