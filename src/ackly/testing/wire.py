"""A minimal blocking Kafka wire client for tests: send kio requests, read kio responses.

It speaks exactly what a test tells it to (any API, any version, raw bytes too), which is
what the bad-input tests need and what no real client will do.
"""

from __future__ import annotations

import io
import socket
import struct
from typing import Any

from kio.serial import entity_reader, entity_writer

from ackly.protocol.messages import header_version, is_flexible, response_type


class WireClient:
    def __init__(self, bootstrap: str, timeout_s: float = 10.0) -> None:
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout_s)
        self.correlation_id = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> WireClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def frame(self, request: Any, correlation_id: int | None = None,
              client_id: str = "ackly-test") -> bytes:
        """The size-prefixed frame for a kio request object."""
        api_key = int(request.__api_key__)
        version = int(request.__version__)
        if correlation_id is None:
            self.correlation_id += 1
            correlation_id = self.correlation_id
        cid = client_id.encode()
        header = struct.pack(">hhih", api_key, version, correlation_id, len(cid)) + cid
        if header_version(api_key, version) >= 2:
            header += b"\x00"
        body = io.BytesIO()
        entity_writer(type(request))(body, request)
        payload = header + body.getvalue()
        return struct.pack(">i", len(payload)) + payload

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_frame(self) -> bytes:
        size = struct.unpack(">i", self._read_exact(4))[0]
        return self._read_exact(size)

    def _read_exact(self, n: int) -> bytes:
        chunks = []
        while n:
            chunk = self.sock.recv(n)
            if not chunk:
                raise ConnectionError("connection closed by the broker")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def decode(self, api_key: int, version: int, frame: bytes) -> tuple[int, Any]:
        """(correlation id, kio response) from a response frame."""
        (correlation_id,) = struct.unpack_from(">i", frame, 0)
        offset = 4
        if is_flexible(api_key, version) and api_key != 18:
            offset += 1  # empty tagged fields of response header v1
        value: Any
        value, _ = entity_reader(response_type(api_key, version))(frame, offset)
        return correlation_id, value

    def request(self, request: Any) -> Any:
        self.send_raw(self.frame(request))
        correlation_id, value = self.decode(
            int(request.__api_key__), int(request.__version__), self.read_frame()
        )
        assert correlation_id == self.correlation_id
        return value
