"""What Kafka's LogValidator checks cost on the produce path (protocol/batch_validation.py).

For batches of ~1 MiB of records of 100 B and 1 KiB, uncompressed and with each codec: MB/s of
record bytes through `validate_client_batches`, and for compressed batches the same as a ratio
to decompression alone (the part any validation must pay). Run:

    .venv/bin/python bench/batch_validation.py
"""

from __future__ import annotations

import time

from ackly.protocol import records
from ackly.protocol.batch_validation import TimestampRule, validate_client_batches
from ackly.protocol.compression import decompress
from ackly.protocol.record_codec import Record, encode_batch

NOW_MS = 1_800_000_000_000
RULE = TimestampRule(before_max_ms=2**63 - 1, after_max_ms=3_600_000)
CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
BATCH_BYTES = 1 << 20


def best_seconds(fn, repeat: int = 5) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    print(f"{'record':>7} {'codec':>7} {'records':>8} {'validate MB/s':>14} {'vs decompress':>14}")
    for size in (100, 1024):
        count = BATCH_BYTES // size
        recs = [Record(None, bytes(size), timestamp_ms=NOW_MS) for _ in range(count)]
        for name, codec in CODECS.items():
            batch = encode_batch(recs, compression=codec)
            headers = records.validate_batches(batch, len(batch))
            t = best_seconds(lambda b=batch, h=headers: validate_client_batches(b, h, NOW_MS, RULE, 1 << 26))
            ratio = ""
            if codec:
                section = memoryview(batch)[records.HEADER_SIZE:]
                d = best_seconds(lambda s=section, c=codec: decompress(c, s))
                ratio = f"{t / d:.1f}x"
            print(f"{size:>7} {name:>7} {count:>8} {count * size / t / 1e6:>14.0f} {ratio:>14}")


if __name__ == "__main__":
    main()
