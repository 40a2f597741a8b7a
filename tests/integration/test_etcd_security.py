"""The metadata store over TLS with a client certificate and etcd's user authentication: a
broker joins an etcd that requires both (`--metadata etcds://`, `metadata.etcd.*`); a wrong
password or a contradictory setting stops it at start-up with the key and the reason."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import grpc
import pytest
import trustme
from aetcd import rpc
from confluent_kafka.admin import AdminClient, NewTopic

from ackly.server.etcd_process import EtcdProcess, EtcdTls, etcd_binary
from ackly.testing.broker_process import BrokerProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

ROOT_PASSWORD = "s3cret-root"


@pytest.fixture
def secure_etcd(tmp_path: Path):
    if etcd_binary() is None:
        pytest.fail("etcd is not installed (apt-get install etcd-server)")
    ca = trustme.CA()
    files = tmp_path / "pki"
    files.mkdir()
    server = ca.issue_cert("127.0.0.1")
    client = ca.issue_cert("ackly-broker")
    paths = {name: str(files / name) for name in ("ca.crt", "etcd.crt", "etcd.key", "client.crt", "client.key")}
    ca.cert_pem.write_to_path(paths["ca.crt"])
    server.cert_chain_pems[0].write_to_path(paths["etcd.crt"])
    server.private_key_pem.write_to_path(paths["etcd.key"])
    client.cert_chain_pems[0].write_to_path(paths["client.crt"])
    client.private_key_pem.write_to_path(paths["client.key"])
    tls = EtcdTls(certfile=paths["etcd.crt"], keyfile=paths["etcd.key"], cafile=paths["ca.crt"],
                  client_cafile=paths["ca.crt"], client_certfile=paths["client.crt"],
                  client_keyfile=paths["client.key"])
    etcd = EtcdProcess(str(tmp_path / "etcd"), tls=tls).start()
    asyncio.run(_enable_auth(etcd, tls))
    try:
        yield etcd, paths
    finally:
        etcd.stop()


async def _enable_auth(etcd: EtcdProcess, tls: EtcdTls) -> None:
    """A root user with the root role, then auth on (what `etcdctl auth enable` needs)."""
    credentials = grpc.ssl_channel_credentials(
        Path(tls.cafile).read_bytes(), Path(tls.client_keyfile).read_bytes(),
        Path(tls.client_certfile).read_bytes(),
    )
    async with grpc.aio.secure_channel(etcd.endpoint, credentials) as channel:
        auth = rpc.AuthStub(channel)
        await auth.RoleAdd(rpc.AuthRoleAddRequest(name="root"), timeout=10)
        await auth.UserAdd(rpc.AuthUserAddRequest(name="root", password=ROOT_PASSWORD), timeout=10)
        await auth.UserGrantRole(rpc.AuthUserGrantRoleRequest(user="root", role="root"), timeout=10)
        await auth.AuthEnable(rpc.AuthEnableRequest(), timeout=10)


def etcd_configs(paths: dict[str, str], password: str = ROOT_PASSWORD) -> dict[str, str]:
    return {
        "metadata.etcd.ssl.cafile": paths["ca.crt"], "metadata.etcd.ssl.certfile": paths["client.crt"],
        "metadata.etcd.ssl.keyfile": paths["client.key"], "metadata.etcd.user": "root",
        "metadata.etcd.password": password,
    }


def test_a_broker_joins_and_works_over_tls_with_a_user(secure_etcd, ackly_process) -> None:
    etcd, paths = secure_etcd
    assert etcd.client_url.startswith("etcds://")
    broker = ackly_process(metadata=etcd.client_url, configs=etcd_configs(paths))
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("in-etcd", 2, 1)], operation_timeout=10)["in-etcd"].result(timeout=30)
    topics = admin.list_topics(timeout=10).topics
    assert sorted(topics["in-etcd"].partitions) == [0, 1]


def run_serve(tmp_path: Path, metadata: str, configs: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = BrokerProcess(str(tmp_path / "data"), metadata=metadata, configs=configs).command()
    return subprocess.run(command, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_a_wrong_password_stops_the_broker_at_start(secure_etcd, tmp_path: Path) -> None:
    etcd, paths = secure_etcd
    proc = run_serve(tmp_path, etcd.client_url, etcd_configs(paths, password="wrong"))
    assert proc.returncode != 0
    assert "metadata.etcd.password" in proc.stderr and "refused user 'root'" in proc.stderr


def test_tls_files_without_etcds_are_refused(tmp_path: Path) -> None:
    proc = run_serve(tmp_path, "etcd://127.0.0.1:2379", {"metadata.etcd.ssl.cafile": "/nonexistent/ca.crt"})
    assert proc.returncode != 0
    assert "metadata.etcd.ssl.cafile" in proc.stderr and "etcds://" in proc.stderr
