"""Log compaction (log/cleaner.py) on SimDisk: the cleaner against a simple model, Kafka's
compaction bugs as regressions, and crashes at every step of the swap."""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ackly.log import clean_swap, cleaner
from ackly.log.clean_plan import plan_clean
from ackly.log.clean_swap import CleanCrash, apply_clean, apply_swap, prepare_swap, swap_due
from ackly.log.cleaner import CleanerSettings
from ackly.log.disk import SimDisk
from ackly.log.partition_log import PartitionLog
from ackly.log.producer_state import AppendOrigin
from ackly.protocol.record_codec import (
    ControlType,
    Record,
    decode_batch,
    encode_batch,
    encode_control_batch,
)
from ackly.protocol.records import iter_batches, validate_batches

from .helpers import DIR, config

NOW_MS = 1_000_000
DAY_MS = 86_400_000


def open_log(disk: SimDisk, **overrides: object) -> PartitionLog:
    settings_ = {"cleanup_policy": ("compact",), "segment_bytes": 600, **overrides}
    return PartitionLog.open(disk, DIR, config(**settings_), NOW_MS)


def send(log: PartitionLog, data: bytes, origin: AppendOrigin = AppendOrigin.CLIENT) -> int:
    records = bytearray(data)
    result = log.append(records, validate_batches(records, 1 << 30), 0, NOW_MS, origin)
    log.set_high_watermark(log.log_end_offset)
    return result.first_offset


def kv(*pairs: tuple[bytes, bytes | None], compression: int = 0, pid: int = -1, seq: int = -1,
       transactional: bool = False) -> bytes:
    records = [Record(key=k, value=v, timestamp_ms=NOW_MS) for k, v in pairs]
    return encode_batch(records, compression=compression, producer_id=pid, producer_epoch=0 if pid >= 0 else -1,
                        base_sequence=seq, transactional=transactional)


def marker(pid: int, commit: bool) -> bytes:
    kind = ControlType.COMMIT if commit else ControlType.ABORT
    return encode_control_batch(kind, producer_id=pid, producer_epoch=0, now_ms=NOW_MS)


def clean(log: PartitionLog, now_ms: int = NOW_MS, first_dirty: int = 0,
          settings_: CleanerSettings | None = None, crash_at: str | None = None) -> int | None:
    job = plan_clean(log, first_dirty, now_ms, settings_ or CleanerSettings(), force=True)
    if job is None:
        return None
    job.run()
    return apply_clean(log, job, crash_at)


@dataclass
class Seen:
    """The log as a reader sees it."""

    records: list[tuple[int, bytes | None, bytes | None]] = field(default_factory=list)
    markers: list[tuple[int, int, ControlType | None]] = field(default_factory=list)
    committed: list[tuple[int, bytes | None, bytes | None]] = field(default_factory=list)


def read(log: PartitionLog) -> Seen:
    data = b"".join(
        log.read_bytes(r) for r in log.read(log.log_start_offset, 1 << 40, log.log_end_offset).ranges
    )
    seen = Seen()
    aborted = log.collect_aborted_transactions(log.log_start_offset, log.log_end_offset)
    last = -1
    for _, header in iter_batches(data):
        assert header.base_offset > last, "offsets go back"
        last = header.last_offset
    position = 0
    for _, header in iter_batches(data):
        _, records = decode_batch(data[position : position + header.size])
        position += header.size
        if header.is_control:
            kind = None
            if records:
                kind = ControlType(int.from_bytes(records[0].key[2:4], "big"))  # type: ignore[index]
            seen.markers.append((header.base_offset, header.producer_id, kind))
            continue
        for r in records:
            seen.records.append((r.offset, r.key, r.value))
            # read_committed, as a consumer filters with the aborted transactions listed.
            if not (header.is_transactional and any(
                a.producer_id == header.producer_id and a.first_offset <= r.offset <= a.last_offset
                for a in aborted
            )):
                seen.committed.append((r.offset, r.key, r.value))
    return seen


# ---------------------------------------------------------------------- the model


