"""Running one broker as a process: the data-dir lock, signals, and the start-up line."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import sys
from collections.abc import Iterator, Mapping

from ackly.errors import ConfigError, StorageError
from ackly.log.disk import STORAGE_ERRNOS
from ackly.server.app import BrokerServer, NotJoinedError
from ackly.server.gc_pause import collector_paused_then_frozen, pause_collector_for_exit

log = logging.getLogger("ackly")

LOCK_FILE = ".lock"
# Exit statuses: 1 cannot start, 3 stopped on an internal failure, 4 the log directory failed.
EXIT_INTERNAL_FAILURE = 3
EXIT_LOG_DIR_FAILURE = 4


class DataDirInUse(RuntimeError):
    pass


@contextlib.contextmanager
def data_dir_lock(data_dir: str) -> Iterator[None]:
    """Hold an exclusive lock on the data directory, or refuse with who holds it.
    StorageError if the directory cannot be written (read-only, full, failing)."""
    path = os.path.join(data_dir, LOCK_FILE)
    try:
        os.makedirs(data_dir, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        if exc.errno in STORAGE_ERRNOS:
            raise StorageError("open", path, exc.errno, exc.strerror or str(exc)) from exc
        raise
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise DataDirInUse(
                f"data directory {data_dir} is in use by another ackly process (pid {holder}); "
                "stop it or choose another --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


async def serve(
    *, data_dir: str, host: str, port: int, properties: Mapping[str, str],
    advertised_host: str | None = None, metadata: str | None = None,
    advertised_port: int | None = None,
) -> BaseException | None:
    """Run until SIGTERM/SIGINT (None) or until the broker fails (the failure)."""
    server = BrokerServer(
        data_dir=data_dir, host=host, port=port, properties=properties,
        advertised_host=advertised_host, metadata=metadata, advertised_port=advertised_port,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with collector_paused_then_frozen():
        starting = asyncio.ensure_future(server.start())
        interrupted = asyncio.ensure_future(stop.wait())
        await asyncio.wait([starting, interrupted], return_when=asyncio.FIRST_COMPLETED)
    interrupted.cancel()
    if not starting.done():  # SIGTERM while joining the cluster: stop without serving
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        log.info("stopped before joining the cluster")
        await server.stop()
        return None
    bound_host, bound_port = starting.result()
    where = f"metadata in {metadata}" if metadata else "single broker"
    # The first listener's address first (scripts look for "listening on HOST:PORT"), then
    # every listener as bound, by name.
    bound = " ".join(f"{lst}/{lst.security_protocol}" for lst in server.listener_set.listeners)
    if server.admin_address is not None:
        where += f"; admin on http://{server.admin_address[0]}:{server.admin_address[1]}"
    print(
        f"ackly broker {server.config.broker_id} listening on {bound_host}:{bound_port} "
        f"(data in {data_dir}; {where}; listeners {bound})",
        flush=True,
    )
    stopped = asyncio.ensure_future(stop.wait())
    failed = asyncio.ensure_future(server.failed.wait())
    await asyncio.wait([stopped, failed], return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    failed.cancel()
    log.info("shutting down")
    pause_collector_for_exit()
    await server.stop()
    return server.failure


def run_serve(
    *, data_dir: str, host: str, port: int, properties: Mapping[str, str],
    advertised_host: str | None = None, metadata: str | None = None,
    advertised_port: int | None = None,
) -> int:
    try:
        with data_dir_lock(data_dir):
            failure = asyncio.run(serve(
                data_dir=data_dir, host=host, port=port, properties=properties,
                advertised_host=advertised_host, metadata=metadata,
                advertised_port=advertised_port,
            ))
    except (DataDirInUse, NotJoinedError) as exc:
        print(f"ackly: {exc}", file=sys.stderr)
        return 1
    except StorageError as exc:  # the lock, or recovery: before serving anything
        print(f"ackly: log dir failed: {exc.message}; nothing was served", file=sys.stderr)
        return EXIT_LOG_DIR_FAILURE
    except ConfigError as exc:  # one only the running broker can check (a host to resolve)
        print(f"ackly: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"ackly: cannot serve on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    if isinstance(failure, StorageError):
        print(
            f"ackly: log dir failed: {failure.message}. The broker stopped: nothing appended "
            "after its last successful flush was acknowledged. Fix the disk and restart it; "
            "it recovers from its last recovery point, checking every batch.",
            file=sys.stderr,
        )
        return EXIT_LOG_DIR_FAILURE
    if failure is not None:
        print("ackly: the broker stopped after an internal failure (see the log)", file=sys.stderr)
        return EXIT_INTERNAL_FAILURE
    return 0
