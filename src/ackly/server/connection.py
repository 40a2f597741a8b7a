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
            self._head_ready.set()

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        writer = self.writer
        while True:
            while not (self.slots and self.slots[0].done):
                if self._closing:
                    return
                self._head_ready.clear()
                await self._head_ready.wait()
            slot = self.slots.popleft()
            if self.slots and self.slots[0].done:
                self._head_ready.set()
            if len(self.slots) < self.max_in_flight:
                self._room.set()
            if slot.pieces is None:
                continue  # acks=0: no answer
            for piece in slot.pieces:
                if isinstance(piece, (bytes, bytearray, memoryview)):
                    writer.write(piece)
                else:
                    await self._send_range(loop, piece)
            if writer.transport.get_write_buffer_size() > (1 << 20):
                await writer.drain()

    async def _send_range(self, loop: asyncio.AbstractEventLoop, piece: Any) -> None:
        """Send a segment byte range: zero copy with sendfile where the file allows it."""
        fd = piece.file.fileno()
        if fd is None or not self.server.use_sendfile:
            self.writer.write(piece.file.read(piece.position, piece.size))
            return
        await self.writer.drain()
        with open(fd, "rb", buffering=0, closefd=False) as f:
            sent = await loop.sendfile(self.writer.transport, f, piece.position, piece.size)
        if sent != piece.size:
            # The file shrank under us (truncation): the frame can no longer be completed.
            raise ConnectionError(f"sent {sent} of {piece.size} bytes of a segment range")