class Model:
    """Every record written: offset -> (key, value, aborted)."""

    def __init__(self) -> None:
        self.writes: dict[int, tuple[bytes, bytes | None, bool]] = {}
        self.open_txn: dict[int, list[int]] = {}

    def latest(self, below: int) -> dict[bytes, int]:
        out: dict[bytes, int] = {}
        for offset in sorted(self.writes):
            key, _, aborted = self.writes[offset]
            if offset < below and not aborted:
                out[key] = offset
        return out


ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=1, max_size=4),
                  st.sampled_from([0, 1, 3])),
        st.tuples(st.just("txn"), st.integers(0, 1), st.lists(st.integers(0, 5), min_size=1, max_size=3),
                  st.booleans()),
        st.tuples(st.just("clean"), st.sampled_from([0, 1, 2 * DAY_MS])),
        st.tuples(st.just("roll"),),
    ),
    min_size=1, max_size=40,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_cleaner_keeps_every_keys_latest_value_at_its_offset(steps: list[tuple]) -> None:  # type: ignore[type-arg]
    disk = SimDisk(random.Random(0))
    log = open_log(disk)
    model = Model()
    counter = 0
    first_dirty = 0
    for step in steps:
        if step[0] == "put":
            pairs = []
            for key, tombstone in step[1]:
                counter += 1
                pairs.append((b"k%d" % key, None if tombstone else b"v%d" % counter))
            base = send(log, kv(*pairs, compression=step[2]))
            for i, (k, v) in enumerate(pairs):
                model.writes[base + i] = (k, v, False)
        elif step[0] == "txn":
            pid = 100 + step[1]
            pairs = [(b"k%d" % key, b"t%d" % key) for key in step[2]]
            base = send(log, kv(*pairs, pid=pid, seq=0, transactional=True))
            commit = step[3]
            for i, (k, v) in enumerate(pairs):
                model.writes[base + i] = (k, v, not commit)
            # Each transaction starts at sequence 0 with a new epoch in real life; a fresh pid
            # per transaction keeps the producer checks out of this test.
            send(log, marker(pid, commit), AppendOrigin.COORDINATOR)
            log.producer_state.clear()
        elif step[0] == "roll":
            log.roll(NOW_MS)
        else:
            end = clean(log, NOW_MS + step[1], first_dirty)
            if end is not None:
                first_dirty = end
        seen = read(log)
        # Nothing invented: every record is one written there, and offsets never move.
        for offset, key, value in seen.records:
            assert model.writes[offset][:2] == (key, value)
        # read_committed never sees aborted data.
        for offset, _, _ in seen.committed:
            assert not model.writes[offset][2], f"aborted record at {offset} visible"
        # Every key's latest value is there, at its offset (tombstones may go after the horizon).
        present = {offset for offset, _, _ in seen.committed}
        for key, offset in model.latest(log.log_end_offset).items():
            if model.writes[offset][1] is not None:
                assert offset in present, f"latest {key!r} at {offset} lost"
    # Reopen after a crash: the same records.
    before = read(log).records
    log.flush_now()
    disk.crash()
    log = PartitionLog.open(disk, DIR, log.config, NOW_MS)
    assert read(log).records == before


def test_superseded_values_go_and_small_segments_merge() -> None:
    disk = SimDisk(random.Random(1))
    log = open_log(disk)
    for i in range(60):
        send(log, kv((b"k%d" % (i % 3), b"v%d" % i)))
    first_dirty = clean(log)
    assert first_dirty is not None
    segments_before = len(log.segments)
    for i in range(60, 90):
        send(log, kv((b"k%d" % (i % 3), b"v%d" % i)))
    assert clean(log, first_dirty=first_dirty) is not None
    seen = read(log)
    latest = {key: (offset, value) for offset, key, value in seen.records}
    active_base = log.segments[-1].base_offset
    cleaned = [r for r in seen.records if r[0] < active_base]
    assert len({k for _, k, _ in cleaned}) == len(cleaned), "a key twice in the cleaned part"
    assert latest[b"k0"][1] == b"v87" and latest[b"k2"][1] == b"v89"
    # The seven small segments the first clean left became one.
    assert segments_before == 8 and log.segments[0].next_offset == 56


