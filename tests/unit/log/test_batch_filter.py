"""batch_filter.py: the record scan and batch rebuild the cleaner uses, and the key check of a
produce to a compacted topic."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ackly.errors import ErrorCode, KafkaError
from ackly.log.batch_filter import (
    DELETE_HORIZON_FLAG,
    filter_records,
    rebuild_batch,
    records_section,
    require_keys,
    scan_records,
)
from ackly.protocol.record_codec import Record, decode_batch, encode_batch
from ackly.protocol.records import read_header, validate_batches

CODECS = [0, 1, 2, 3, 4]
records_strategy = st.lists(
    st.tuples(st.one_of(st.none(), st.binary(max_size=300)), st.one_of(st.none(), st.binary(max_size=300)),
              st.integers(0, 10**6)),
    min_size=1, max_size=30,
)


@settings(max_examples=80, deadline=None)
@given(records_strategy, st.sampled_from(CODECS), st.data())
def test_scan_and_rebuild_keep_offsets_keys_values_and_timestamps(rows, codec, data) -> None:
    batch = encode_batch([Record(key=k, value=v, timestamp_ms=1_000 + t) for k, v, t in rows],
                         base_offset=500, compression=codec, producer_id=3, producer_epoch=1,
                         base_sequence=40)
    header = read_header(batch)
    section = records_section(batch, header)
    scanned = scan_records(section, header)
    _, decoded = decode_batch(batch)
    assert [(r.offset, r.key, r.value is not None, r.timestamp_ms) for r in decoded] == \
        [(r.offset, r.key, r.has_value, r.timestamp_ms) for r in scanned]
    keep = data.draw(st.lists(st.booleans(), min_size=len(scanned), max_size=len(scanned)))
    kept = [r for r, k in zip(scanned, keep, strict=True) if k]
    horizon = data.draw(st.one_of(st.none(), st.integers(0, 10**7)))
    rebuilt = rebuild_batch(header, section, kept, horizon)
    (new_header,) = validate_batches(rebuilt, 1 << 30, allow_empty=True)
    assert new_header.base_offset == 500 and new_header.last_offset == header.last_offset
    assert new_header.last_sequence == header.last_sequence  # the producer's state survives
    assert new_header.compression == (codec if kept else 0)
    assert bool(new_header.attributes & DELETE_HORIZON_FLAG) == (horizon is not None)
    _, after = decode_batch(rebuilt)
    wanted = [r for r, k in zip(decoded, keep, strict=True) if k]
    assert [(r.offset, r.key, r.value, r.timestamp_ms) for r in after] == \
        [(r.offset, r.key, r.value, r.timestamp_ms) for r in wanted]


def test_filter_drops_superseded_keyless_and_expired_tombstones() -> None:
    batch = encode_batch([Record(b"a", b"1"), Record(None, b"x"), Record(b"b", None), Record(b"c", b"3")],
                         base_offset=10)
    header = read_header(batch)
    section = records_section(batch, header)
    kept, tombstones = filter_records(section, header, {b"a": 99, b"c": 13}, drop_tombstones=False)
    assert [(r.offset, r.key) for r in kept] == [(12, b"b"), (13, b"c")] and tombstones
    kept, tombstones = filter_records(section, header, {}, drop_tombstones=True)
    assert [(r.offset, r.key) for r in kept] == [(10, b"a"), (13, b"c")] and not tombstones


@pytest.mark.parametrize("codec", CODECS)
def test_require_keys_refuses_a_record_without_a_key(codec: int) -> None:
    good = encode_batch([Record(b"k", b"v")], compression=codec)
    bad = encode_batch([Record(b"k", b"v"), Record(None, b"v")], compression=codec)
    require_keys(good, validate_batches(good, 1 << 20))
    both = good + bad
    with pytest.raises(KafkaError) as caught:
        require_keys(both, validate_batches(both, 1 << 20))
    assert caught.value.code == ErrorCode.invalid_record
