"""One client connection: frames in, answers out in request order, file ranges by sendfile.

Requests may be pipelined; each gets a slot in arrival order, and the writer sends slot
after slot, waiting for the head one to be answered, so answers never overtake each other
whatever order the broker completes them in. Reading pauses while `max_in_flight` answers
are pending, which bounds the memory one connection can hold. A framing or decoding error
closes this connection only.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ackly.broker.context import RequestContext
from ackly.errors import KafkaError
from ackly.protocol.frames import FrameDecoder, FrameError
from ackly.protocol.headers import parse_prefix

if TYPE_CHECKING:
    from ackly.server.app import BrokerServer

log = logging.getLogger("ackly.connection")

READ_CHUNK_BYTES = 1 << 20
# Ranges up to this size are read and written at once: a pread from the page cache costs
# less than a task switch plus a sendfile call.
INLINE_RANGE_BYTES = 64 * 1024
WRITE_BUFFER_HIGH_BYTES = 4 << 20


class _Slot:
    __slots__ = ("done", "pieces")

    def __init__(self) -> None:
        self.pieces: Sequence[Any] | None = None
        self.done = False


class Connection:
    def __init__(
        self, server: BrokerServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
        connection_id: int, max_in_flight: int = 64,
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.connection_id = connection_id
        peer = writer.get_extra_info("peername")
        self.client_host = str(peer[0]) if peer else ""
        self.decoder = FrameDecoder(server.node.config.socket_request_max_bytes)
        self.slots: collections.deque[_Slot] = collections.deque()
        self.max_in_flight = max_in_flight
        self._head_ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._closing = False
        self._writer_busy = False

    async def run(self) -> None:
        writer_task = asyncio.create_task(self._write_loop())
        try:
            await self._read_loop()
        except (FrameError, KafkaError) as exc:
            log.warning("closing connection %d from %s: %s", self.connection_id, self.client_host, exc)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:
            log.exception("closing connection %d after an internal error", self.connection_id)
        finally:
            self._closing = True
            self._head_ready.set()
            # Let answers already given reach the client before closing (e.g. a Produce
            # followed by a disconnect), but never wait on a long poll.
            try:
                await asyncio.wait_for(writer_task, timeout=0.5)
            except (TimeoutError, asyncio.CancelledError, ConnectionError):
                writer_task.cancel()
            self.writer.close()

    async def _read_loop(self) -> None:
        node = self.server.node
        while True:
            if len(self.slots) >= self.max_in_flight:
                self._room.clear()
                await self._room.wait()
            data = await self.reader.read(READ_CHUNK_BYTES)
            if not data:
                return
            self.decoder.receive_data(data)
            now_ms = self.server.now_ms()
            while (frame := self.decoder.next_frame()) is not None:
                header = parse_prefix(frame)
                slot = _Slot()
                self.slots.append(slot)
                ctx = RequestContext(
                    header=header, now_ms=now_ms,
                    sink=functools.partial(self._answer, slot),
                    connection_id=self.connection_id, client_host=self.client_host,
                )
                node.handle_frame(ctx, frame)
            self.server.after_event()

    def _answer(self, slot: _Slot, pieces: Sequence[Any] | None) -> None:
        slot.pieces = pieces
        slot.done = True
        if self.slots and self.slots[0] is slot:
            self._pump()

    def _pump(self) -> None:
        """Write every answered slot at the head of the queue, in order, right now.

        Bytes and small file ranges are written synchronously (no task switch between the
        answer and the socket, which is most of a small request's latency). A large file
        range, or a full transport buffer, hands the rest to the writer task, which sends
        with sendfile and drains; it calls _pump again when done.
        """
        if self._writer_busy:
            return
        transport = self.writer.transport
        while self.slots and self.slots[0].done:
            if transport.is_closing():
                return
            if transport.get_write_buffer_size() > WRITE_BUFFER_HIGH_BYTES:
                self._hand_to_writer()
                return
            slot = self.slots[0]
            if slot.pieces is not None and not self._write_inline(slot):
                self._hand_to_writer()
                return
            self.slots.popleft()
        if len(self.slots) < self.max_in_flight:
            self._room.set()

    def _write_inline(self, slot: _Slot) -> bool:
        """Write the slot now if it holds no large file range; False leaves it untouched."""
        assert slot.pieces is not None
        out = []
        for piece in slot.pieces:
            if isinstance(piece, (bytes, bytearray, memoryview)):
                out.append(piece)
            elif piece.size <= INLINE_RANGE_BYTES or not self._can_sendfile(piece):
                out.append(piece.file.read(piece.position, piece.size))
            else:
                return False
        self.writer.writelines(out)
        return True

    def _can_sendfile(self, piece: Any) -> bool:
        return self.server.use_sendfile and piece.file.fileno() is not None

    def _hand_to_writer(self) -> None:
        self._writer_busy = True
        self._head_ready.set()

    async def _write_loop(self) -> None:
        """Sends what _pump could not: large file ranges, and writes behind a full buffer."""
        loop = asyncio.get_running_loop()
        writer = self.writer
        while True:
            while not self._writer_busy:
                if self._closing:
                    return
                self._head_ready.clear()
                await self._head_ready.wait()
            await writer.drain()
            slot = self.slots[0]
            if slot.pieces is not None and not self._write_inline(slot):
                for piece in slot.pieces:
                    if isinstance(piece, (bytes, bytearray, memoryview)):
                        writer.write(piece)
                    elif self._can_sendfile(piece) and piece.size > INLINE_RANGE_BYTES:
                        await self._send_range(loop, piece)
                    else:
                        writer.write(piece.file.read(piece.position, piece.size))
            self.slots.popleft()
            self._writer_busy = False
            self._pump()
            if self._closing and not self.slots:
                return

    async def _send_range(self, loop: asyncio.AbstractEventLoop, piece: Any) -> None:
        """Send a segment byte range with sendfile (zero copy)."""
        fd = piece.file.fileno()
        await self.writer.drain()
        with open(fd, "rb", buffering=0, closefd=False) as f:
            sent = await loop.sendfile(self.writer.transport, f, piece.position, piece.size)
        if sent != piece.size:
            # The file shrank under us (truncation): the frame can no longer be completed.
            raise ConnectionError(f"sent {sent} of {piece.size} bytes of a segment range")