def test_tombstones_stay_delete_retention_ms_after_first_clean_then_go() -> None:
    """KAFKA-8522: the horizon is set once, at the first clean that keeps the tombstone, and
    a rewrite of the segment after that neither resets nor forgets it."""
    disk = SimDisk(random.Random(2))
    log = open_log(disk, delete_retention_ms=DAY_MS)
    send(log, kv((b"a", b"1"), (b"b", b"1")))
    send(log, kv((b"a", None)))
    for i in range(20):
        send(log, kv((b"c", b"%d" % i)))
    log.roll(NOW_MS)
    send(log, kv((b"z", b"z")))
    clean(log, NOW_MS)
    assert (2, b"a", None) in read(log).records  # kept: horizon now + 1 day
    # Rewritten again and again before the horizon: still there.
    for hours in (1, 12, 23):
        send(log, kv((b"c", b"x")))
        log.roll(NOW_MS)
        clean(log, NOW_MS + hours * 3_600_000)
        assert (2, b"a", None) in read(log).records
    clean(log, NOW_MS + DAY_MS + 1)
    assert all(key != b"a" for _, key, _ in read(log).records)
    assert (1, b"b", b"1") in read(log).records


def test_aborted_data_goes_and_markers_stay_while_their_data_does() -> None:
    """KAFKA-8351: a transaction whose data and marker lie in different segments keeps its
    marker while any of its data remains, the transaction state being carried across them."""
    disk = SimDisk(random.Random(3))
    log = open_log(disk, segment_bytes=200, delete_retention_ms=0)
    send(log, kv((b"t1", b"x"), pid=7, seq=0, transactional=True))
    log.roll(NOW_MS)
    send(log, kv((b"k", b"1")))
    log.roll(NOW_MS)
    commit_offset = send(log, marker(7, True), AppendOrigin.COORDINATOR)
    send(log, kv((b"t2", b"y"), pid=8, seq=0, transactional=True))
    abort_offset = send(log, marker(8, False), AppendOrigin.COORDINATOR)
    log.roll(NOW_MS)
    send(log, kv((b"z", b"z")))
    log.producer_state.clear()  # the producers are gone: no batch is kept for their sake
    clean(log, NOW_MS)
    seen = read(log)
    offsets = [o for o, _, _ in seen.records]
    assert 0 in offsets, "committed data removed"
    assert abort_offset - 1 not in offsets, "aborted data kept"
    markers = {o for o, _, _ in seen.markers}
    assert commit_offset in markers, "COMMIT marker removed while its data remains"
    assert abort_offset in markers, "ABORT marker removed in the pass that removed its data"
    # Next pass: the aborted data is gone, the marker gets its horizon; then goes.
    clean(log, NOW_MS)
    clean(log, NOW_MS + 1)
    markers = {o for o, _, _ in read(log).markers}
    assert abort_offset not in markers
    assert commit_offset in markers, "COMMIT marker removed while its data remains"


def test_partial_clean_keeps_the_aborted_transaction_index() -> None:
    """KAFKA-13727: a clean that stops early (its key map is full) keeps every aborted
    transaction's index entry, so read_committed still hides the aborted data."""
    disk = SimDisk(random.Random(4))
    log = open_log(disk, segment_bytes=150, delete_retention_ms=0)
    send(log, kv((b"a", b"1")))
    send(log, kv((b"t", b"aborted-1"), pid=9, seq=0, transactional=True))
    log.roll(NOW_MS)
    send(log, kv((b"t", b"aborted-2"), pid=9, seq=1, transactional=True))
    log.roll(NOW_MS)
    send(log, kv((b"b", b"2")))
    send(log, marker(9, False), AppendOrigin.COORDINATOR)
    for i in range(6):
        log.roll(NOW_MS)
        send(log, kv((b"c", b"%d" % i)))
    log.roll(NOW_MS)
    send(log, kv((b"z", b"z")))
    tiny = CleanerSettings(dedupe_buffer_bytes=cleaner.OFFSET_MAP_ENTRY_BYTES * 2,
                           io_buffer_load_factor=1.0)
    first_dirty = 0
    for _ in range(12):
        end = clean(log, NOW_MS, first_dirty, tiny)
        assert end is None or end > first_dirty, "no progress"
        first_dirty = end if end is not None else first_dirty
        committed = read(log).committed
        assert all(not (v or b"").startswith(b"aborted") for _, _, v in committed)
    log.flush_now()
    log.close()
    log = PartitionLog.open(disk, DIR, log.config, NOW_MS)
    assert all(not (v or b"").startswith(b"aborted") for _, _, v in read(log).committed)


