"""The log cleaner's worker thread: runs one CleanJob at a time off the event loop.

The core plans a job and applies its swap on the event loop (broker/log_cleaner.py,
log/cleaner.py); this thread only runs `CleanJob.run`, which reads inactive segments and
writes `.cleaned` files no other code touches. The job calls back after every segment it
reads; the throttle here sleeps (in this thread) so the bytes read stay under
log.cleaner.io.max.bytes.per.second, as Kafka's cleaner Throttler does. Completion, success
or failure, goes back to the event loop with `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable

from ackly.log.cleaner import CleanJob, CleanStats
from ackly.types import TopicPartition

OnCleaned = Callable[[TopicPartition, CleanJob, BaseException | None], None]


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


class CleanerThread:
    def __init__(self, io_max_bytes_per_second: float, on_cleaned: OnCleaned) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ackly-cleaner")
        self._bytes_per_second = io_max_bytes_per_second
        self._on_cleaned = on_cleaned
        self._running: tuple[CleanJob, concurrent.futures.Future[CleanStats]] | None = None

    @property
    def idle(self) -> bool:
        return self._running is None

    def start(self, tp: TopicPartition, job: CleanJob) -> None:
        loop = asyncio.get_running_loop()
        future = self._pool.submit(job.run, Throttle(self._bytes_per_second))
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
        """Cancel the job in flight and wait for the thread to let go of it."""
        if self._running is not None:
            job, future = self._running
            job.cancel()
            await asyncio.gather(asyncio.wrap_future(future), return_exceptions=True)
        self._pool.shutdown(wait=True)
