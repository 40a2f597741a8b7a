"""One client connection: frames in, answers out in request order, file ranges by sendfile.

Reading is a BufferedProtocol over a FrameDecoder, so bytes go from the socket straight into
their final buffer (a large Produce is received into a buffer of its own, never copied).

Requests may be pipelined; each gets a slot in arrival order, and answers leave slot after
slot, so they never overtake each other whatever order the broker completes them in. An
answer at the head is written at once (no task switch); only large file ranges (sendfile)
and writes behind a full transport buffer go through the writer task. On a TLS listener
there is no sendfile (the bytes must be encrypted): file ranges are read and written
through the TLS transport. A framing or decoding
error closes this connection only.

Resources (the server owns the limits; a connection reports what it holds):
- Memory: the bytes this connection holds for an incomplete frame (the decoder's buffers,
  plus the next growth of a large frame's buffer, reserved before it is allocated) and each
  request until its answer is written are charged to the server's MemoryPool
  (`queued.max.request.bytes`). While the pool is exhausted reading is paused.
- Reading also pauses while `max_in_flight` answers are pending, which bounds what one
  connection can pipeline. Each reason to pause is a bit of `_paused`; reading resumes when
  none is left.
- Client quotas (KIP-219): before the handler runs, the context gets the request_percentage
  throttle the client is under (every answer carries it in throttle_time_ms; Produce and
  Fetch raise it to their byte-rate throttle). A request that comes out throttled (its
  context's throttle_time_ms, or the request_percentage throttle of its own handler time,
  measured here around the handler and recorded in the node's ClientQuotas) stops the reading of further
  requests (PAUSE_THROTTLE; frames already received wait in the decoder) until its answer is
  written and then for the throttle time, as Kafka mutes the channel. Kafka reads one request
  of a connection at a time, so a throttled client cannot have more requests handled behind
  the throttled one; here pipelined requests read before the throttle was known still are.
- `activity` changes on every read and write and `established` turns on with the first
  complete request: the server's sweep closes idle connections and those that never send a
  first request from them. On a SASL listener `established` waits for the end of
  authentication instead, so the same deadline bounds an exchange that never finishes.

SASL (broker/sasl.py): on a SASL listener the connection holds a SaslSession, handed to each
request's context; the node's dispatcher admits only what the session's state allows (a
refusal closes the connection) and the SASL handlers advance it. Until it has authenticated,
frames are bounded by `sasl.server.max.receive.size`; a failed exchange closes the
connection once its answer is written. After SaslHandshake v0, the next frames are bare SASL
tokens (Kafka before KIP-152): they go to the session here and the challenges come back the
same way, size-prefixed, without a Kafka header.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import struct
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ackly.broker.context import RequestContext
from ackly.broker.sasl import SaslSession, SaslState
from ackly.errors import ErrorCode, KafkaError
from ackly.listeners import Listener
from ackly.protocol.frames import FrameDecoder, FrameError
from ackly.protocol.headers import parse_prefix
from ackly.ssl_principal import ANONYMOUS, principal_of

if TYPE_CHECKING:
    from ackly.server.app import BrokerServer

log = logging.getLogger("ackly.connection")

# Ranges up to this size are read and written at once: a pread from the page cache costs
# less than a task switch plus a sendfile call.
INLINE_RANGE_BYTES = 64 * 1024
# Over TLS a larger range is read and written in pieces of this size, each after the
# transport has room: a fetch answer of tens of MB is never held (or encrypted) in one
# piece, and the buffers stay small and warm.
TLS_RANGE_PIECE_BYTES = 256 * 1024

# Reasons reading is paused (bits of Connection._paused).
PAUSE_IN_FLIGHT = 1  # max_in_flight answers pending
PAUSE_MEMORY = 2  # the request memory pool is exhausted
PAUSE_HANDSHAKE = 4  # a TLS handshake is under way (the raw transport is not ours to resume)
PAUSE_THROTTLE = 8  # a client quota's throttle time is running (KIP-219)


class ShortRangeError(Exception):
    """A file range gave fewer bytes than its size (the file was truncated underneath)."""

    def __init__(self, got: int, size: int) -> None:
        super().__init__(f"a file range gave {got} of {size} bytes")
        self.got = got
        self.size = size


class _Slot:
    __slots__ = ("api_key", "charge_bytes", "close_after", "ctx", "done", "pieces", "request_throttle_ms",
                 "started_s", "throttled")

    def __init__(self, charge_bytes: int, api_key: int = -1) -> None:
        self.ctx: RequestContext | None = None
        self.request_throttle_ms = 0  # request_percentage's throttle of the handler's time
        self.throttled = False  # holds reading back until it is written (then its throttle runs)
        self.pieces: Sequence[Any] | None = None
        self.done = False
        self.charge_bytes = charge_bytes  # the request's bytes, charged to the pool until written
        self.close_after = False  # close the connection once this answer is written
        self.api_key = api_key  # -1: a bare SASL token (no request header)
        self.started_s = time.perf_counter()  # for the request's total time (server/metrics.py)


class Connection(asyncio.BufferedProtocol):
    def __init__(self, server: BrokerServer, connection_id: int, listener: Listener | None = None,
                 max_in_flight: int = 64) -> None:
        self.server = server
        self.connection_id = connection_id
        # The listener this connection was accepted on (None: one made outside a listener).
        self.listener = listener
        self.tls = listener is not None and listener.uses_tls
        self.max_in_flight = max_in_flight
        self.client_host = ""
        # Who the client is: its certificate's subject (mTLS) or ANONYMOUS; authentication
        # (SASL) sets it once it has succeeded.
        self.principal = ANONYMOUS
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
        self._handshake: asyncio.Task[None] | None = None
        self._room: asyncio.Future[None] | None = None  # the writer task waits for room
        self._closed = False
        self._throttle_end_s = 0.0  # loop time the current throttle ends
        self._throttle_timer: asyncio.TimerHandle | None = None
        # On a SASL listener (SASL_PLAINTEXT, SASL_SSL) the client must authenticate first;
        # its SASL principal, not a TLS certificate's, is the connection's principal (as Kafka).
        self.sasl: SaslSession | None = None
        if listener is not None and listener.uses_sasl:
            self.sasl = server.new_sasl_session(listener)
        sasl = self.sasl
        if sasl is not None:
            self.decoder.set_max_frame_bytes(server.node.config.sasl_server_max_receive_size,
                                             "sasl.server.max.receive.size")

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
        if self.tls:
            # Admitted before the handshake, as Kafka's Acceptor applies its connection quotas
            # before the SSL handshake: a flood of handshakes counts against the limits.
            transport.pause_reading()
            self._paused |= PAUSE_HANDSHAKE
            self._handshake = asyncio.get_running_loop().create_task(self._start_tls(transport))
            return
        if not self.server.pool.may_read(self):
            self._set_paused(PAUSE_MEMORY, True)

    async def _start_tls(self, raw: asyncio.Transport) -> None:
        """The TLS handshake on an admitted connection; then reading starts."""
        assert self.listener is not None
        loop = asyncio.get_running_loop()
        try:
            transport = await loop.start_tls(
                raw, self, self.server.tls_contexts[self.listener.name], server_side=True,
                ssl_handshake_timeout=self.server.tls_handshake_timeout_s,
            )
        except (OSError, TimeoutError) as exc:
            log.debug("connection %d from %s: TLS handshake failed: %r", self.connection_id,
                      self.client_host, exc)
            raw.abort()
            self.connection_lost(None)  # the raw transport no longer reports to this protocol
            return
        except asyncio.CancelledError:  # abort() during the handshake
            raw.abort()
            self.connection_lost(None)
            raise
        finally:
            self._handshake = None
        if transport is None or self._closed:
            if transport is not None:
                transport.abort()
            return
        self.transport = transport
        if not self._take_certificate(transport):
            self._close()
            return
        if not self.server.pool.may_read(self):
            self._paused |= PAUSE_MEMORY
        self._paused &= ~PAUSE_HANDSHAKE
        if self._paused:
            transport.pause_reading()
        if self.decoder.buffered_bytes:
            self._take_frames()

    def _take_certificate(self, transport: asyncio.Transport) -> bool:
        """The principal of a TLS client (called once the handshake is done): `User:` and its
        certificate's subject mapped by ssl.principal.mapping.rules, or ANONYMOUS without a
        certificate. False (refuse the connection) if no mapping rule applies or the
        certificate cannot be read, as Kafka fails such a client's authentication."""
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None or (self.listener is not None and self.listener.uses_sasl):
            return True  # on SASL_SSL the principal is the SASL one (Kafka's SaslServerAuthenticator)
        der = ssl_object.getpeercert(binary_form=True)
        assert self.listener is not None
        try:
            self.principal = principal_of(der, self.server.mapping_rules[self.listener.name])
        except ValueError as exc:
            log.warning("refusing connection %d from %s on listener %s: %s", self.connection_id,
                        self.client_host, self.listener.name, exc)
            return False
        if der is not None:
            log.info("connection %d from %s on listener %s: principal %s", self.connection_id,
                     self.client_host, self.listener.name, self.principal)
        return True

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
        if self._throttle_timer is not None:
            self._throttle_timer.cancel()
            self._throttle_timer = None

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.decoder.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self.decoder.buffer_updated(nbytes)
        self.activity += 1
        self._account_held()
        if self._paused & PAUSE_HANDSHAKE:
            # A first request that came with the end of the TLS handshake, before start_tls
            # handed this protocol its TLS transport: its frames wait in the decoder until
            # then (_start_tls), so that no answer is written to the raw socket.
            return
        self._take_frames()

    def _take_frames(self) -> None:
        self._handle_frames()
        self.server.after_event()

    def _handle_frames(self) -> None:
        """Handle the complete frames the decoder holds, unless a throttle holds them back."""
        try:
            while (not self._closed and not self._paused & PAUSE_THROTTLE
                   and (frame := self.decoder.next_frame()) is not None):
                self._handle(frame)
        except (FrameError, KafkaError) as exc:
            log.warning("closing connection %d from %s: %s", self.connection_id, self.client_host, exc)
            self._close()
        except Exception:
            log.exception("closing connection %d after an internal error", self.connection_id)
            self._close()
        if len(self.slots) >= self.max_in_flight:
            self._set_paused(PAUSE_IN_FLIGHT, True)

    def eof_received(self) -> bool | None:
        return False  # close; answers already written still go out first

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._room is not None:
            if not self._room.done():
                self._room.set_result(None)  # the writer task goes on with its range
            self._room = None
            return
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

    def _throttle(self, throttle_ms: int) -> None:
        """Stop reading for throttle_ms from now (extending a throttle already running)."""
        if throttle_ms <= 0 or self._closed:
            return
        loop = asyncio.get_running_loop()
        end_s = loop.time() + throttle_ms / 1000.0
        if end_s <= self._throttle_end_s:
            return
        self._throttle_end_s = end_s
        if self._throttle_timer is not None:
            self._throttle_timer.cancel()
        self._throttle_timer = loop.call_at(end_s, self._unthrottle)
        self._set_paused(PAUSE_THROTTLE, True)

    def _unthrottle(self) -> None:
        self._throttle_timer = None
        if any(slot.throttled for slot in self.slots):
            return  # a throttled answer is still to be written: its own throttle follows
        self._set_paused(PAUSE_THROTTLE, False)
        if not self._closed:
            self._handle_frames()  # frames that arrived before the throttle
            self.server.after_event()

    def _written(self, slot: _Slot) -> None:
        """An answer has been handed to the transport: start its throttle, if any."""
        ctx = slot.ctx
        throttle_ms = max(ctx.throttle_time_ms if ctx is not None else 0, slot.request_throttle_ms)
        slot.throttled = False
        if throttle_ms:
            self._throttle(throttle_ms)
        elif self._paused & PAUSE_THROTTLE and self._throttle_timer is None:
            self._unthrottle()

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
        sasl = self.sasl
        if sasl is not None and sasl.raw_tokens:
            self._raw_token(sasl, frame)
            return
        header = parse_prefix(frame)
        slot = _Slot(len(frame), header.api_key)
        self.server.pool_adjust(slot.charge_bytes)
        self.slots.append(slot)
        ctx = RequestContext(
            header=header, now_ms=self.server.now_ms(), sink=functools.partial(self._answer, slot),
            connection_id=self.connection_id, client_host=self.client_host,
            listener_name=listener.name if (listener := self.listener) is not None else "",
            security_protocol=listener.security_protocol if listener is not None else "PLAINTEXT",
            principal=sasl.principal if sasl is not None else self.principal, sasl=sasl,
            on_response=self.server.request_metrics.count_errors,
        )
        slot.ctx = ctx
        node = self.server.node
        quotas_on = node.quotas.has_quotas()
        if quotas_on:
            # The request_percentage throttle the client is under: every answer carries it.
            ctx.throttle_time_ms = node.quotas.request_throttle_ms(ctx.principal, header.client_id or "",
                                                                   ctx.now_ms)
        start_ns = time.perf_counter_ns()
        node.handle_frame(ctx, frame)
        if quotas_on:
            # request_percentage (ClientRequestQuotaManager): the handler's time on the loop.
            throttle_ms = node.quotas.record_request_time(
                ctx.principal, header.client_id or "", time.perf_counter_ns() - start_ns, ctx.now_ms)
            if throttle_ms:
                slot.request_throttle_ms = throttle_ms
                if slot not in self.slots:  # already written: throttle from now
                    self._throttle(throttle_ms)
        if (ctx.throttle_time_ms or slot.request_throttle_ms) and slot in self.slots:
            # Read nothing more until its answer is written and the throttle time has passed.
            slot.throttled = True
            self._set_paused(PAUSE_THROTTLE, True)
        if sasl is None:
            self.established = True
        else:
            self._after_sasl_step(sasl, slot)

    def _after_sasl_step(self, sasl: SaslSession, slot: _Slot) -> None:
        if sasl.state is SaslState.FAILED:
            # The answer says why; then the connection ends (as Kafka). An answer already
            # written (at the head, it leaves at once) closes it now; transport.close() still
            # sends what was written.
            if slot in self.slots:
                slot.close_after = True
            else:
                self._close()
        elif sasl.authenticated and not self.established:
            self.established = True
            self.decoder.set_max_frame_bytes(self.server.node.config.socket_request_max_bytes,
                                             "socket.request.max.bytes")

    def _raw_token(self, sasl: SaslSession, frame: bytes | memoryview) -> None:
        """A bare SASL token after SaslHandshake v0: one step, its challenge written back with
        only a size prefix. A failed step closes the connection (v0 has no way to say why)."""
        slot = _Slot(len(frame))
        self.server.pool_adjust(slot.charge_bytes)
        self.slots.append(slot)
        step = sasl.authenticate(bytes(frame), self.server.node.member.metadata.scram_credentials,
                                 self.server.now_ms())
        if sasl.state is not SaslState.AUTHENTICATE:
            sasl.raw_tokens = False  # the exchange is over, either way
        if step.error is not ErrorCode.none:
            log.info("closing connection %d from %s: %s", self.connection_id, self.client_host,
                     sasl.failure)
            slot.close_after = True
            self._answer(slot, None)
            return
        self._answer(slot, [struct.pack(">i", len(step.challenge)) + step.challenge])
        self._after_sasl_step(sasl, slot)

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
        while self.slots and self.slots[0].done and not self._closed:
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
            self._written(slot)
            if slot.close_after:
                self._close()
                return
        if self._paused & PAUSE_IN_FLIGHT and len(self.slots) < self.max_in_flight:
            self._set_paused(PAUSE_IN_FLIGHT, False)

    def _write_inline(self, slot: _Slot) -> bool:
        """Write the slot now if it holds no large file range; False leaves it untouched."""
        assert slot.pieces is not None and self.transport is not None
        out = []
        for piece in slot.pieces:
            if isinstance(piece, (bytes, bytearray, memoryview)):
                out.append(piece)
            elif piece.size <= INLINE_RANGE_BYTES or not (self.tls or self._can_sendfile(piece)):
                data = piece.file.read(piece.position, piece.size)
                if len(data) != piece.size:
                    # Nothing of this answer is written yet: close after the answers before it
                    # (the pump stops at a closed connection; the slot counts as taken).
                    self._short_range(len(data), piece.size)
                    return True
                out.append(data)
            else:
                return False
        self.transport.writelines(out)
        self.activity += 1
        return True

    def _can_sendfile(self, piece: Any) -> bool:
        # Over TLS the bytes must pass through the TLS layer: the range is read and written.
        return not self.tls and self.server.use_sendfile and piece.file.fileno() is not None

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
                elif self.tls and piece.size > INLINE_RANGE_BYTES:
                    await self._write_range_in_pieces(transport, piece)
                elif self._can_sendfile(piece) and piece.size > INLINE_RANGE_BYTES:
                    fd = piece.file.fileno()
                    with open(fd, "rb", buffering=0, closefd=False) as f:
                        sent = await loop.sendfile(transport, f, piece.position, piece.size)
                    if sent != piece.size:
                        raise ShortRangeError(sent, piece.size)
                else:
                    data = piece.file.read(piece.position, piece.size)
                    if len(data) != piece.size:
                        raise ShortRangeError(len(data), piece.size)
                    transport.write(data)
                self.activity += 1
            slot = self.slots.popleft()
            self.server.pool_adjust(-slot.charge_bytes)
            self._written(slot)
            if slot.close_after:
                self._close()
        except ShortRangeError as exc:
            self._short_range(exc.got, exc.size)
            return
        except (ConnectionError, OSError, RuntimeError) as exc:
            log.debug("connection %d: send failed: %s", self.connection_id, exc)
            self._close()
            return
        finally:
            self._writer_task = None
        self._writer_busy = False
        self._pump()

    def _short_range(self, got: int, size: int) -> None:
        """A file range came back shorter than the answer's size fields promise (its segment
        was truncated after the fetch resolved it, e.g. a follower's truncation or a
        retention delete racing the send). The frame cannot be completed with the right
        bytes and padding would hand the client bytes that are not batches, so the
        connection closes, as Kafka's FileRecords.writeTo fails the send of a truncated
        file: the client sees a closed connection (never misframed bytes) and fetches again.
        Answers already written before it are flushed first; none after it is written."""
        log.warning("connection %d: a file range gave %d of %d bytes (truncated underneath);"
                    " closing the connection", self.connection_id, got, size)
        self._close()

    async def _write_range_in_pieces(self, transport: asyncio.Transport, piece: Any) -> None:
        """A file range through the TLS transport, TLS_RANGE_PIECE_BYTES at a time, waiting
        for room (resume_writing) whenever the transport's buffer is full."""
        position, end = piece.position, piece.position + piece.size
        while position < end:
            size = min(TLS_RANGE_PIECE_BYTES, end - position)
            data = piece.file.read(position, size)
            if len(data) != size:
                # The file shrank under us (truncation): the frame cannot be completed.
                raise ShortRangeError(len(data), size)
            transport.write(data)
            position += size
            self.activity += 1
            if self._writing_paused:
                self._room = asyncio.get_running_loop().create_future()
                await self._room

    def _close(self) -> None:
        if not self._closed and self.transport is not None:
            self._closed = True
            self.transport.close()  # written answers are flushed first

    def abort(self) -> None:
        if self._handshake is not None:
            self._handshake.cancel()  # it aborts the socket and releases the connection
            return
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        """Close once the bytes already handed to the transport are sent (answers given while
        the broker stops, e.g. KAFKA_STORAGE_ERROR, still reach the client)."""
        if self.transport is not None:
            self.transport.close()
