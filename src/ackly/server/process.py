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

from ackly.errors import ConfigError
from ackly.server.app import BrokerServer

log = logging.getLogger("ackly")

LOCK_FILE = ".lock"


class DataDirInUse(RuntimeError):
    pass


@contextlib.contextmanager
def data_dir_lock(data_dir: str) -> Iterator[None]:
    """Hold an exclusive lock on the data directory, or refuse with who holds it."""
    os.makedirs(data_dir, exist_ok=True)
    path = os.path.join(data_dir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
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
) -> bool:
    """Run until SIGTERM/SIGINT (True) or until the broker fails (False)."""
    server = BrokerServer(
        data_dir=data_dir, host=host, port=port, properties=properties,
        advertised_host=advertised_host, metadata=metadata, advertised_port=advertised_port,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bound_host, bound_port = await server.start()
    where = f"metadata in {metadata}" if metadata else "single broker"
    print(
        f"ackly broker {server.config.broker_id} listening on {bound_host}:{bound_port} "
        f"(data in {data_dir}; {where})",
        flush=True,
    )
    stopped = asyncio.ensure_future(stop.wait())
    failed = asyncio.ensure_future(server.failed.wait())
    await asyncio.wait([stopped, failed], return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    failed.cancel()
    log.info("shutting down")
    await server.stop()
    return server.failure is None


def run_serve(
    *, data_dir: str, host: str, port: int, properties: Mapping[str, str],
    advertised_host: str | None = None, metadata: str | None = None,
    advertised_port: int | None = None,
) -> int:
    try:
        with data_dir_lock(data_dir):
            ok = asyncio.run(serve(data_dir=data_dir, host=host, port=port, properties=properties,
                                   advertised_host=advertised_host, metadata=metadata,
                                   advertised_port=advertised_port))
    except DataDirInUse as exc:
        print(f"ackly: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:  # one only the running broker can check (a host to resolve)
        print(f"ackly: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"ackly: cannot serve on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    if not ok:
        print("ackly: the broker stopped after an internal failure (see the log)", file=sys.stderr)
        return 3
    return 0
