"""Size-prefixed Kafka frames, decoded without I/O (in the manner of h11).

The shell asks `get_buffer()` where the next bytes should go, receives into it, reports how
many arrived with `buffer_updated(n)`, then takes whole frames from `next_frame()` until it
returns None. (`receive_data` does the same for bytes already in hand.) The only outcomes are
a frame, "need more data" (None) or FrameError, after which the connection must close: a peer
that sends a negative or oversized length cannot be resynchronised.

Copies: small frames are received into one reusable buffer and copied out once. A frame
larger than `large_frame_bytes` (a big Produce) gets a buffer of its own as soon as its size
is known, and the rest of it is received straight into that buffer: it is never copied.
Memory: the reusable buffer stays at its initial size as long as frames are taken as they
complete; a large frame's buffer is bounded by `max_frame_bytes`, checked before allocating.
"""

from __future__ import annotations

import struct

from ackly.errors import AcklyError

_SIZE = struct.Struct(">i")

SMALL_BUFFER_BYTES = 256 * 1024
LARGE_FRAME_BYTES = 64 * 1024
MIN_FREE_BYTES = 16 * 1024


class FrameError(AcklyError):
    """The peer broke framing; close its connection."""


class FrameDecoder:
    def __init__(
        self,
        max_frame_bytes: int,
        *,
        small_buffer_bytes: int = SMALL_BUFFER_BYTES,
        large_frame_bytes: int = LARGE_FRAME_BYTES,
    ) -> None:
        self._max_frame_bytes = max_frame_bytes
        self._large_frame_bytes = large_frame_bytes
        self._buf = bytearray(small_buffer_bytes)
        self._start = 0  # unconsumed input is _buf[_start:_end]
        self._end = 0
        self._large: bytearray | None = None
        self._large_got = 0

    def get_buffer(self) -> memoryview:
        """Where the next received bytes go (at least one byte of room).

        No view returned earlier may still be held: the buffer may move or grow here.
        """
        if self._large is not None and self._large_got < len(self._large):
            return memoryview(self._large)[self._large_got :]
        free = len(self._buf) - self._end
        if free < MIN_FREE_BYTES:
            remaining = self._end - self._start
            self._buf[:remaining] = self._buf[self._start : self._end]
            self._start, self._end = 0, remaining
            if len(self._buf) - self._end < MIN_FREE_BYTES:
                # Only when complete frames are left untaken (receive_data without next_frame).
                self._buf.extend(bytes(MIN_FREE_BYTES))
        return memoryview(self._buf)[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        """`nbytes` were written at the start of the last buffer from get_buffer()."""
        if self._large is not None and self._large_got < len(self._large):
            self._large_got += nbytes
        else:
            self._end += nbytes

    def receive_data(self, data: bytes) -> None:
        """Copy bytes in (for callers that already hold them, such as tests)."""
        view = memoryview(data)
        while view:
            buf = self.get_buffer()
            n = min(len(buf), len(view))
            buf[:n] = view[:n]
            del buf
            self.buffer_updated(n)
            view = view[n:]

    def next_frame(self) -> bytes | memoryview | None:
        """The next complete frame (without its size prefix), or None until more data comes.

        A large frame comes as a read-only memoryview of its own buffer (no copy).
        """
        if self._large is not None:
            if self._large_got < len(self._large):
                return None
            large = self._large
            self._large = None
            # Read-only: the frame is handed on without a copy, and kio's decoder takes
            # only read-only buffers.
            return memoryview(large).toreadonly()
        available = self._end - self._start
        if available < 4:
            return None
        (size,) = _SIZE.unpack_from(self._buf, self._start)
        if size < 0:
            raise FrameError(f"negative frame size {size}")
        if size > self._max_frame_bytes:
            raise FrameError(
                f"frame of {size} bytes exceeds socket.request.max.bytes {self._max_frame_bytes}"
            )
        body_start = self._start + 4
        body_available = available - 4
        if body_available >= size:
            with memoryview(self._buf) as view:
                frame = bytes(view[body_start : body_start + size])
            self._start = body_start + size
            if self._start == self._end:
                self._start = self._end = 0
            return frame
        if size > self._large_frame_bytes:
            large = bytearray(size)
            large[:body_available] = self._buf[body_start : self._end]
            self._large = large
            self._large_got = body_available
            self._start = self._end = 0
        return None

    @property
    def buffered_bytes(self) -> int:
        large = self._large_got if self._large is not None else 0
        return self._end - self._start + large
