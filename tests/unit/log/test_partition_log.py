"""PartitionLog: append, roll, read bounds, timestamps, retention, deletion, truncation, reopen."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ackly.errors import ErrorCode, KafkaError
from ackly.log.disk import RealDisk, SimDisk
from ackly.log.partition_log import PartitionLog, remove_deleted_dir, remove_deleted_dirs
from ackly.protocol.record_codec import decode_batch
from ackly.protocol.records import TIMESTAMP_TYPE_MASK, crc_of, read_header

from .helpers import DIR, append, batch, config, headers_of, read_all

ONE = batch()  # one record; every test batch of the same shape has this size
SIZE = len(ONE)


def open_log(disk: SimDisk | None = None, now_ms: int = 1_000, **overrides: object) -> PartitionLog:
    return PartitionLog.open(disk or SimDisk(random.Random(0)), DIR, config(**overrides), now_ms)


def fill(log: PartitionLog, batches: int, records_per_batch: int = 1, now_ms: int = 1_000) -> None:
    for _ in range(batches):
        append(log, batch(records_per_batch, timestamp_ms=now_ms), now_ms=now_ms)


# ------------------------------------------------------------------ append


def test_append_assigns_offsets_and_patches_in_place() -> None:
    log = open_log()
    result, data = append(log, batch(3), batch(2), leader_epoch=7)
    assert (result.first_offset, result.last_offset) == (0, 4)
    assert result.log_append_time_ms == -1
    assert result.log_start_offset == 0
    headers = headers_of(data)
    assert [h.base_offset for h in headers] == [0, 3]
    assert {h.partition_leader_epoch for h in headers} == {7}
    assert log.log_end_offset == 5
    assert read_all(log) == bytes(data)
    result, _ = append(log, batch(1))
    assert (result.first_offset, result.last_offset) == (5, 5)


def test_append_with_log_append_time_stamps_and_resigns() -> None:
    log = open_log(message_timestamp_type="LogAppendTime")
    result, data = append(log, batch(2, timestamp_ms=5), now_ms=9_999)
    assert result.log_append_time_ms == 9_999
    header = read_header(data)
    assert header.attributes & TIMESTAMP_TYPE_MASK
    assert header.max_timestamp == 9_999
    assert crc_of(data, 0, header.size) == header.crc
    _, records = decode_batch(read_all(log))
    assert [r.timestamp_ms for r in records] == [9_999, 9_999]


def test_high_watermark_is_clamped_and_monotonic() -> None:
    log = open_log()
    fill(log, 3)
    log.set_high_watermark(10)
    assert log.high_watermark == 3
    log.set_high_watermark(1)
    assert log.high_watermark == 3  # only truncate_to lowers it


# ------------------------------------------------------------------ roll


def test_roll_by_size() -> None:
    log = open_log(segment_bytes=3 * SIZE)
    fill(log, 7)
    assert [s.base_offset for s in log.segments] == [0, 3, 6]
    assert all(s.size <= 3 * SIZE for s in log.segments)
    # A batch bigger than a segment goes whole into a fresh segment.
    append(log, batch(1, value_bytes=10 * SIZE))
    assert [s.base_offset for s in log.segments] == [0, 3, 6, 7]
    assert log.segments[-1].size > 3 * SIZE


def test_roll_by_time_only_on_append() -> None:
    log = open_log(segment_ms=100, now_ms=1_000)
    append(log, ONE, now_ms=1_000)
    append(log, ONE, now_ms=1_100)  # exactly segment.ms old: not yet
    assert len(log.segments) == 1
    log.maybe_roll(now_ms=5_000)  # an explicit check rolls an old segment
    assert len(log.segments) == 2
    append(log, ONE, now_ms=5_000)
    append(log, ONE, now_ms=5_101)
    assert [s.base_offset for s in log.segments] == [0, 2, 3]


def test_roll_when_the_index_is_full() -> None:
    log = open_log(segment_index_bytes=16, index_interval_bytes=0)  # two offset entries
    fill(log, 6)
    assert len(log.segments) > 1
    assert all(len(s.offset_index) <= 2 for s in log.segments)


def test_empty_segment_never_rolls() -> None:
    log = open_log()
    log.roll(now_ms=2_000)
    log.maybe_roll(now_ms=10**12)
    assert len(log.segments) == 1


def test_inactive_segment_indexes_are_written_on_roll() -> None:
    disk = SimDisk(random.Random(0))
    log = open_log(disk, segment_bytes=4 * SIZE, index_interval_bytes=0)
    fill(log, 5)
    first = log.segments[0]
    assert disk.read_file(first.path(".index")) == first.offset_index.to_bytes()
    assert len(first.offset_index) == 3  # every batch but the first (Kafka's rule)
    assert disk.read_file(first.path(".timeindex")) == first.time_index.to_bytes()


# ------------------------------------------------------------------ read


def test_read_from_inside_a_batch_returns_that_whole_batch() -> None:
    log = open_log()
    _, first = append(log, batch(3))
    _, second = append(log, batch(3))
    for offset in (0, 1, 2):
        assert read_all(log, offset) == bytes(first + second)
    assert read_all(log, 4) == bytes(second)
    assert log.read(6, 1000, 6).size == 0  # at LEO: nothing yet


def test_read_stops_before_upper_offset() -> None:
    log = open_log()
    fill(log, 5)
    result = log.read(0, 10_000, upper_offset=3)
    assert result.size == 3 * SIZE
    assert log.read(3, 10_000, upper_offset=3).size == 0
    assert log.read(4, 10_000, upper_offset=2).size == 0


def test_read_respects_max_bytes_with_whole_batches() -> None:
    log = open_log()
    fill(log, 5)
    assert log.read(0, 2 * SIZE + 5, 5).size == 2 * SIZE
    assert log.read(0, 2 * SIZE, 5).size == 2 * SIZE


def test_read_kip74_first_batch_whole_even_if_larger() -> None:
    log = open_log()
    big = batch(1, value_bytes=500)
    append(log, big)
    fill(log, 2)
    result = log.read(0, 10, 3)
    assert result.size == len(big)
    assert log.read(0, 10, 3, min_one_batch=False).size == 0


def test_read_out_of_range() -> None:
    log = open_log()
    fill(log, 3)
    for offset in (-1, 4):
        with pytest.raises(KafkaError) as caught:
            log.read(offset, 100, 3)
        assert caught.value.code == ErrorCode.offset_out_of_range
    log.set_high_watermark(3)
    log.delete_records_before(2)
    with pytest.raises(KafkaError):
        log.read(1, 100, 3)
    assert log.read(2, 100, 3).size == SIZE


def test_read_spans_segments_with_one_range_each() -> None:
    log = open_log(segment_bytes=2 * SIZE)
    fill(log, 5)
    result = log.read(1, 10_000, 5)
    assert [r.size for r in result.ranges] == [SIZE, 2 * SIZE, SIZE]
    assert [r.position for r in result.ranges] == [SIZE, 0, 0]
    assert result.size == 4 * SIZE


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 200), min_size=1, max_size=25),
    interval=st.sampled_from([0, 50, 300, 4096]),
    segment_bytes=st.sampled_from([300, 1000, 10**6]),
    data=st.data(),
)
def test_read_matches_a_linear_scan(
    sizes: list[int], interval: int, segment_bytes: int, data: st.DataObject
) -> None:
    """Whatever the index density and segment size, read() equals the obvious answer."""
    log = open_log(index_interval_bytes=interval, segment_bytes=segment_bytes)
    stored: list[bytes] = []
    for i, value_bytes in enumerate(sizes):
        _, patched = append(log, batch(1 + i % 3, value_bytes=value_bytes))
        stored.append(bytes(patched))
    leo = log.log_end_offset
    fetch = data.draw(st.integers(0, leo))
    upper = data.draw(st.integers(0, leo + 2))
    max_bytes = data.draw(st.integers(0, 3000))
    min_one = data.draw(st.booleans())
    expected = b""
    for raw in stored:
        header = read_header(raw)
        if header.last_offset < fetch:
            continue
        if header.last_offset >= upper:
            break
        if len(expected) + len(raw) > max_bytes and not (min_one and not expected):
            break
        expected += raw
    result = log.read(fetch, max_bytes, upper, min_one_batch=min_one)
    got = b"".join(log.read_bytes(r) for r in result.ranges)
    assert got == expected
    assert result.size == len(expected)


# ------------------------------------------------------------------ timestamps


def test_offset_for_timestamp_finds_the_exact_record() -> None:
    log = open_log(segment_bytes=400, index_interval_bytes=0)
    append(log, batch(timestamps=[100, 300, 200]))  # offsets 0..2
    append(log, batch(timestamps=[400, 500]))  # offsets 3..4
    append(log, batch(timestamps=[450]))  # offset 5
    assert log.offset_for_timestamp(0) == (0, 100)
    assert log.offset_for_timestamp(150) == (1, 300)
    assert log.offset_for_timestamp(300) == (1, 300)
    assert log.offset_for_timestamp(301) == (3, 400)
    assert log.offset_for_timestamp(460) == (4, 500)
    assert log.offset_for_timestamp(501) is None
    assert log.max_timestamp() == (4, 500)


def test_offset_for_timestamp_across_many_segments() -> None:
    log = open_log(segment_bytes=3 * SIZE, index_interval_bytes=0)
    for i in range(20):
        append(log, batch(timestamp_ms=1_000 + 10 * i))
    assert len(log.segments) > 5
    for i in range(20):
        assert log.offset_for_timestamp(1_000 + 10 * i - 5) == (i, 1_000 + 10 * i)
    assert log.max_timestamp() == (19, 1_190)


def test_timestamps_respect_the_log_start() -> None:
    log = open_log()
    append(log, batch(timestamps=[900, 100, 200]))
    log.set_high_watermark(3)
    log.delete_records_before(1)
    assert log.offset_for_timestamp(0) == (1, 100)
    assert log.max_timestamp() == (2, 200)


def test_timestamps_with_log_append_time() -> None:
    log = open_log(message_timestamp_type="LogAppendTime")
    append(log, batch(2), now_ms=5_000)
    append(log, batch(2), now_ms=6_000)
    assert log.offset_for_timestamp(5_500) == (2, 6_000)
    assert log.max_timestamp() == (2, 6_000)


def test_no_timestamps_in_an_empty_log() -> None:
    log = open_log()
    assert log.offset_for_timestamp(0) is None
    assert log.max_timestamp() is None


# ------------------------------------------------------------------ retention and deletion


def test_retention_by_time_deletes_old_segments_below_hw() -> None:
    log = open_log(segment_bytes=2 * SIZE, retention_ms=1_000, file_delete_delay_ms=0)
    for ts in (1_000, 1_000, 2_000, 2_000, 9_000):
        append(log, batch(timestamp_ms=ts), now_ms=ts)
    assert [s.base_offset for s in log.segments] == [0, 2, 4]
    log.set_high_watermark(3)  # the second segment holds HW: it must stay
    assert log.enforce_retention(now_ms=10_000) == 1
    assert log.log_start_offset == 2
    log.set_high_watermark(5)
    assert log.enforce_retention(now_ms=10_000) == 1
    assert log.log_start_offset == 4
    assert log.enforce_retention(now_ms=10_000) == 0  # the active segment is too young


def test_retention_by_time_can_take_the_active_segment_after_a_roll() -> None:
    log = open_log(retention_ms=1_000)
    fill(log, 3, now_ms=1_000)
    log.set_high_watermark(3)
    assert log.enforce_retention(now_ms=5_000) == 1
    assert [s.base_offset for s in log.segments] == [3]
    assert log.log_start_offset == log.log_end_offset == 3
    assert log.read(3, 100, 3).size == 0
    result, _ = append(log, ONE)
    assert result.first_offset == 3


def test_retention_by_size_deletes_oldest_first() -> None:
    log = open_log(segment_bytes=2 * SIZE, retention_bytes=3 * SIZE, retention_ms=-1)
    fill(log, 7)
    log.set_high_watermark(7)
    assert log.enforce_retention(now_ms=1_000) == 2
    assert log.log_start_offset == 4
    assert log.size_bytes <= 3 * SIZE


def test_retention_only_with_delete_policy() -> None:
    log = open_log(retention_ms=0, cleanup_policy=("compact",))
    fill(log, 2)
    log.set_high_watermark(2)
    log.roll(now_ms=1_000)
    assert log.enforce_retention(now_ms=10**9) == 0


def test_deleted_segments_stay_readable_until_their_delay() -> None:
    disk = SimDisk(random.Random(0))
    log = open_log(disk, segment_bytes=2 * SIZE, retention_ms=0, file_delete_delay_ms=500)
    fill(log, 5)
    handed_out = log.read(0, 10_000, 5)
    before = b"".join(log.read_bytes(r) for r in handed_out.ranges)
    log.set_high_watermark(5)
    assert log.enforce_retention(now_ms=2_000) == 3
    names = disk.listdir(DIR)
    assert "00000000000000000000.log.deleted" in names
    assert "00000000000000000000.log" not in names
    assert b"".join(log.read_bytes(r) for r in handed_out.ranges) == before
    log.tick(now_ms=2_499)
    assert "00000000000000000000.log.deleted" in disk.listdir(DIR)
    log.tick(now_ms=2_500)
    assert not [n for n in disk.listdir(DIR) if n.endswith(".deleted")]


def test_delete_records_before() -> None:
    log = open_log(segment_bytes=2 * SIZE)
    fill(log, 5)
    with pytest.raises(KafkaError) as caught:
        log.delete_records_before(1)  # above HW (0)
    assert caught.value.code == ErrorCode.offset_out_of_range
    log.set_high_watermark(5)
    assert log.delete_records_before(3) == 3
    assert [s.base_offset for s in log.segments] == [2, 4]
    assert log.delete_records_before(1) == 3  # never backwards
    assert log.delete_records_before(5) == 5
    assert [s.base_offset for s in log.segments] == [4]  # the active segment stays
    assert log.read(5, 100, 5).size == 0


# ------------------------------------------------------------------ truncation


def test_truncate_inside_a_segment() -> None:
    log = open_log(segment_bytes=3 * SIZE, index_interval_bytes=0)
    fill(log, 8)
    kept = read_all(log)[: 4 * SIZE]
    log.set_high_watermark(8)
    log.truncate_to(4)
    assert log.log_end_offset == 4
    assert log.high_watermark == 4
    assert [s.base_offset for s in log.segments] == [0, 3]
    assert read_all(log) == kept
    result, _ = append(log, ONE)
    assert result.first_offset == 4


def test_truncate_at_a_segment_base_keeps_it_empty() -> None:
    log = open_log(segment_bytes=3 * SIZE)
    fill(log, 8)
    log.truncate_to(3)
    assert [s.base_offset for s in log.segments] == [0, 3]
    assert log.segments[-1].size == 0
    assert log.log_end_offset == 3


def test_truncate_inside_a_batch_drops_the_whole_batch() -> None:
    log = open_log()
    append(log, batch(3))
    append(log, batch(3))
    log.truncate_to(4)
    assert log.log_end_offset == 3


def test_truncate_updates_timestamps() -> None:
    log = open_log(index_interval_bytes=0)
    for ts in (100, 500, 300, 900):
        append(log, batch(timestamp_ms=ts))
    log.truncate_to(3)
    assert log.max_timestamp() == (1, 500)
    assert log.offset_for_timestamp(600) is None
    log.truncate_to(1)
    assert log.max_timestamp() == (0, 100)


def test_truncate_below_the_first_segment_restarts_the_log() -> None:
    log = open_log(segment_bytes=2 * SIZE)
    fill(log, 6)
    log.set_high_watermark(6)
    log.delete_records_before(4)
    log.truncate_to(2)
    assert [s.base_offset for s in log.segments] == [2]
    assert (log.log_start_offset, log.log_end_offset, log.high_watermark) == (2, 2, 2)
    assert append(log, ONE)[0].first_offset == 2


def test_truncate_at_or_above_leo_is_a_no_op() -> None:
    log = open_log()
    fill(log, 2)
    log.truncate_to(2)
    log.truncate_to(10)
    assert log.log_end_offset == 2


# ------------------------------------------------------------------ flush, close, reopen


def test_flush_moves_the_recovery_point() -> None:
    log = open_log()
    assert log.begin_flush() is None
    fill(log, 2)
    job = log.begin_flush()
    assert job is not None and job.upto_offset == 2
    fill(log, 1)
    job.run()
    log.complete_flush(job)
    assert log.recovery_point == 2
    log.flush_now()
    assert log.recovery_point == 3
    assert log.begin_flush() is None


def test_flush_begun_before_a_truncation_does_not_count() -> None:
    log = open_log()
    fill(log, 2)
    log.flush_now()
    fill(log, 2)
    job = log.begin_flush()
    assert job is not None and job.upto_offset == 4
    log.truncate_to(3)
    fill(log, 3)  # offsets 3..5 are new and unflushed
    job.run()
    log.complete_flush(job)
    assert log.recovery_point == 2


def test_close_and_reopen_keeps_everything(tmp_path: Path) -> None:
    path = str(tmp_path / "t-0")
    disk = RealDisk()
    log = PartitionLog.open(disk, path, config(segment_bytes=3 * SIZE), 1_000)
    fill(log, 8)
    log.set_high_watermark(6)
    log.delete_records_before(4)
    before = read_all(log)
    log.close()
    indexes = [(s.offset_index.to_bytes(), s.time_index.to_bytes()) for s in log.segments]
    assert "clean-shutdown" in disk.listdir(path)
    log = PartitionLog.open(disk, path, config(segment_bytes=3 * SIZE), 2_000)
    assert "clean-shutdown" not in disk.listdir(path)
    assert (log.log_start_offset, log.high_watermark, log.log_end_offset) == (4, 6, 8)
    assert log.recovery_point == 8
    assert read_all(log) == before
    assert [(s.offset_index.to_bytes(), s.time_index.to_bytes()) for s in log.segments] == indexes
    assert append(log, ONE)[0].first_offset == 8
    log.close()


def test_update_config_takes_effect_on_the_next_append() -> None:
    log = open_log()
    fill(log, 3)
    log.update_config(config(segment_bytes=3 * SIZE))
    fill(log, 1)
    assert [s.base_offset for s in log.segments] == [0, 3]


def test_delete_renames_the_directory_away_for_a_removal_off_the_loop() -> None:
    disk = SimDisk(random.Random(0))
    disk.loop_guard = True
    log = open_log(disk)
    fill(log, 2)
    with disk.off_loop():
        log.flush_now()
    doomed = log.delete()
    assert doomed == DIR + ".0-delete" and not disk.exists(DIR)
    assert "00000000000000000000.log" in disk.listdir(doomed), "renamed whole"
    assert disk.loop_syncs == [], "the deletion itself makes no fsync"
    # Deleted again before the first removal ran: another name.
    again = open_log(disk)
    assert again.log_end_offset == 0
    assert again.delete() == DIR + ".1-delete"
    with disk.off_loop():
        remove_deleted_dir(disk, doomed)
    assert not disk.exists(doomed)
    # A crash before the other removal: start-up removes it.
    disk.crash()
    with disk.off_loop():
        assert remove_deleted_dirs(disk, os.path.dirname(DIR)) == 1
    assert not [n for n in disk.listdir(os.path.dirname(DIR)) if n.startswith(os.path.basename(DIR))]


def test_a_truncation_is_durable_only_with_a_job_that_synced_all_it_changed() -> None:
    disk = SimDisk(random.Random(0))
    disk.loop_guard = True  # the log itself makes no sync: its jobs do
    with disk.off_loop():
        log = open_log(disk)
    fill(log, 6)
    with disk.off_loop():
        log.flush_now()
    log.set_high_watermark(6)
    log.truncate_to(3)
    assert not log.cut_durable and log.needs_flush
    # A job begun now (a clean's, in the cleaner thread) takes the lowered checkpoints; one
    # begun later syncs them again, so whichever completes first vouches for the cut alone.
    first = log.begin_flush()
    second = log.begin_flush()
    assert first is not None and second is not None
    assert set(first.sync_paths) <= set(second.sync_paths)
    assert any(p.endswith("recovery-point") for p in second.sync_paths)
    assert second.dirs_first and DIR in second.sync_dirs
    with disk.off_loop():
        second.run()
    log.complete_flush(second)
    assert log.cut_durable and log.changes_durable
    assert disk.loop_syncs == []
    disk.crash()
    with disk.off_loop():
        log = open_log(disk)
    assert log.log_end_offset == 3  # the cut survived the crash
