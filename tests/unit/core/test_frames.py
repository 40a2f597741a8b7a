import itertools
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ackly.protocol.frames import FrameDecoder, FrameError, new_scratch


def frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def test_frames_split_anywhere_come_out_whole() -> None:
    stream = frame(b"one") + frame(b"") + frame(b"three" * 100)
    for cut in range(len(stream) + 1):
        d = FrameDecoder(1024)
        got = []
        for part in (stream[:cut], stream[cut:]):
            d.receive_data(part)
            while (f := d.next_frame()) is not None:
                got.append(f)
        assert got == [b"one", b"", b"three" * 100]


def test_negative_size_is_a_frame_error() -> None:
    d = FrameDecoder(1024)
    d.receive_data(struct.pack(">i", -1))
    with pytest.raises(FrameError, match="negative"):
        d.next_frame()


def test_oversized_frame_is_refused_before_it_is_buffered() -> None:
    d = FrameDecoder(100)
    d.receive_data(struct.pack(">i", 101))
    with pytest.raises(FrameError, match=r"socket\.request\.max\.bytes"):
        d.next_frame()


@given(st.lists(st.binary(max_size=300), max_size=20), st.integers(1, 50))
def test_any_chunking_preserves_frames(payloads: list[bytes], chunk: int) -> None:
    stream = b"".join(frame(p) for p in payloads)
    d = FrameDecoder(1000)
    got = []
    for i in range(0, len(stream), chunk):
        d.receive_data(stream[i : i + chunk])
        while (f := d.next_frame()) is not None:
            got.append(f)
    assert got == payloads
    assert d.buffered_bytes == 0


@given(st.binary(max_size=200))
def test_garbage_gives_frames_none_or_frame_error(data: bytes) -> None:
    d = FrameDecoder(64)
    d.receive_data(data)
    try:
        while d.next_frame() is not None:
            pass
    except FrameError:
        pass


@given(st.lists(st.binary(max_size=3000), max_size=12), st.integers(1, 700))
def test_buffer_protocol_path_preserves_frames(payloads: list[bytes], chunk: int) -> None:
    """get_buffer/buffer_updated as an asyncio BufferedProtocol drives it, with small
    thresholds so that large frames take their own buffer."""
    stream = b"".join(frame(p) for p in payloads)
    d = FrameDecoder(10_000, small_buffer_bytes=128, large_frame_bytes=100, grow_min_bytes=32)
    got = []
    pos = 0
    while pos < len(stream):
        buf = d.get_buffer()
        n = min(len(buf), chunk, len(stream) - pos)
        buf[:n] = stream[pos : pos + n]
        del buf
        d.buffer_updated(n)
        pos += n
        while (f := d.next_frame()) is not None:
            got.append(bytes(f))
    assert got == payloads
    assert d.buffered_bytes == 0


def test_a_large_frame_is_received_into_its_own_buffer() -> None:
    d = FrameDecoder(1 << 20, large_frame_bytes=1000)
    payload = bytes(range(256)) * 40
    data = frame(payload)
    d.receive_data(data[:500])
    assert d.next_frame() is None
    buf = d.get_buffer()
    assert len(buf) == len(payload) - 496  # exactly the rest of the frame
    buf[:] = data[500:]
    del buf
    d.buffer_updated(len(data) - 500)
    got = d.next_frame()
    assert isinstance(got, memoryview) and got.readonly and bytes(got) == payload


def test_a_declared_length_alone_allocates_nothing() -> None:
    d = FrameDecoder(100 * 1024 * 1024)
    d.receive_data(struct.pack(">i", 100 * 1024 * 1024))
    assert d.next_frame() is None
    assert d.held_bytes == 4
    assert d.growth_bytes() == 0
    assert d.frame_in_progress


@given(st.integers(1001, 60_000), st.lists(st.integers(1, 5000), min_size=1, max_size=50))
def test_a_large_frame_buffer_grows_only_with_the_bytes_that_arrived(
    size: int, chunks: list[int]
) -> None:
    """Capacity never exceeds max(2 x received, grow_min_bytes), and the frame comes out
    whole and without a copy once its last byte arrives."""
    grow_min = 512
    d = FrameDecoder(1 << 20, large_frame_bytes=1000, grow_min_bytes=grow_min)
    payload = (bytes(range(251)) * (size // 251 + 1))[:size]
    stream = frame(payload)
    pos = 0
    for i in itertools.count():
        if pos >= len(stream):
            break
        chunk = chunks[i % len(chunks)]
        buf = d.get_buffer()
        n = min(len(buf), chunk, len(stream) - pos)
        buf[:n] = stream[pos : pos + n]
        del buf
        d.buffer_updated(n)
        pos += n
        received_body = max(pos - 4, 0)
        if pos < len(stream):
            assert d.held_bytes <= max(2 * received_body, grow_min) + 4
            assert d.next_frame() is None
    got = d.next_frame()
    assert got is not None and bytes(got) == payload
    assert d.held_bytes == 0 and d.buffered_bytes == 0


def test_growth_bytes_announces_the_next_allocation() -> None:
    d = FrameDecoder(1 << 20, large_frame_bytes=1000, grow_min_bytes=4096)
    d.receive_data(struct.pack(">i", 100_000) + bytes(3000))
    assert d.held_bytes == 6000  # 2 x 3000 body bytes
    assert d.growth_bytes() == 0
    d.receive_data(bytes(3000))
    assert d.growth_bytes() == 6000  # full: the next get_buffer doubles it
    d.get_buffer()
    assert d.held_bytes == 12000 and d.growth_bytes() == 0


def test_decoders_may_share_one_scratch_buffer() -> None:
    """Each buffer_updated empties the scratch, so connections can take turns in it."""
    scratch = new_scratch(4096)
    a = FrameDecoder(1 << 20, scratch=scratch, large_frame_bytes=1000)
    b = FrameDecoder(1 << 20, scratch=scratch, large_frame_bytes=1000)
    sa = frame(b"alpha" * 100) + frame(b"A" * 3000)
    sb = frame(b"beta" * 100) + frame(b"B" * 50)
    got: dict[str, list[bytes]] = {"a": [], "b": []}
    for i in range(0, max(len(sa), len(sb)), 7):
        for name, d, s in (("a", a, sa), ("b", b, sb)):
            part = s[i : i + 7]
            if part:
                d.receive_data(part)
                while (f := d.next_frame()) is not None:
                    got[name].append(bytes(f))
    assert got == {"a": [b"alpha" * 100, b"A" * 3000], "b": [b"beta" * 100, b"B" * 50]}


def test_frames_before_a_bad_size_are_delivered_first() -> None:
    d = FrameDecoder(1024)
    d.receive_data(frame(b"ok") + struct.pack(">i", -5))
    assert d.next_frame() == b"ok"
    with pytest.raises(FrameError, match="negative"):
        d.next_frame()
