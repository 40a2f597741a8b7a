"""A large fetch answer over TLS to a client that reads slowly: the broker writes the file
range in pieces, waits for the TLS transport to drain between them, and every byte arrives
in order (checked batch by batch with CRC-32C)."""

from __future__ import annotations

import socket
import ssl
import struct
import time
from pathlib import Path

import pytest

from ackly.testing.inprocess import InProcessBroker
from tests.clients.clientkit import Rec, ck_produce, fetch_v4_body, parse_batches, parse_fetch_v4_response
from tests.clients.tlskit import make_tls_files

pytestmark = [pytest.mark.slow, pytest.mark.clients]

RECORDS = 300
VALUE_BYTES = 20_000


def wait_until(condition, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


def read_exactly(sock: ssl.SSLSocket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(min(n, 65536))
        assert chunk, "the broker closed the connection mid-answer"
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def test_a_slow_reader_gets_a_megabytes_fetch_whole(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "tls")
    broker = InProcessBroker(str(tmp_path / "d"), {
        "listeners": "PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0", **tls.broker_configs(),
    }).start()
    try:
        server = broker.server
        assert server is not None
        now = int(time.time() * 1000)
        records = [Rec(partition=0, key=None, value=bytes([i % 251]) * VALUE_BYTES, headers=(), timestamp_ms=now)
                   for i in range(RECORDS)]
        ck_produce(f"127.0.0.1:{server.ports['PLAINTEXT']}", "big", records, acks="all")

        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the broker's sends back up
        raw.settimeout(30)
        raw.connect(("127.0.0.1", server.ports["SSL"]))
        context = ssl.create_default_context(cafile=tls.ca)
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            body = fetch_v4_body("big", 0, 0, max_bytes=32 << 20)
            header = struct.pack(">hhih", 1, 4, 42, 1) + b"t"
            sock.sendall(struct.pack(">i", len(header) + len(body)) + header + body)

            def waiting_for_room() -> bool:
                return broker.call(lambda: any(c._room is not None for c in server.connections))

            wait_until(waiting_for_room, 15, "the broker's writer to wait for the transport to drain")
            (size,) = struct.unpack(">i", read_exactly(sock, 4))
            payload = read_exactly(sock, size)
        (correlation_id,) = struct.unpack_from(">i", payload, 0)
        assert correlation_id == 42
        part = parse_fetch_v4_response(payload[4:])[("big", 0)]
        assert part.error_code == 0 and len(part.records) > RECORDS * VALUE_BYTES
        batches = parse_batches(part.records)
        assert all(b.crc_ok for b in batches)
        assert sum(b.records_count for b in batches) == RECORDS
        assert sum(b.size for b in batches) == len(part.records)
    finally:
        broker.stop()
