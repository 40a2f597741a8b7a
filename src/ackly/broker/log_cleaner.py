"""Which log the cleaner works on next (Kafka's LogCleanerManager), for one broker.

Owns: the first dirty offset of every compacted partition (cached from its
`cleaner-offset-checkpoint`), the choice of the next log to clean (the highest dirty ratio at
or above its min.cleanable.dirty.ratio, or one past max.compaction.lag.ms), the one job in
flight, and the backoff when nothing needs cleaning (log.cleaner.backoff.ms).

The cleaning itself is log/cleaner.py. The shell takes a job with `take_job`, runs it in its
cleaner worker (a process, throttled to log.cleaner.io.max.bytes.per.second) and hands it
back to `complete_job` on the event loop, which prepares the swap (clean_swap.prepare_swap:
checkpoints written, their sync owed to the log's next flush job); once that job ran,
`apply_due_swaps` (after every flush completion) swaps the segments in, so no fsync of the
swap runs on the event loop. Leaders and followers alike clean
their own copies (as Kafka's do): only the local log's LSO, active segment and recovery
point bound a clean.

Invariants: at most one job in flight, from `take_job` until its swap is applied or the job
discarded (ackly runs one cleaner worker whatever log.cleaner.threads says: the dedupe
buffer is still split as Kafka splits it); a job whose partition went (deleted, or its log
truncated or trimmed under it) is discarded, never applied.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from ackly.config import BrokerConfig
from ackly.errors import KafkaError
from ackly.log.clean_plan import cleanable_range, plan_clean, read_first_dirty
from ackly.log.clean_swap import apply_swap, discard, prepare_swap, swap_due
from ackly.log.cleaner import CleanerSettings, CleanJob
from ackly.log.partition_log import PartitionLog
from ackly.replication.partition import Partition
from ackly.types import TopicPartition

log = logging.getLogger("ackly.cleaner")


class CleanerManager:
    def __init__(self, config: BrokerConfig, now_ms: int) -> None:
        self.enabled = bool(config.get("log.cleaner.enable"))
        self.backoff_ms = int(config.get("log.cleaner.backoff.ms"))
        self.io_max_bytes_per_second = float(config.get("log.cleaner.io.max.bytes.per.second"))
        self.settings = CleanerSettings(
            dedupe_buffer_bytes=int(config.get("log.cleaner.dedupe.buffer.size")),
            io_buffer_load_factor=float(config.get("log.cleaner.io.buffer.load.factor")),
            threads=max(1, int(config.get("log.cleaner.threads"))),
        )
        # tp -> (first dirty offset, the log's truncation count when it was recorded, the
        # log itself: a topic deleted and made again has a new log)
        self._first_dirty: dict[TopicPartition, tuple[int, int, PartitionLog]] = {}
        self._next_check_ms = now_ms
        # A backoff wakes the broker when it ends (a timer), then stops asking to: the shell
        # looks for work after every input anyway.
        self._backoff_armed = False
        self._in_flight: TopicPartition | None = None
        # The job of `_in_flight` once prepared, waiting for its log's flush (and that log).
        self._swapping: tuple[CleanJob, PartitionLog] | None = None
        # Counters (observability).
        self.cleans_applied = 0
        self.cleans_discarded = 0
        self.bytes_read = 0
        self.records_removed = 0

    def next_deadline_ms(self) -> int | None:
        if not self.enabled or self._in_flight is not None or not self._backoff_armed:
            return None
        return self._next_check_ms

    def tick(self, now_ms: int) -> None:
        if now_ms >= self._next_check_ms:
            self._backoff_armed = False

    def _back_off(self, now_ms: int) -> None:
        self._next_check_ms = now_ms + self.backoff_ms
        self._backoff_armed = True

    def _first_dirty_of(self, p: Partition) -> int:
        """Where the last clean ended; the log start again after a truncation, which may have
        replaced records below it (Kafka truncates its cleaner checkpoint likewise)."""
        log_ = p.log
        truncations = log_.truncation_count
        cached = self._first_dirty.get(p.tp)
        if cached is None or cached[2] is not log_:
            cached = (read_first_dirty(log_.disk, log_.dir_path) or 0, truncations, log_)
        elif cached[1] != truncations:
            cached = (log_.log_start_offset, truncations, log_)
        self._first_dirty[p.tp] = cached
        return cached[0]

    def take_job(
        self, partitions: Iterable[Partition], now_ms: int
    ) -> tuple[TopicPartition, CleanJob] | None:
        """The next clean to run, or None (nothing due, one in flight, or backing off)."""
        if self._swapping is not None and self._swapping[1].is_closed:
            self._discard(self._swapping[0])  # its log went while the swap waited
        if not self.enabled or self._in_flight is not None or now_ms < self._next_check_ms:
            return None
        best: tuple[float, Partition] | None = None
        for p in partitions:
            if "compact" not in p.config.cleanup_policy or p.log.is_closed:
                continue
            # Compaction lags and delete horizons compare record timestamps: wall-clock time.
            found = cleanable_range(p.log, self._first_dirty_of(p), p.log.wall_clock(now_ms))
            if found is None:
                continue
            ratio = float("inf") if found.must_clean else found.dirty_ratio
            if ratio < p.config.min_cleanable_dirty_ratio:
                continue
            if best is None or ratio > best[0]:
                best = (ratio, p)
        if best is None:
            self._back_off(now_ms)
            return None
        p = best[1]
        job = plan_clean(p.log, self._first_dirty_of(p), p.log.wall_clock(now_ms), self.settings,
                         force=True)
        if job is None:
            self._back_off(now_ms)
            return None
        self._in_flight = p.tp
        return p.tp, job

    def complete_job(
        self,
        tp: TopicPartition,
        job: CleanJob,
        error: BaseException | None,
        partition_of: Callable[[TopicPartition], Partition | None],
    ) -> bool:
        """The shell ran `job` (or it failed with `error`): prepare its swap if it still
        fits. True if the swap now waits for a flush of tp's log (the caller schedules it)."""
        p = partition_of(tp)
        if error is not None or p is None or p.log.dir_path != job.dir_path:
            if error is not None:
                log.warning("%s: clean failed, the log stays as it was: %r", tp, error)
            self._discard(job)
            return False
        try:
            prepared = prepare_swap(p.log, job)
        except KafkaError as exc:
            log.error("%s: cleaned segments not swapped in: %s", tp, exc)
            self._discard(job)
            return False
        if not prepared:
            self._in_flight = None
            self.cleans_discarded += 1
            return False
        self._swapping = (job, p.log)
        return True

    def apply_due_swaps(self, partition_of: Callable[[TopicPartition], Partition | None]) -> TopicPartition | None:
        """Swap in the prepared job once its log's flush job ran (after every flush
        completion). Returns the partition swapped, whose log then owes the renames' sync to
        its next flush job (the caller schedules it), or None."""
        if self._swapping is None or self._in_flight is None:
            return None
        tp = self._in_flight
        job, log_ = self._swapping
        p = partition_of(tp)
        if p is None or p.log is not log_ or log_.is_closed:
            self._discard(job)  # deleted or closed while it waited
            return None
        if not swap_due(log_, job):
            return None
        self._swapping = None
        self._in_flight = None
        try:
            end = apply_swap(log_, job)
        except KafkaError as exc:
            log.error("%s: cleaned segments not swapped in: %s", tp, exc)
            discard(job)
            self.cleans_discarded += 1
            return None
        if end is None:
            self.cleans_discarded += 1
            return None
        self._first_dirty[tp] = (end, log_.truncation_count, log_)
        self.cleans_applied += 1
        if job.stats is not None:
            self.bytes_read += job.stats.bytes_read
            self.records_removed += job.stats.records_removed
        return tp

    def _discard(self, job: CleanJob) -> None:
        self._in_flight = None
        self._swapping = None
        discard(job)
        self.cleans_discarded += 1