def test_a_log_with_holes_is_cleaned_to_its_end_without_looping() -> None:
    """KAFKA-8764: cleaning a log whose offsets have holes moves the first dirty offset to
    the end of the range cleaned, and a clean with nothing new to do finds nothing."""
    disk = SimDisk(random.Random(5))
    log = open_log(disk)
    for i in range(40):
        send(log, kv((b"k%d" % (i % 2), b"v%d" % i)))
    first_dirty = clean(log) or 0
    assert first_dirty == log.segments[-1].base_offset
    assert plan_clean(log, first_dirty, NOW_MS, CleanerSettings()) is None
    # A fetch from any offset inside a hole returns the next record, never an empty answer.
    seen = read(log)
    for offset in range(0, seen.records[-1][0]):
        result = log.read(offset, 1 << 20, log.log_end_offset)
        assert result.size > 0, f"empty read at {offset}"


def test_each_producers_last_batch_is_kept_so_its_sequence_survives() -> None:
    disk = SimDisk(random.Random(6))
    log = open_log(disk)
    send(log, kv((b"k", b"1"), pid=5, seq=0))
    for i in range(30):
        send(log, kv((b"k", b"%d" % i)))
    log.roll(NOW_MS)
    send(log, kv((b"z", b"z")))
    clean(log)
    data = b"".join(log.read_bytes(r) for r in log.read(0, 1 << 30, log.log_end_offset).ranges)
    kept = [h for _, h in iter_batches(data) if h.producer_id == 5]
    assert len(kept) == 1 and kept[0].records_count == 0 and kept[0].last_sequence == 0
    log.close()
    log = PartitionLog.open(disk, DIR, log.config, NOW_MS)
    entry = log.producer_state.get(5)
    assert entry is not None and entry.last_seq == 0


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(clean_swap.CRASH_POINTS), st.integers(0, 2**32))
def test_a_crash_at_any_step_of_the_swap_loses_nothing(point: str, seed: int) -> None:
    # The swap's renames make no fsync: the crash keeps a seeded prefix of them (and of the
    # removals and creations before), as a journaling file system's recovery does.
    disk = SimDisk(random.Random(seed), ordered_dir_ops=True)
    log = open_log(disk)
    rng = random.Random(seed)
    for i in range(50):
        send(log, kv((b"k%d" % rng.randint(0, 6), b"v%d" % i)))
    log.flush_now()
    latest = {key: (offset, value) for offset, key, value in read(log).records}
    with contextlib.suppress(CleanCrash):
        clean(log, crash_at=point)
    disk.crash()
    log = PartitionLog.open(disk, DIR, log.config, NOW_MS)
    seen = read(log).records
    offsets = [o for o, _, _ in seen]
    assert len(offsets) == len(set(offsets)), "duplicate offsets"
    for key, (offset, value) in latest.items():
        assert (offset, key, value) in seen
    assert not [n for n in disk.listdir(DIR) if n.endswith((".cleaned", ".swap"))]


def test_a_job_run_from_its_spec_gives_the_same_log() -> None:
    """The shell runs the writing part in another process from the job's spec (paths and
    values): the log that results is the one an in-process run gives."""
    results = []
    for via_spec in (False, True):
        disk = SimDisk(random.Random(7))
        log = open_log(disk)
        for i in range(80):
            send(log, kv((b"k%d" % (i % 5), None if i % 11 == 0 else b"v%d" % i), compression=i % 2))
        log.roll(NOW_MS)
        job = plan_clean(log, 0, NOW_MS, CleanerSettings(), force=True)
        assert job is not None
        if via_spec:
            job.run_flush()
            job.stats = cleaner.run_spec(job.spec(), disk)
        else:
            job.run()
        assert apply_clean(log, job) is not None
        results.append((read(log).records, [s.base_offset for s in log.segments]))
    assert results[0] == results[1]


