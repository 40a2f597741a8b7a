"""A full disk fails the produce with KAFKA_STORAGE_ERROR; the broker stays up and loses nothing."""

from __future__ import annotations

import subprocess

import pytest
from kio.schema.errors import ErrorCode

from ackly.protocol.record_codec import decode_batches
from ackly.testing.wire import WireClient
from tests.integration import wire_requests as rq

pytestmark = pytest.mark.slow


@pytest.fixture
def small_filesystem(tmp_path):  # type: ignore[no-untyped-def]
    """A 1 MiB tmpfs: a real filesystem that fills up (needs root, as CI has)."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_full_disk_fails_the_produce_and_keeps_the_broker_up(ackly_process, small_filesystem) -> None:
    broker = ackly_process(name=str(small_filesystem / "data"))
    acknowledged = 0
    storage_errors = 0
    with WireClient(broker.bootstrap) as c:
        assert c.request(rq.create_topic("fill")).topics[0].error_code == ErrorCode.none
        for _ in range(200):  # 200 x 10 KiB is twice the filesystem
            resp = c.request(rq.produce("fill", rq.batch(b"z" * 10_000)))
            code = resp.responses[0].partition_responses[0].error_code
            if code == ErrorCode.none:
                acknowledged += 1
            else:
                assert code == ErrorCode.kafka_storage_error
                storage_errors += 1
                if storage_errors >= 3:
                    break
        assert storage_errors >= 1 and acknowledged > 10
        latest = c.request(rq.list_offsets("fill", -1)).topics[0].partitions[0]
        assert latest.error_code == ErrorCode.none and latest.offset == acknowledged
    # the broker still answers, on a new connection too, and every acknowledged batch is readable
    with WireClient(broker.bootstrap) as c:
        offset = 0
        while offset < acknowledged:
            part = c.request(rq.fetch("fill", offset)).responses[0].partitions[0]
            assert part.error_code == ErrorCode.none and part.records
            for _header, records in decode_batches(bytes(part.records)):
                for r in records:
                    assert r.offset == offset and r.value == b"z" * 10_000
                    offset += 1
    assert broker.stop() == 0, "".join(broker.output)
