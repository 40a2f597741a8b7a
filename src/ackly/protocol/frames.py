"""Size-prefixed Kafka frames, decoded without I/O (in the manner of h11).

The shell feeds bytes in with `receive_data`; `next_frame` hands out whole frames. The only
outcomes are a frame, "need more data" (None) or FrameError, after which the connection must
close: a peer that sends a negative or oversized length cannot be resynchronised.
The buffer is bounded by the largest allowed frame plus what one read returns.
"""

from __future__ import annotations

import struct

from ackly.errors import AcklyError

_SIZE = struct.Struct(">i")


class FrameError(AcklyError):
    """The peer broke framing; close its connection."""


class FrameDecoder:
    def __init__(self, max_frame_bytes: int) -> None:
        self._max_frame_bytes = max_frame_bytes
        self._buf = bytearray()
        self._pos = 0

    def receive_data(self, data: bytes) -> None:
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        self._buf += data

    def next_frame(self) -> bytes | None:
        """The next complete frame (without its size prefix), or None until more data comes."""
        available = len(self._buf) - self._pos
        if available < 4:
            return None
        (size,) = _SIZE.unpack_from(self._buf, self._pos)
        if size < 0:
            raise FrameError(f"negative frame size {size}")
        if size > self._max_frame_bytes:
            raise FrameError(
                f"frame of {size} bytes exceeds socket.request.max.bytes {self._max_frame_bytes}"
            )
        if available < 4 + size:
            return None
        start = self._pos + 4
        with memoryview(self._buf) as view:
            frame = bytes(view[start : start + size])  # one copy, not two
        self._pos = start + size
        if self._pos > 1 << 20 and self._pos * 2 > len(self._buf):
            # Compact so a long pipelined stream does not keep every byte it ever read.
            del self._buf[: self._pos]
            self._pos = 0
        return frame

    @property
    def buffered_bytes(self) -> int:
        return len(self._buf) - self._pos
