"""The log cleaner's worker: runs one CleanJob at a time off the event loop.

The core plans a job and applies its swap on the event loop (broker/log_cleaner.py,
log/cleaner.py). The writing part (map the keys, write the `.cleaned` files) runs in a
separate process, so that the cleaner's Python work does not take the interpreter lock from
the event loop: producers and consumers keep their core while a log is compacted. A thread
here first runs the job's fsync (`run_flush`, on the broker's own file handles), then hands
the job's spec (paths and values only) to that process and waits for it.

The process reads only inactive segments and writes only `.cleaned` files nobody else
touches; it sleeps as needed to keep its reads under log.cleaner.io.max.bytes.per.second (as
Kafka's cleaner Throttler does). It dies with the broker (PR_SET_PDEATHSIG on Linux; it also
checks that its parent is alive between segments), so a kill -9 of the broker never leaves
it writing beside a restarted one. It runs at the lowest CPU priority (nice 19), so that it
takes only the CPU the broker leaves. Completion, success or failure, goes back to the event
loop with `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ackly.log.cleaner import CleanCancelled, CleanJob, CleanSpec, CleanStats, run_spec
from ackly.log.disk import DiskFile, RealDisk
from ackly.types import TopicPartition

if TYPE_CHECKING:
    import multiprocessing.pool

# multiprocessing and ctypes are imported when the first clean job runs, not with the broker:
# most brokers (and every test broker) never compact, and a broker's start-up pays for them.

OnCleaned = Callable[[TopicPartition, CleanJob, BaseException | None], None]
_PR_SET_PDEATHSIG = 1
_POLL_S = 0.1


class Throttle:
    """Sleeps so that bytes / elapsed time stays at most `bytes_per_second`."""

    def __init__(self, bytes_per_second: float) -> None:
        self.bytes_per_second = bytes_per_second
        self._start = time.monotonic()
        self._bytes = 0

    def __call__(self, count: int) -> None:
        if self.bytes_per_second >= 1e300:
            return
        self._bytes += count
        due = self._start + self._bytes / self.bytes_per_second
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)


_parent_pid = 0


# The cleaner's CPU priority: the lowest, so that on a machine with few cores the scheduler
# gives the broker's event loop (and the clients beside it) the CPU first, and the cleaner
# the rest. A clean is never urgent (Kafka's cleaner merely lags behind), and
# log.cleaner.io.max.bytes.per.second still caps its rate when the CPU is free.
CLEANER_NICENESS = 19


def _worker_init(parent_pid: int) -> None:
    global _parent_pid
    _parent_pid = parent_pid
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the broker decides when this one stops
    with contextlib.suppress(OSError):
        os.nice(CLEANER_NICENESS - os.nice(0))
    if sys.platform.startswith("linux"):
        import ctypes

        # Without it, the parent check between segments still stops an orphan.
        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_SYNC_THREADS = 16


def sync_concurrently(files: list[DiskFile]) -> None:
    """fsync the cleaned files all at once: the filesystem folds concurrent fsyncs into few
    journal commits, where one after another costs a commit each (a clean of many small
    segments writes as many files)."""
    if len(files) <= 1:
        for file in files:
            file.flush()
        return
    with concurrent.futures.ThreadPoolExecutor(min(_SYNC_THREADS, len(files))) as pool:
        for done in [pool.submit(file.flush) for file in files]:
            done.result()  # the first StorageError, if any, fails the clean


def run_in_worker(spec: CleanSpec, bytes_per_second: float) -> CleanStats:
    """The cleaner process's part of a job (also callable in-process: then no parent is
    watched)."""
    return run_spec(spec, RealDisk(), Throttle(bytes_per_second),
                    cancelled=lambda: _parent_pid != 0 and os.getppid() != _parent_pid,
                    sync=sync_concurrently)


class CleanerWorker:
    def __init__(self, io_max_bytes_per_second: float, on_cleaned: OnCleaned) -> None:
        self._threads = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ackly-cleaner")
        self._processes: multiprocessing.pool.Pool | None = None
        self._bytes_per_second = io_max_bytes_per_second
        self._on_cleaned = on_cleaned
        self._running: tuple[CleanJob, concurrent.futures.Future[CleanStats]] | None = None
        self._stopping = False

    @property
    def idle(self) -> bool:
        return self._running is None

    def _pool(self) -> multiprocessing.pool.Pool:
        if self._processes is None:
            import multiprocessing

            # spawn: a fork of a process with threads and an event loop is not safe.
            context = multiprocessing.get_context("spawn")
            self._processes = context.Pool(1, initializer=_worker_init, initargs=(os.getpid(),))
        return self._processes

    def _run(self, job: CleanJob) -> CleanStats:
        """In the cleaner thread: fsync, then the writing part in the cleaner process."""
        import multiprocessing

        job.run_flush()
        pending = self._pool().apply_async(run_in_worker, (job.spec(), self._bytes_per_second))
        while True:
            if self._stopping:
                raise CleanCancelled(job.dir_path)
            try:
                stats: CleanStats = pending.get(_POLL_S)
            except multiprocessing.TimeoutError:
                continue
            job.stats = stats
            return stats

    def start(self, tp: TopicPartition, job: CleanJob) -> None:
        loop = asyncio.get_running_loop()
        future = self._threads.submit(self._run, job)
        self._running = (job, future)

        def done(f: concurrent.futures.Future[CleanStats]) -> None:
            loop.call_soon_threadsafe(self._finish, tp, job, f)

        future.add_done_callback(done)

    def _finish(
        self, tp: TopicPartition, job: CleanJob, future: concurrent.futures.Future[CleanStats]
    ) -> None:
        self._running = None
        self._on_cleaned(tp, job, future.exception())

    async def stop(self) -> None:
        """Stop the cleaner process (its `.cleaned` files are dropped at the next start) and
        wait for the thread to let go of the job."""
        self._stopping = True
        if self._processes is not None:
            self._processes.terminate()
        if self._running is not None:
            _job, future = self._running
            await asyncio.gather(asyncio.wrap_future(future), return_exceptions=True)
        if self._processes is not None:
            self._processes.join()
        self._threads.shutdown(wait=True)
