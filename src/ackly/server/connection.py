"""One client connection: frames in, answers out in request order, file ranges by sendfile.

Reading is a BufferedProtocol over a FrameDecoder, so bytes go from the socket straight into
their final buffer (a large Produce is received into a buffer of its own, never copied).

Requests may be pipelined; each gets a slot in arrival order, and answers leave slot after
slot, so they never overtake each other whatever order the broker completes them in. An
answer at the head is written at once (no task switch); only large file ranges (sendfile)
and writes behind a full transport buffer go through the writer task. A framing or decoding
error closes this connection only.

Resources (the server owns the limits; a connection reports what it holds):
- Memory: the bytes this connection holds for an incomplete frame (the decoder's buffers,
  plus the next growth of a large frame's buffer, reserved before it is allocated) and each
  request until its answer is written are charged to the server's MemoryPool
  (`queued.max.request.bytes`). While the pool is exhausted reading is paused.
- Reading also pauses while `max_in_flight` answers are pending, which bounds what one
  connection can pipeline. Each reason to pause is a bit of `_paused`; reading resumes when
  none is left (a quota's throttle would be one more bit).
- `activity` changes on every read and write and `established` turns on with the first
  complete request: the server's sweep closes idle connections and those that never send a
  first request from them. (Where a listener authenticates, `established` is the place to
  wait for the end of authentication instead.)
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ackly.broker.context import RequestContext
from ackly.errors import KafkaError
from ackly.protocol.frames import FrameDecoder, FrameError
from ackly.protocol.headers import parse_prefix

if TYPE_CHECKING:
    from ackly.server.app import BrokerServer

log = logging.getLogger("ackly.connection")

# Ranges up to this size are read and written at once: a pread from the page cache costs
# less than a task switch plus a sendfile call.
INLINE_RANGE_BYTES = 64 * 1024

# Reasons reading is paused (bits of Connection._paused).
PAUSE_IN_FLIGHT = 1  # max_in_flight answers pending
PAUSE_MEMORY = 2  # the request memory pool is exhausted


class _Slot:
    __slots__ = ("api_key", "charge_bytes", "done", "pieces", "started_s")

    def __init__(self, charge_bytes: int, api_key: int) -> None:
        self.pieces: Sequence[Any] | None = None
        self.done = False
        self.charge_bytes = charge_bytes  # the request's bytes, charged to the pool until written
        self.api_key = api_key
        self.started_s = time.perf_counter()  # for the request's total time (server/metrics.py)


class Connection(asyncio.BufferedProtocol):
    def __init__(self, server: BrokerServer, connection_id: int, max_in_flight: int = 64) -> None:
        self.server = server
        self.connection_id = connection_id
        self.max_in_flight = max_in_flight
        self.client_host = ""
        self.transport: asyncio.Transport | None = None
        self.slots: collections.deque[_Slot] = collections.deque()
        self.decoder = FrameDecoder(
            server.node.config.socket_request_max_bytes, scratch=server.receive_scratch
        )
        self._paused = 0  # PAUSE_* bits; reading is paused while any is set
        self._held_bytes = 0  # charged to the pool for incomplete input
        self._receiving_large = False
        self.admitted = False  # counted by the server's connection limits
        self.established = False  # a first complete request arrived
        self.activity = 0  # changes on every read and write (the idle sweep compares it)
        self.seen_activity = 0
        self.accepted_s = 0.0  # loop time; set by the server
        self.last_active_s = 0.0
        self._writing_paused = False
        self._writer_busy = False
        self._writer_task: asyncio.Task[None] | None = None
        self._closed = False

    # --- asyncio protocol callbacks -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.client_host = str(peer[0]) if peer else ""
        if not self.server.admit(self):
            self._closed = True
            transport.close()  # refused at accept: nothing is read from it
            return
        self.admitted = True
        if not self.server.pool.may_read(self):
            self._set_paused(PAUSE_MEMORY, True)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self.admitted:
            self.admitted = False
            released = self._held_bytes + sum(slot.charge_bytes for slot in self.slots)
            self._held_bytes = 0
            self.slots.clear()
            if self._receiving_large:
                self._receiving_large = False
                self.server.set_receiving(self, False)  # the next large frame may go on
            self.server.pool_adjust(-released)
            self.server.release(self)
        if self._writer_task is not None:
            self._writer_task.cancel()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.decoder.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self.decoder.buffer_updated(nbytes)
        self.activity += 1
        self._account_held()
        try:
            while not self._closed and (frame := self.decoder.next_frame()) is not None:
                self._handle(frame)
        except (FrameError, KafkaError) as exc:
            log.warning("closing connection %d from %s: %s", self.connection_id, self.client_host, exc)
            self._close()
        except Exception:
            log.exception("closing connection %d after an internal error", self.connection_id)
            self._close()
        if len(self.slots) >= self.max_in_flight:
            self._set_paused(PAUSE_IN_FLIGHT, True)
        self.server.after_event()

    def eof_received(self) -> bool | None:
        return False  # close; answers already written still go out first

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._writer_busy and self._writer_task is None:
            self._start_writer()
        else:
            self._pump()

    # --- resources ------------------------------------------------------------------------

    def _set_paused(self, reason: int, on: bool) -> None:
        before = self._paused
        self._paused = before | reason if on else before & ~reason
        if self._closed or self.transport is None:
            return
        if before and not self._paused:
            self.transport.resume_reading()
        elif self._paused and not before:
            self.transport.pause_reading()

    def set_memory_paused(self, on: bool) -> None:
        """Called by the server when the pool's state changes."""
        if bool(self._paused & PAUSE_MEMORY) != on:
            self._set_paused(PAUSE_MEMORY, on)

    def _account_held(self) -> None:
        """Charge the pool for what the decoder holds now and will allocate before the next
        read (a large frame's next growth is reserved here, before get_buffer allocates it)."""
        decoder = self.decoder
        held = decoder.held_bytes + decoder.growth_bytes()
        delta = held - self._held_bytes
        if delta:
            self._held_bytes = held
            self.server.pool_adjust(delta)
        receiving = decoder.receiving_large
        if receiving != self._receiving_large:
            self._receiving_large = receiving
            self.server.set_receiving(self, receiving)

    # --- input ----------------------------------------------------------------------------

    def _handle(self, frame: bytes | memoryview) -> None:
        header = parse_prefix(frame)
        self.established = True
        slot = _Slot(len(frame), header.api_key)
        self.server.pool_adjust(slot.charge_bytes)
        self.slots.append(slot)
        ctx = RequestContext(
            header=header, now_ms=self.server.now_ms(), sink=functools.partial(self._answer, slot),
            connection_id=self.connection_id, client_host=self.client_host,
            on_response=self.server.request_metrics.count_errors,
        )
        self.server.node.handle_frame(ctx, frame)

    # --- output ---------------------------------------------------------------------------

    def _answer(self, slot: _Slot, pieces: Sequence[Any] | None) -> None:
        slot.pieces = pieces
        slot.done = True
        self.server.request_metrics.observe(slot.api_key, time.perf_counter() - slot.started_s)
        if self.slots and self.slots[0] is slot:
            self._pump()

    def _pump(self) -> None:
        """Write every answered slot at the head of the queue, in order, right now.

        Bytes and small file ranges are written synchronously (no task switch between the
        answer and the socket, which is most of a small request's latency). A large file
        range, or a paused transport, hands the rest to the writer task.
        """
        if self._writer_busy or self._closed:
            return
        while self.slots and self.slots[0].done:
            if self._writing_paused:
                self._writer_busy = True  # resume_writing restarts the pump
                return
            slot = self.slots[0]
            if slot.pieces is not None and not self._write_inline(slot):
                self._writer_busy = True
                self._start_writer()
                return
            self.slots.popleft()
            self.server.pool_adjust(-slot.charge_bytes)
        if self._paused & PAUSE_IN_FLIGHT and len(self.slots) < self.max_in_flight:
            self._set_paused(PAUSE_IN_FLIGHT, False)

    def _write_inline(self, slot: _Slot) -> bool:
        """Write the slot now if it holds no large file range; False leaves it untouched."""
        assert slot.pieces is not None and self.transport is not None
        out = []
        for piece in slot.pieces:
            if isinstance(piece, (bytes, bytearray, memoryview)):
                out.append(piece)
            elif piece.size <= INLINE_RANGE_BYTES or not self._can_sendfile(piece):
                out.append(piece.file.read(piece.position, piece.size))
            else:
                return False
        self.transport.writelines(out)
        self.activity += 1
        return True

    def _can_sendfile(self, piece: Any) -> bool:
        return self.server.use_sendfile and piece.file.fileno() is not None

    def _start_writer(self) -> None:
        if self._writer_task is None and not self._closed:
            self._writer_task = asyncio.get_running_loop().create_task(self._write_head())

    async def _write_head(self) -> None:
        """Send the head slot when it holds a large file range: sendfile (zero copy)."""
        loop = asyncio.get_running_loop()
        transport = self.transport
        assert transport is not None
        try:
            slot = self.slots[0]
            assert slot.pieces is not None
            for piece in slot.pieces:
                if isinstance(piece, (bytes, bytearray, memoryview)):
                    transport.write(piece)
                elif self._can_sendfile(piece) and piece.size > INLINE_RANGE_BYTES:
                    fd = piece.file.fileno()
                    with open(fd, "rb", buffering=0, closefd=False) as f:
                        sent = await loop.sendfile(transport, f, piece.position, piece.size)
                    if sent != piece.size:
                        # The file shrank under us (truncation): the frame cannot be completed.
                        raise ConnectionError(f"sent {sent} of {piece.size} bytes of a range")
                else:
                    transport.write(piece.file.read(piece.position, piece.size))
                self.activity += 1
            slot = self.slots.popleft()
            self.server.pool_adjust(-slot.charge_bytes)
        except (ConnectionError, OSError, RuntimeError) as exc:
            log.debug("connection %d: send failed: %s", self.connection_id, exc)
            self._close()
            return
        finally:
            self._writer_task = None
        self._writer_busy = False
        self._pump()

    def _close(self) -> None:
        if not self._closed and self.transport is not None:
            self._closed = True
            self.transport.close()  # written answers are flushed first

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        """Close once the bytes already handed to the transport are sent (answers given while
        the broker stops, e.g. KAFKA_STORAGE_ERROR, still reach the client)."""
        if self.transport is not None:
            self.transport.close()
