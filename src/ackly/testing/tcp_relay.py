"""A byte-for-byte TCP relay that a test can cut and heal (for protocols the Kafka-aware fault
proxy does not speak, e.g. a broker's gRPC connection to etcd).

`TcpRelay(upstream).start()` listens on 127.0.0.1 (a free port, or `port`) on its own
event-loop thread and forwards each accepted connection to `upstream`. `cut()` resets every
relayed connection and, until `heal()`, resets each new one as soon as it is accepted: to the
client the upstream is unreachable, as behind a network partition that answers with RST.
Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading

from ackly.testing.loop_thread import start_loop_thread

CALL_TIMEOUT_S = 10.0
_LINGER_RESET = struct.pack("ii", 1, 0)


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    writer.transport.abort()


class TcpRelay:
    def __init__(self, upstream: tuple[str, int], *, port: int = 0) -> None:
        self.upstream = upstream
        self.host = "127.0.0.1"
        self.port = port
        self.cut_now = False
        self.accepted = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> TcpRelay:
        async def setup() -> None:
            self._loop = asyncio.get_running_loop()
            self._server = await asyncio.start_server(self._serve, self.host, self.port)
            self.port = int(self._server.sockets[0].getsockname()[1])

        self._loop, self._thread = start_loop_thread("ackly-tcp-relay", setup, CALL_TIMEOUT_S)
        return self

    def cut(self) -> None:
        """Reset every relayed connection, and every new one until heal()."""
        self._call(self._cut)

    def heal(self) -> None:
        self._call(lambda: setattr(self, "cut_now", False))

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return

        def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            self._cut()

        with contextlib.suppress(RuntimeError, TimeoutError):
            self._call(shutdown)
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(loop.stop)
        thread.join(CALL_TIMEOUT_S)

    def _cut(self) -> None:
        self.cut_now = True
        for writer in list(self._writers):
            _reset(writer)
        self._writers.clear()

    def _call(self, fn: object) -> None:
        loop = self._loop
        assert loop is not None and callable(fn)

        async def wrapper() -> None:
            fn()

        asyncio.run_coroutine_threadsafe(wrapper(), loop).result(CALL_TIMEOUT_S)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.cut_now:
            _reset(writer)
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(*self.upstream), CALL_TIMEOUT_S
            )
        except (OSError, TimeoutError):
            _reset(writer)
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._writers.discard(writer)
            self._writers.discard(up_writer)
            writer.close()
            up_writer.close()
