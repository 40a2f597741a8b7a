"""TLS contexts from the ssl.* keys: what is loaded, what is refused at start-up (with the key),
and what a handshake then accepts."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest
import trustme

from ackly.config import BrokerConfig
from ackly.errors import ConfigError
from ackly.listeners import resolve_listeners
from ackly.server.tls import client_context, inter_broker_context, server_context, server_contexts


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    directory = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    paths = {"ca": str(directory / "ca.crt"), "store": str(directory / "broker.pem"),
             "encrypted": str(directory / "encrypted.pem")}
    ca.cert_pem.write_to_path(paths["ca"])
    cert.private_key_and_cert_chain_pem.write_to_path(paths["store"])
    # The same key, encrypted with a password (PKCS#8), then the chain.
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), None)
    encrypted = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.BestAvailableEncryption(b"s3cret"))
    Path(paths["encrypted"]).write_bytes(encrypted + b"".join(b.bytes() for b in cert.cert_chain_pems))
    paths["chain"] = b"".join(b.bytes() for b in cert.cert_chain_pems).decode()
    paths["key"] = cert.private_key_pem.bytes().decode()
    return paths


def config(**props: str) -> BrokerConfig:
    return BrokerConfig.from_properties({k.replace("_", "."): v for k, v in props.items()})


def handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> str:
    """One handshake over a socket pair; the TLS version, or the failure's text."""
    left, right = socket.socketpair()
    outcome: dict[str, str] = {}

    def serve() -> None:
        try:
            with server.wrap_socket(left, server_side=True) as s:
                outcome["server"] = str(s.version())
                s.recv(1)
        except (ssl.SSLError, OSError) as exc:
            outcome["server"] = f"failed: {exc}"

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client.wrap_socket(right, server_hostname="127.0.0.1") as c:
            c.sendall(b"x")
            version = str(c.version())
    except (ssl.SSLError, OSError) as exc:
        version = f"failed: {exc}"
    finally:
        right.close()
        thread.join(10)
        left.close()
    return version if not outcome.get("server", "").startswith("failed") else outcome["server"]


def trusting(pki: dict[str, str], **versions: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki["ca"])
    for name, value in versions.items():
        setattr(context, name, value)
    return context


def test_a_pem_key_store_file_or_inline_pem_serve_tls_1_3(pki: dict[str, str]) -> None:
    from_file = server_context(config(ssl_keystore_location=pki["store"]), "SSL")
    assert handshake(from_file, trusting(pki)) == "TLSv1.3"
    inline = server_context(BrokerConfig.from_properties({
        "ssl.keystore.certificate.chain": pki["chain"], "ssl.keystore.key": pki["key"]}), "SSL")
    assert handshake(inline, trusting(pki)) == "TLSv1.3"


def test_an_encrypted_key_needs_its_password(pki: dict[str, str]) -> None:
    good = server_context(BrokerConfig.from_properties({
        "ssl.keystore.location": pki["encrypted"], "ssl.key.password": "s3cret"}), "SSL")
    assert handshake(good, trusting(pki)) == "TLSv1.3"
    with pytest.raises(ConfigError) as info:
        server_context(BrokerConfig.from_properties({
            "ssl.keystore.location": pki["encrypted"], "ssl.key.password": "wrong"}), "SSL")
    assert info.value.key == "ssl.keystore.location" and "ssl.key.password" in info.value.reason


def test_enabled_protocols_bound_the_versions(pki: dict[str, str]) -> None:
    only_13 = server_context(BrokerConfig.from_properties({
        "ssl.keystore.location": pki["store"], "ssl.enabled.protocols": "TLSv1.3"}), "SSL")
    assert handshake(only_13, trusting(pki, maximum_version=ssl.TLSVersion.TLSv1_2)).startswith("failed")
    default = server_context(config(ssl_keystore_location=pki["store"]), "SSL")
    assert handshake(default, trusting(pki, maximum_version=ssl.TLSVersion.TLSv1_2)) == "TLSv1.2"
    assert default.minimum_version == ssl.TLSVersion.TLSv1_2
    with pytest.raises(ConfigError):
        BrokerConfig.from_properties({"ssl.enabled.protocols": "TLSv1.1"})


def test_required_client_auth_refuses_a_client_without_a_certificate(pki: dict[str, str]) -> None:
    server = server_context(BrokerConfig.from_properties({
        "ssl.keystore.location": pki["store"], "ssl.truststore.location": pki["ca"],
        "ssl.client.auth": "required"}), "SSL")
    assert server.verify_mode == ssl.CERT_REQUIRED
    assert handshake(server, trusting(pki)).startswith("failed")
    with_cert = trusting(pki)
    with_cert.load_cert_chain(pki["store"])
    assert handshake(server, with_cert) == "TLSv1.3"


@pytest.mark.parametrize(("props", "key", "reason"), [
    ({"listeners": "SSL://:0"}, "ssl.keystore.location", "needs a key store"),
    ({"listeners": "SSL://:0", "ssl.keystore.certificate.chain": "x"}, "ssl.keystore.key", "needs a key store"),
    ({"listeners": "SSL://:0", "ssl.keystore.location": "/nonexistent.pem"}, "ssl.keystore.location",
     "no such file"),
    ({"listeners": "SSL://:0", "listener.name.ssl.ssl.keystore.location": "/nonexistent.pem"},
     "listener.name.ssl.ssl.keystore.location", "no such file"),
    ({"listeners": "SSL://:0", "ssl.cipher.suites": "NO-SUCH-CIPHER"}, "ssl.cipher.suites", "no cipher"),
])
def test_bad_tls_settings_are_refused_with_the_key(pki: dict[str, str], props: dict[str, str], key: str,
                                                   reason: str) -> None:
    if "ssl.cipher.suites" in props:
        props = {**props, "ssl.keystore.location": pki["store"]}
    broker = BrokerConfig.from_properties(props)
    with pytest.raises(ConfigError) as info:
        server_contexts(broker, resolve_listeners(broker.values, host="127.0.0.1", port=0))
    assert info.value.key == key and reason in info.value.reason


def test_the_inter_broker_client_context_checks_peers_and_presents_the_key_store(pki: dict[str, str]) -> None:
    broker = BrokerConfig.from_properties({
        "listeners": "PLAINTEXT://:0,BROKER://:0", "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,BROKER:SSL",
        "inter.broker.listener.name": "BROKER", "ssl.keystore.location": pki["store"],
        "ssl.truststore.location": pki["ca"], "listener.name.broker.ssl.client.auth": "required"})
    listeners = resolve_listeners(broker.values, host="127.0.0.1", port=0)
    client = inter_broker_context(broker, listeners)
    assert client is not None and client.check_hostname and client.verify_mode == ssl.CERT_REQUIRED
    server = server_context(broker, "BROKER")
    assert handshake(server, client) == "TLSv1.3"  # mTLS between two brokers
    no_check = client_context(BrokerConfig.from_properties({
        "ssl.keystore.location": pki["store"], "ssl.truststore.location": pki["ca"],
        "ssl.endpoint.identification.algorithm": ""}), "BROKER")
    assert not no_check.check_hostname
    plain = BrokerConfig.from_properties({})
    assert inter_broker_context(plain, resolve_listeners(plain.values, host="127.0.0.1", port=0)) is None