def test_a_spec_whose_segment_went_is_cancelled_without_creating_it() -> None:
    disk = SimDisk(random.Random(8))
    log = open_log(disk, cleanup_policy=("compact", "delete"), retention_ms=1)
    for i in range(40):
        send(log, kv((b"k%d" % (i % 3), b"v%d" % i)))
    job = plan_clean(log, 0, NOW_MS, CleanerSettings(), force=True)
    assert job is not None
    log.enforce_retention(NOW_MS + 10_000)  # the first segments go under the job
    gone = job.sources[0].path(".log")
    try:
        cleaner.run_spec(job.spec(), disk)
        raise AssertionError("ran on a deleted segment")
    except cleaner.CleanCancelled:
        pass
    assert not disk.exists(gone)
    assert apply_clean(log, job) is None  # and the swap is refused


def test_min_compaction_lag_and_the_lso_bound_what_is_cleaned() -> None:
    disk = SimDisk(random.Random(9))
    log = open_log(disk, min_compaction_lag_ms=60_000)
    for i in range(40):
        send(log, kv((b"k", b"v%d" % i)))
    log.roll(NOW_MS)
    send(log, kv((b"z", b"z")))
    # Every segment's records are younger than the lag: nothing may be cleaned.
    assert plan_clean(log, 0, NOW_MS + 1_000, CleanerSettings(), force=True) is None
    assert plan_clean(log, 0, NOW_MS + 61_000, CleanerSettings(), force=True) is not None
    # An open transaction holds the LSO: nothing at or above it is cleaned.
    disk = SimDisk(random.Random(10))
    log = open_log(disk)
    send(log, kv((b"t", b"open"), pid=4, seq=0, transactional=True))
    for i in range(40):
        send(log, kv((b"k", b"v%d" % i)))
    log.roll(NOW_MS)
    assert log.last_stable_offset == 0
    assert plan_clean(log, 0, NOW_MS, CleanerSettings(), force=True) is None


def test_dirty_ratio_waits_unless_max_compaction_lag_passed() -> None:
    disk = SimDisk(random.Random(11))
    log = open_log(disk, min_cleanable_dirty_ratio=0.99, max_compaction_lag_ms=60_000)
    for i in range(40):
        send(log, kv((b"k%d" % i, b"v")))  # all distinct: nothing to gain
    log.roll(NOW_MS)
    first = clean(log)
    assert first is not None
    send(log, kv((b"k0", b"new")))
    log.roll(NOW_MS)
    # A small dirty part: below the ratio, no clean; past max.compaction.lag.ms, a clean.
    assert plan_clean(log, first, NOW_MS + 1_000, CleanerSettings()) is None
    assert plan_clean(log, first, NOW_MS + 61_000, CleanerSettings()) is not None


def test_the_swap_and_a_discarded_job_make_no_fsync_outside_jobs() -> None:
    """The event loop's part of a clean (prepare, swap, discard) makes no fsync: the swap
    waits for a flush job to sync its checkpoints, then owes its renames to the next."""
    disk = SimDisk(random.Random(11), ordered_dir_ops=True)
    disk.loop_guard = True
    with disk.off_loop():
        log = open_log(disk)
    for i in range(40):
        send(log, kv((b"k%d" % (i % 3), b"v%d" % i)))
    job = plan_clean(log, 0, NOW_MS, CleanerSettings(), force=True)
    assert job is not None
    with disk.off_loop():
        job.run()
    assert prepare_swap(log, job) and not swap_due(log, job)
    flush = log.begin_flush()
    assert flush is not None
    with disk.off_loop():
        flush.run()
    log.complete_flush(flush)
    assert swap_due(log, job)
    assert apply_swap(log, job) == job.end_offset
    assert disk.loop_syncs == []
    assert log.needs_flush, "the renames owe their directory sync"

    for i in range(40, 80):
        send(log, kv((b"k%d" % (i % 3), b"v%d" % i)))
    again = plan_clean(log, job.end_offset, NOW_MS, CleanerSettings(), force=True)
    assert again is not None
    with disk.off_loop():
        again.run()
    log.delete_records_before(log.segments[1].base_offset)  # the log changes under the job
    assert not prepare_swap(log, again)
    assert disk.loop_syncs == []
    assert not [n for n in disk.listdir(DIR) if n.endswith((".cleaned", ".swap"))]
