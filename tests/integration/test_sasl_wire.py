"""SASL on the wire, against an in-process broker with one SASL_PLAINTEXT listener: what an
unauthenticated connection may send, the frame bound and the deadline before authentication,
Kafka's v0 handshake with bare tokens, and KIP-368's session end and re-authentication (by hand
and by kafka-python, which re-authenticates on its own)."""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import scramp
from click.testing import CliRunner
from kio.schema.api_versions.v3.request import ApiVersionsRequest
from kio.schema.errors import ErrorCode
from kio.schema.sasl_authenticate.v2.request import SaslAuthenticateRequest
from kio.schema.sasl_handshake.v0.request import SaslHandshakeRequest as SaslHandshakeV0
from kio.schema.sasl_handshake.v1.request import SaslHandshakeRequest

from ackly.cli.main import cli
from ackly.testing.inprocess import InProcessBroker
from ackly.testing.wire import WireClient
from tests.integration import wire_requests as rq

pytestmark = pytest.mark.slow

USER, PASSWORD = "bob", "builder-77"


def start_broker(tmp_path: Path, **configs: str) -> InProcessBroker:
    data_dir = str(tmp_path / "data")
    result = CliRunner().invoke(cli, ["users", "set", USER, "--mechanism", "SCRAM-SHA-256", "--mechanism",
                                      "SCRAM-SHA-512", "--password-stdin", "--data-dir", data_dir],
                                input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    return InProcessBroker(data_dir, {
        "listeners": "SASL_PLAINTEXT://127.0.0.1:0", "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256",
        **configs,
    }).start()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[InProcessBroker]:
    b = start_broker(tmp_path, **{"connections.first.request.timeout.ms": "1000"})
    yield b
    b.stop()


def assert_closed(client: WireClient) -> None:
    client.sock.settimeout(10)
    with pytest.raises((ConnectionError, OSError)):
        client.read_frame()


def scram_login(client: WireClient, password: str = PASSWORD) -> object:
    """SaslHandshake v1 + SaslAuthenticate v2 with scramp's client; the last response."""
    assert client.request(SaslHandshakeRequest(mechanism="SCRAM-SHA-256")).error_code == ErrorCode.none
    scram = scramp.ScramClient(["SCRAM-SHA-256"], USER, password)
    first = client.request(SaslAuthenticateRequest(auth_bytes=scram.get_client_first().encode()))
    assert first.error_code == ErrorCode.none
    scram.set_server_first(first.auth_bytes.decode())
    final = client.request(SaslAuthenticateRequest(auth_bytes=scram.get_client_final().encode()))
    if final.error_code == ErrorCode.none:
        scram.set_server_final(final.auth_bytes.decode())
    return final


def metadata_ok(client: WireClient) -> bool:
    return client.request(rq.metadata()).brokers != ()


def test_a_request_before_authentication_closes_the_connection(broker: InProcessBroker) -> None:
    with WireClient(broker.bootstrap) as client:
        client.send_raw(client.frame(rq.metadata()))
        assert_closed(client)
    with WireClient(broker.bootstrap) as client:
        # ApiVersions is allowed first; then the exchange, then anything.
        assert client.request(ApiVersionsRequest(client_software_name="t", client_software_version="1")) \
            .error_code == ErrorCode.none
        assert scram_login(client).error_code == ErrorCode.none
        assert metadata_ok(client)


def test_a_failed_exchange_is_answered_then_closed(broker: InProcessBroker) -> None:
    with WireClient(broker.bootstrap) as client:
        final = scram_login(client, password="wrong")
        assert final.error_code == ErrorCode.sasl_authentication_failed
        assert "invalid credentials" in final.error_message
        assert_closed(client)
    with WireClient(broker.bootstrap) as client:
        handshake = client.request(SaslHandshakeRequest(mechanism="SCRAM-SHA-512"))  # not enabled here
        assert handshake.error_code == ErrorCode.unsupported_sasl_mechanism
        assert set(handshake.mechanisms) == {"PLAIN", "SCRAM-SHA-256"}
        assert_closed(client)


def test_frames_before_authentication_are_bounded(broker: InProcessBroker) -> None:
    with WireClient(broker.bootstrap) as client:
        client.send_raw(struct.pack(">i", 524_288 + 1))  # sasl.server.max.receive.size
        assert_closed(client)
    with WireClient(broker.bootstrap) as client:
        assert scram_login(client).error_code == ErrorCode.none
        # Authenticated: socket.request.max.bytes applies again.
        assert client.request(rq.create_topic("big")).topics[0].error_code == ErrorCode.none
        response = client.request(rq.produce("big", rq.batch(b"x" * 700_000)))
        assert response.responses[0].partition_responses[0].error_code == ErrorCode.none


def test_an_exchange_that_never_ends_is_closed_at_the_deadline(broker: InProcessBroker) -> None:
    """connections.first.request.timeout.ms (1 s here) bounds authentication on a SASL
    listener: a client that only sends ApiVersions is closed; one that authenticated is not."""
    with WireClient(broker.bootstrap) as stalled, WireClient(broker.bootstrap) as good:
        assert scram_login(good).error_code == ErrorCode.none
        started = time.monotonic()
        stalled.request(ApiVersionsRequest(client_software_name="t", client_software_version="1"))
        assert_closed(stalled)
        assert time.monotonic() - started >= 0.9
        assert metadata_ok(good)


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_handshake_v0_takes_bare_tokens(broker: InProcessBroker, mechanism: str) -> None:
    """Kafka before KIP-152: after SaslHandshake v0 the tokens travel size-prefixed, without
    a request header, and so do the broker's challenges."""
    with WireClient(broker.bootstrap) as client:
        assert client.request(SaslHandshakeV0(mechanism=mechanism)).error_code == ErrorCode.none
        if mechanism == "PLAIN":
            token = f"\x00{USER}\x00{PASSWORD}".encode()
            client.send_raw(struct.pack(">i", len(token)) + token)
            assert client.read_frame() == b""
        else:
            scram = scramp.ScramClient([mechanism], USER, PASSWORD)
            first = scram.get_client_first().encode()
            client.send_raw(struct.pack(">i", len(first)) + first)
            scram.set_server_first(client.read_frame().decode())
            final = scram.get_client_final().encode()
            client.send_raw(struct.pack(">i", len(final)) + final)
            scram.set_server_final(client.read_frame().decode())  # checks the server's signature
        assert metadata_ok(client)
    with WireClient(broker.bootstrap) as client:
        assert client.request(SaslHandshakeV0(mechanism="PLAIN")).error_code == ErrorCode.none
        token = f"\x00{USER}\x00nope".encode()
        client.send_raw(struct.pack(">i", len(token)) + token)
        assert_closed(client)


def test_session_end_and_reauthentication(tmp_path: Path) -> None:
    broker = start_broker(tmp_path, **{"connections.max.reauth.ms": "1000"})
    try:
        with WireClient(broker.bootstrap) as lapsed, WireClient(broker.bootstrap) as renewed:
            first = scram_login(lapsed)
            assert first.session_lifetime.total_seconds() == 1.0
            assert scram_login(renewed).error_code == ErrorCode.none
            started = time.monotonic()
            assert metadata_ok(lapsed) and metadata_ok(renewed)
            # KIP-368: a new exchange on the same connection, before the session ends, gives a
            # session that outlasts the first.
            time.sleep(max(0.0, started + 0.6 - time.monotonic()))
            assert scram_login(renewed).error_code == ErrorCode.none
            time.sleep(max(0.0, started + 1.1 - time.monotonic()))  # past the first sessions' end
            assert metadata_ok(renewed)
            lapsed.send_raw(lapsed.frame(rq.metadata()))
            assert_closed(lapsed)
    finally:
        broker.stop()


def test_kafka_python_reauthenticates_on_its_own(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from kafka import KafkaProducer

    caplog.set_level(logging.INFO, logger="ackly")

    broker = start_broker(tmp_path, **{"connections.max.reauth.ms": "1000"})
    try:
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, security_protocol="SASL_PLAINTEXT",
                                 sasl_mechanism="SCRAM-SHA-256", sasl_plain_username=USER,
                                 sasl_plain_password=PASSWORD, max_block_ms=10_000, retries=0)
        try:
            started = time.monotonic()
            sent = 0
            while time.monotonic() - started < 3.5:  # several session lifetimes
                producer.send("reauth", f"r{sent}".encode()).get(timeout=10)
                sent += 1
                time.sleep(0.1)  # the producer's pace
        finally:
            producer.close()
        assert sent >= 10
        # It renewed its session on the same connection, and no connection outlived one.
        assert "User:bob re-authenticated" in caplog.text
        assert "without re-authentication" not in caplog.text
    finally:
        broker.stop()


def test_sasl_between_brokers_needs_credentials_at_start_up(tmp_path: Path) -> None:
    from ackly.errors import ConfigError
    from ackly.server.app import BrokerServer

    listeners = {"listeners": "SASL_PLAINTEXT://127.0.0.1:0"}
    with pytest.raises(ConfigError, match=r"listener\.name\.sasl_plaintext\.sasl\.jaas\.config"):
        BrokerServer(data_dir=str(tmp_path), metadata="etcd://127.0.0.1:2379", properties=listeners)
    with pytest.raises(ConfigError, match=r"sasl\.mechanism\.inter\.broker\.protocol"):
        BrokerServer(data_dir=str(tmp_path), metadata="etcd://127.0.0.1:2379", properties={
            **listeners, "sasl.enabled.mechanisms": "SCRAM-SHA-256", "sasl.jaas.config": 'username="b" password="p"'})
    server = BrokerServer(data_dir=str(tmp_path), metadata="etcd://127.0.0.1:2379", properties={
        **listeners, "listener.name.sasl_plaintext.sasl.jaas.config":
            'org.apache.kafka.common.security.scram.ScramLoginModule required username="broker" password="p\\"q";'})
    assert server.peer_sasl is not None
    assert (server.peer_sasl.mechanism, server.peer_sasl.username, server.peer_sasl.password) == \
        ("SCRAM-SHA-512", "broker", 'p"q')
    assert 'p"q' not in repr(server.peer_sasl)


def test_users_refuses_a_data_dir_that_predates_the_metadata_store(tmp_path: Path) -> None:
    (tmp_path / "topics.json").write_text("{}")
    result = CliRunner().invoke(cli, ["users", "set", USER, "--password-stdin", "--data-dir", str(tmp_path)],
                                input=PASSWORD + "\n")
    assert result.exit_code != 0 and "start the broker once" in result.output
    assert not (tmp_path / "metadata.json").exists()


def test_mechanisms_per_listener(tmp_path: Path) -> None:
    """Kafka's `listener.name.<name>.sasl.enabled.mechanisms` overrides the broker-wide list."""
    broker = start_broker(tmp_path, **{"listener.name.sasl_plaintext.sasl.enabled.mechanisms": "SCRAM-SHA-512"})
    try:
        with WireClient(broker.bootstrap) as client:
            handshake = client.request(SaslHandshakeRequest(mechanism="PLAIN"))
            assert handshake.error_code == ErrorCode.unsupported_sasl_mechanism
            assert list(handshake.mechanisms) == ["SCRAM-SHA-512"]
    finally:
        broker.stop()
