"""The receive path of a connection alone: FrameDecoder throughput, in CPU time.

Run: `.venv/bin/python bench/frames.py [--seconds S]`

Feeds a stream of request frames through get_buffer / buffer_updated / next_frame as an
asyncio BufferedProtocol would, copying each "recv" of at most RECV_BYTES into the buffer the
decoder gives (as the kernel does), and reports MB/s of frame bytes per CPU second of this
process (time.process_time: the figure is not skewed much by other work on the machine).
It prints numbers and asserts nothing. MB means 10**6 bytes.
"""

from __future__ import annotations

import argparse
import statistics
import struct
import time

from ackly.protocol.frames import FrameDecoder

RECV_BYTES = 256 * 1024
MAX_FRAME_BYTES = 100 * 1024 * 1024


def stream_of(frame_bytes: int, total_bytes: int) -> bytes:
    body = bytes(range(256)) * (frame_bytes // 256) + bytes(frame_bytes % 256)
    frame = struct.pack(">i", len(body)) + body
    return frame * max(1, total_bytes // len(frame))


def run_once(stream: bytes) -> tuple[float, int]:
    """CPU seconds to decode the stream, and the frame bytes that came out."""
    decoder = FrameDecoder(MAX_FRAME_BYTES)
    view = memoryview(stream)
    out = 0
    started = time.process_time()
    pos = 0
    while pos < len(view):
        buf = decoder.get_buffer()
        n = min(len(buf), RECV_BYTES, len(view) - pos)
        buf[:n] = view[pos : pos + n]
        del buf
        decoder.buffer_updated(n)
        pos += n
        while (frame := decoder.next_frame()) is not None:
            out += len(frame)
    return time.process_time() - started, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=1.0, help="CPU time per measurement")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    cases = [("1 MB frames (a large Produce)", 1_000_000), ("100 KB frames", 100_000),
             ("1 KB frames (pipelined small requests)", 1_000), ("100 B frames", 100)]
    for name, size in cases:
        stream = stream_of(size, 64 * 1024 * 1024 if size >= 100_000 else 16 * 1024 * 1024)
        rates = []
        for _ in range(args.repeats):
            cpu = 0.0
            frame_bytes = 0
            while cpu < args.seconds:
                spent, got = run_once(stream)
                cpu += spent
                frame_bytes += got
            rates.append(frame_bytes / cpu / 1e6)
        print(f"{name:42s} {statistics.median(rates):10,.0f} MB/s per CPU second "
              f"(median of {args.repeats}: {', '.join(f'{r:,.0f}' for r in rates)})")


if __name__ == "__main__":
    main()
