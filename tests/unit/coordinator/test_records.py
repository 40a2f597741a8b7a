"""`__consumer_offsets` records in Kafka's formats, and Kafka's group -> partition mapping.

Expected bytes are written out here field by field from Kafka's schemas (OffsetCommitKey,
OffsetCommitValue, GroupMetadataKey, GroupMetadataValue in Kafka's group-coordinator module),
not produced by the encoder under test.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ackly.coordinator.group_coordinator import java_string_hash, partition_for
from ackly.coordinator.records import (
    GroupMetadataKey,
    GroupMetadataValue,
    MemberMetadata,
    OffsetCommitKey,
    OffsetCommitValue,
    RecordFormatError,
    decode_group_metadata_value,
    decode_key,
    decode_key_uncached,
    decode_offset_commit_value,
    decode_offset_commit_value_general,
    encode_group_metadata_value,
    encode_key,
    encode_offset_commit_value,
    subscribed_topics,
)


def s16(text: str | None) -> bytes:
    if text is None:
        return struct.pack(">h", -1)
    raw = text.encode()
    return struct.pack(">h", len(raw)) + raw


def b32(data: bytes) -> bytes:
    return struct.pack(">i", len(data)) + data


def compact(text: str | None) -> bytes:
    if text is None:
        return b"\x00"
    raw = text.encode()
    assert len(raw) < 127
    return bytes([len(raw) + 1]) + raw


def test_keys_are_kafkas_bytes() -> None:
    assert encode_key(OffsetCommitKey("g", "t", 3)) == (
        struct.pack(">h", 1) + s16("g") + s16("t") + struct.pack(">i", 3))
    assert encode_key(GroupMetadataKey("grp")) == struct.pack(">h", 2) + s16("grp")
    # Older Kafka wrote offset keys with record type 0: same layout
    legacy = struct.pack(">h", 0) + s16("g") + s16("t") + struct.pack(">i", 9)
    assert decode_key(legacy) == OffsetCommitKey("g", "t", 9)


def test_offset_commit_value_v3_and_v1_bytes() -> None:
    v3 = OffsetCommitValue(offset=42, leader_epoch=5, metadata="m", commit_timestamp_ms=1000)
    assert encode_offset_commit_value(v3) == (
        struct.pack(">hqi", 3, 42, 5) + s16("m") + struct.pack(">q", 1000))
    v1 = OffsetCommitValue(offset=42, leader_epoch=-1, metadata="", commit_timestamp_ms=1000,
                           expire_timestamp_ms=5000)
    assert encode_offset_commit_value(v1) == (
        struct.pack(">hq", 1, 42) + s16("") + struct.pack(">qq", 1000, 5000))
    assert decode_offset_commit_value(encode_offset_commit_value(v1)) == v1


def test_offset_commit_values_of_every_version_decode() -> None:
    v0 = struct.pack(">hq", 0, 7) + s16("x") + struct.pack(">q", 11)
    v2 = struct.pack(">hq", 2, 7) + s16("x") + struct.pack(">q", 11)
    v4 = struct.pack(">hqi", 4, 7, 2) + compact("x") + struct.pack(">q", 11) + b"\x00"
    assert decode_offset_commit_value(v0) == OffsetCommitValue(7, -1, "x", 11)
    assert decode_offset_commit_value(v2) == OffsetCommitValue(7, -1, "x", 11)
    assert decode_offset_commit_value(v4) == OffsetCommitValue(7, 2, "x", 11)


def test_group_metadata_value_v3_bytes() -> None:
    value = GroupMetadataValue(
        protocol_type="consumer", generation=4, protocol="range", leader="m1",
        current_state_timestamp_ms=99,
        members=(MemberMetadata("m1", "i1", "client", "/1.2.3.4", 300, 10, b"sub", b"asg"),),
    )
    expected = (
        struct.pack(">h", 3) + s16("consumer") + struct.pack(">i", 4) + s16("range") + s16("m1")
        + struct.pack(">q", 99) + struct.pack(">i", 1)
        + s16("m1") + s16("i1") + s16("client") + s16("/1.2.3.4") + struct.pack(">ii", 300, 10)
        + b32(b"sub") + b32(b"asg")
    )
    assert encode_group_metadata_value(value) == expected


def test_group_metadata_values_of_older_and_flexible_versions_decode() -> None:
    v0 = (struct.pack(">h", 0) + s16("consumer") + struct.pack(">i", 1) + s16(None) + s16(None)
          + struct.pack(">i", 1) + s16("m") + s16("c") + s16("h") + struct.pack(">i", 6000)
          + b32(b"s") + b32(b"a"))
    got = decode_group_metadata_value(v0)
    assert got.current_state_timestamp_ms == -1
    assert got.members[0].rebalance_timeout_ms == 6000, "v0 has none: the session timeout"
    v4 = (struct.pack(">h", 4) + compact("consumer") + struct.pack(">i", 2) + compact("range")
          + compact("m") + struct.pack(">q", 5) + bytes([2])
          + compact("m") + compact(None) + compact("c") + compact("h") + struct.pack(">ii", 7, 8)
          + bytes([2]) + b"s" + bytes([2]) + b"a" + b"\x00"
          + b"\x01" + b"\x05\x02zz")  # one unknown tagged field, skipped
    got = decode_group_metadata_value(v4)
    assert got == GroupMetadataValue("consumer", 2, "range", "m", 5,
                                     (MemberMetadata("m", None, "c", "h", 7, 8, b"s", b"a"),))


@pytest.mark.parametrize("data", [b"", b"\x00\x07", struct.pack(">h", 9) + b"rest",
                                  struct.pack(">h", 2) + struct.pack(">h", 50) + b"short"])
def test_garbage_is_a_record_format_error(data: bytes) -> None:
    with pytest.raises(RecordFormatError):
        decode_key(data)
    with pytest.raises(RecordFormatError):
        decode_group_metadata_value(data)
    with pytest.raises(RecordFormatError):
        decode_offset_commit_value(data)


text = st.text(max_size=20)
blobs = st.binary(max_size=40)


@given(
    key=st.one_of(st.builds(OffsetCommitKey, text, text, st.integers(0, 2**31 - 1)),
                  st.builds(GroupMetadataKey, text)),
    offset=st.builds(OffsetCommitValue, st.integers(-1, 2**63 - 1), st.integers(-1, 2**31 - 1),
                     text, st.integers(0, 2**62), st.just(-1)),
    group=st.builds(
        GroupMetadataValue, text, st.integers(0, 2**31 - 1), st.none() | text, st.none() | text,
        st.integers(-1, 2**62),
        st.lists(st.builds(MemberMetadata, text, st.none() | text, text, text,
                           st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1), blobs, blobs),
                 max_size=4).map(tuple),
    ),
)
def test_round_trips(key, offset, group) -> None:  # type: ignore[no-untyped-def]
    assert decode_key(encode_key(key)) == key
    assert decode_offset_commit_value(encode_offset_commit_value(offset)) == offset
    assert decode_group_metadata_value(encode_group_metadata_value(group)) == group


def test_subscribed_topics_of_a_consumer_subscription() -> None:
    v1 = struct.pack(">hi", 1, 2) + s16("a") + s16("b") + b32(b"") + struct.pack(">i", 0)
    assert subscribed_topics(v1) == {"a", "b"}
    assert subscribed_topics(b"\x00") is None


def test_java_string_hash_and_kafkas_partition_for() -> None:
    assert java_string_hash("") == 0
    assert java_string_hash("hello") == 99162322
    assert java_string_hash("Aa") == java_string_hash("BB") == 2112
    assert java_string_hash("\U0001f600") == 31 * 0xD83D + 0xDE00  # UTF-16 surrogate pair
    # Its hash is Integer.MIN_VALUE, whose Utils.abs is 0 in Kafka (not MIN_VALUE).
    assert java_string_hash("polygenelubricants") == -(2**31)
    assert partition_for("polygenelubricants", 50) == 0
    assert partition_for("hello", 50) == 99162322 % 50
    assert partition_for("x" * 10, 7) == abs(java_string_hash("x" * 10)) % 7


def _decoded(decode, data: bytes):  # type: ignore[no-untyped-def]
    try:
        return ("ok", decode(data))
    except RecordFormatError as exc:
        return ("bad", str(exc))


@given(st.one_of(
    st.builds(lambda o, e, m, t, x: encode_offset_commit_value(OffsetCommitValue(o, e, m, t, x)),
              st.integers(-(2**63), 2**63 - 1), st.integers(-(2**31), 2**31 - 1), st.text(max_size=20),
              st.integers(-(2**63), 2**63 - 1), st.sampled_from([-1, 5])),
    st.binary(max_size=40).map(lambda b: b"\x00\x03" + b),
    st.binary(max_size=40),
))
def test_offset_commit_value_shortcut_decodes_as_the_general_reader(data: bytes) -> None:
    assert _decoded(decode_offset_commit_value, data) == _decoded(decode_offset_commit_value_general, data)


@given(st.one_of(
    st.builds(lambda g, t, p: encode_key(OffsetCommitKey(g, t, p)), st.text(max_size=10),
              st.text(max_size=10), st.integers(-(2**31), 2**31 - 1)),
    st.binary(max_size=30),
))
def test_cached_keys_decode_as_uncached(data: bytes) -> None:
    expected = _decoded(decode_key_uncached, data)
    assert _decoded(decode_key, data) == expected
    assert _decoded(decode_key, data) == expected  # the second time from the cache
