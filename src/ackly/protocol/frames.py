"""Size-prefixed Kafka frames, decoded without I/O (in the manner of h11).

The shell asks `get_buffer()` where the next bytes should go, receives into it, reports how
many arrived with `buffer_updated(n)`, then takes whole frames from `next_frame()` until it
returns None. (`receive_data` does the same for bytes already in hand.) The only outcomes are
a frame, "need more data" (None) or FrameError, after which the connection must close: a peer
that sends a negative or oversized length cannot be resynchronised.

Memory: what a decoder holds grows with the bytes that arrived, never with a declared length
alone (a peer that sends only a 4-byte length of 100 MiB costs 4 bytes).
- Bytes are received into a scratch buffer that several decoders may share (one per server:
  `buffer_updated` takes everything out of it before returning, so it is free again before
  any other connection reads). Complete small frames are copied out of it once; an incomplete
  frame's bytes are kept in the decoder's own `pending` (at most `large_frame_bytes` + 4).
- A frame larger than `large_frame_bytes` gets a buffer of its own once its first body bytes
  are in hand, and the rest of it is received straight into that buffer (never copied when
  it completes). That buffer starts at `max(2 x bytes in hand, grow_min_bytes)` and doubles
  each time it fills, up to the declared size: its capacity never exceeds
  `max(2 x bytes received, grow_min_bytes)`. `growth_bytes()` says what the next
  `get_buffer()` will allocate, so the shell can ask its memory pool first.
- `held_bytes` is what this decoder holds for incomplete input, for that pool's accounting.
"""

from __future__ import annotations

import collections
import struct

from ackly.errors import AcklyError

_SIZE = struct.Struct(">i")

SMALL_BUFFER_BYTES = 256 * 1024
LARGE_FRAME_BYTES = 64 * 1024
GROW_MIN_BYTES = 64 * 1024
# What a growing buffer is extended with (calloc'd: its pages cost nothing until read).
_ZEROS = bytes(1024 * 1024)
_ZEROS_VIEW = memoryview(_ZEROS)


class FrameError(AcklyError):
    """The peer broke framing; close its connection."""


def new_scratch(size: int = SMALL_BUFFER_BYTES) -> bytearray:
    """A receive buffer to share between the decoders of one event loop."""
    return bytearray(size)


class FrameDecoder:
    def __init__(
        self,
        max_frame_bytes: int,
        *,
        scratch: bytearray | None = None,
        small_buffer_bytes: int = SMALL_BUFFER_BYTES,
        large_frame_bytes: int = LARGE_FRAME_BYTES,
        grow_min_bytes: int = GROW_MIN_BYTES,
    ) -> None:
        self._max_frame_bytes = max_frame_bytes
        self._limit_key = "socket.request.max.bytes"  # the config key named when a frame is refused
        self._large_frame_bytes = large_frame_bytes
        self._grow_min_bytes = grow_min_bytes
        # Shared scratch: valid only between get_buffer() and the buffer_updated() after it.
        self._scratch = scratch if scratch is not None else bytearray(small_buffer_bytes)
        assert len(self._scratch) > large_frame_bytes + 4, "a small frame must fit the scratch"
        self._pending = bytearray()  # an incomplete frame's first bytes (size prefix included)
        self._large: bytearray | None = None  # a large frame's body, growing as it arrives
        self._large_size = 0
        self._large_got = 0
        self._frames: collections.deque[bytes | memoryview] = collections.deque()
        self._error: FrameError | None = None

    def set_max_frame_bytes(self, max_frame_bytes: int, limit_key: str) -> None:
        """A new bound for the frames whose size prefix has not been read yet (a SASL listener
        bounds frames by sasl.server.max.receive.size until the client has authenticated)."""
        self._max_frame_bytes = max_frame_bytes
        self._limit_key = limit_key

    # --- receiving ------------------------------------------------------------------------

    def get_buffer(self) -> memoryview:
        """Where the next received bytes go (at least one byte of room).

        No view returned earlier may still be held: the buffer may move or grow here.
        """
        large = self._large
        if large is not None:
            if self._large_got == len(large):
                # Grow in place: realloc can move a large block without copying it (mremap),
                # where a new buffer would copy everything received so far.
                need = self.growth_bytes()
                while need:
                    step = min(need, len(_ZEROS))
                    large.extend(_ZEROS_VIEW[:step])
                    need -= step
            return memoryview(large)[self._large_got :]
        pending = len(self._pending)
        if pending:
            self._scratch[:pending] = self._pending
        return memoryview(self._scratch)[pending:]

    def buffer_updated(self, nbytes: int) -> None:
        """`nbytes` were written at the start of the last buffer from get_buffer()."""
        if self._large is not None:
            self._large_got += nbytes
            if self._large_got == self._large_size:
                # Read-only: the frame is handed on without a copy, and kio's decoder takes
                # only read-only buffers.
                self._frames.append(memoryview(self._large).toreadonly())
                self._large = None
            return
        end = len(self._pending) + nbytes
        self._pending.clear()
        self._parse(end)

    def _parse(self, end: int) -> None:
        """Take every complete frame out of scratch[:end]; keep the incomplete rest."""
        with memoryview(self._scratch) as view:
            start = 0
            while True:
                available = end - start
                if available < 4:
                    break
                (size,) = _SIZE.unpack_from(view, start)
                if size < 0:
                    self._error = FrameError(f"negative frame size {size}")
                    return
                if size > self._max_frame_bytes:
                    self._error = FrameError(
                        f"frame of {size} bytes exceeds {self._limit_key} {self._max_frame_bytes}"
                    )
                    return
                body_start = start + 4
                if available - 4 >= size:
                    self._frames.append(bytes(view[body_start : body_start + size]))
                    start = body_start + size
                    continue
                body_available = available - 4
                if size > self._large_frame_bytes and body_available > 0:
                    capacity = min(size, max(2 * body_available, self._grow_min_bytes))
                    large = bytearray(capacity)
                    large[:body_available] = view[body_start:end]
                    self._large = large
                    self._large_size = size
                    self._large_got = body_available
                    return
                break
            if start < end:
                self._pending[:] = view[start:end]

    def growth_bytes(self) -> int:
        """Bytes the next get_buffer() will allocate (0: it receives into what is held)."""
        large = self._large
        if large is None or self._large_got < len(large):
            return 0
        capacity = len(large)
        return min(self._large_size, max(2 * capacity, self._grow_min_bytes)) - capacity

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

    # --- frames out -----------------------------------------------------------------------

    def next_frame(self) -> bytes | memoryview | None:
        """The next complete frame (without its size prefix), or None until more data comes.

        A large frame comes as a read-only memoryview of its own buffer (no copy). After the
        frames that came before it, a framing error is raised as FrameError.
        """
        if self._frames:
            return self._frames.popleft()
        if self._error is not None:
            raise self._error
        return None

    @property
    def held_bytes(self) -> int:
        """Bytes allocated for input not yet handed out as a frame (the pool charges these)."""
        large = len(self._large) if self._large is not None else 0
        return len(self._pending) + large

    @property
    def frame_in_progress(self) -> bool:
        """Some bytes of a frame arrived and the frame is not complete."""
        return self._large is not None or bool(self._pending)

    @property
    def receiving_large(self) -> bool:
        """A large frame is being received into a buffer of its own."""
        return self._large is not None

    @property
    def buffered_bytes(self) -> int:
        """Bytes received and not yet handed out (complete frames waiting included)."""
        large = self._large_got if self._large is not None else 0
        waiting = sum(len(f) for f in self._frames)
        return len(self._pending) + large + waiting
