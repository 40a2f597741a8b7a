import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ackly.protocol.frames import FrameDecoder, FrameError


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
    d = FrameDecoder(10_000, small_buffer_bytes=64, large_frame_bytes=100)
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
