"""A TLS listener under the connection limits: a connection is counted before its handshake
(as Kafka's Acceptor applies its quotas), a handshake that never finishes is dropped and its
slot freed, and TLS clients are served through the wire client over the SSL port."""

from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path

import pytest
from kio.schema.errors import ErrorCode

from ackly.testing.inprocess import InProcessBroker
from tests.clients.tlskit import make_tls_files

pytestmark = pytest.mark.slow


def wait_until(condition, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


def tls_api_versions(port: int, ca: str) -> int:
    """One ApiVersions v0 over TLS; its error code."""
    context = ssl.create_default_context(cafile=ca)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        sock.sendall(b"\x00\x00\x00\x0a\x00\x12\x00\x00\x00\x00\x00\x07\x00\x00")  # key 18 v0, id 7
        header = sock.recv(4)
        size = int.from_bytes(header, "big")
        body = b""
        while len(body) < size:
            chunk = sock.recv(size - len(body))
            assert chunk, "closed mid-answer"
            body += chunk
        assert int.from_bytes(body[:4], "big") == 7
        return int.from_bytes(body[4:6], "big", signed=True)


def test_a_silent_tls_connection_holds_a_slot_until_its_handshake_times_out(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "tls")
    broker = InProcessBroker(str(tmp_path / "d"), {
        "listeners": "PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0", "max.connections": "2",
        **tls.broker_configs(),
    }).start()
    try:
        server = broker.server
        assert server is not None
        server.tls_handshake_timeout_s = 1.0
        port = server.ports["SSL"]
        assert tls_api_versions(port, tls.ca) == ErrorCode.none
        wait_until(lambda: broker.call(lambda: server.limits.open_connections) == 0, 10, "the close")
        # Two connections that never start their handshake take both slots ...
        silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        wait_until(lambda: broker.call(lambda: server.limits.open_connections) == 2, 10, "both admitted")
        # ... so a third is refused before any handshake work is done for it.
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            tls_api_versions(port, tls.ca)
        assert broker.call(lambda: server.limits.refused["max.connections"]) >= 1
        # The handshake deadline frees them, and TLS clients are served again.
        wait_until(lambda: broker.call(lambda: server.limits.open_connections) == 0, 10,
                   "the silent connections to be dropped")
        for sock in silent:
            sock.settimeout(5)
            assert sock.recv(1) == b""
            sock.close()
        assert tls_api_versions(port, tls.ca) == ErrorCode.none
    finally:
        broker.stop()


def test_a_plaintext_client_on_the_tls_port_is_dropped_and_released(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "tls")
    broker = InProcessBroker(str(tmp_path / "d"), {
        "listeners": "PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0", **tls.broker_configs(),
    }).start()
    try:
        server = broker.server
        assert server is not None
        port = server.ports["SSL"]
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            # A Kafka request's bytes are no TLS ClientHello: a TLS alert (record type 21) or
            # a close comes back, never a Kafka answer.
            sock.sendall(b"\x00\x00\x00\x0a\x00\x12\x00\x00\x00\x00\x00\x07\x00\x00")
            data = sock.recv(1024)
            assert data == b"" or data[0] == 21, data
        wait_until(lambda: broker.call(lambda: server.limits.open_connections) == 0, 10,
                   "the failed handshake to release its slot")
        assert tls_api_versions(port, tls.ca) == ErrorCode.none
    finally:
        broker.stop()


def test_the_first_request_deadline_also_ends_a_handshake_that_never_comes(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "tls")
    broker = InProcessBroker(str(tmp_path / "d"), {
        "listeners": "PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0",
        "connections.first.request.timeout.ms": "1000", **tls.broker_configs(),
    }).start()
    try:
        server = broker.server
        assert server is not None
        server.tls_handshake_timeout_s = 60.0  # the sweep, not the handshake deadline, ends it
        with socket.create_connection(("127.0.0.1", server.ports["SSL"])) as silent:
            wait_until(lambda: broker.call(lambda: server.limits.open_connections) == 1, 10, "admitted")
            silent.settimeout(10)
            assert silent.recv(1) == b""
        wait_until(lambda: broker.call(lambda: server.limits.open_connections) == 0, 10, "the slot freed")
        assert broker.call(lambda: server.expired["connections.first.request.timeout.ms"]) == 1
        assert tls_api_versions(server.ports["SSL"], tls.ca) == ErrorCode.none
    finally:
        broker.stop()
