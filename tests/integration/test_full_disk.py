"""A full disk (ENOSPC) takes the broker's log directory offline like any disk error: the
produce that hit it fails with KAFKA_STORAGE_ERROR, the broker exits 4 naming the file, and a
restart once space is back loses no acknowledged batch. A data directory that has become
read-only (EROFS) is refused at start-up with exit status 4, naming the file."""

from __future__ import annotations

import subprocess

import pytest
from kio.schema.errors import ErrorCode

from ackly.protocol.record_codec import decode_batches
from ackly.testing.broker_process import BrokerProcess
from ackly.testing.cluster_processes import wait_until
from ackly.testing.wire import WireClient
from tests.integration import wire_requests as rq

pytestmark = pytest.mark.slow


def output_with(broker: BrokerProcess, text: str) -> str:
    """The broker's output once it holds `text`: its last lines come through a pipe that a
    thread reads, so they may land just after the exit status."""
    wait_until(lambda: text in "".join(broker.output), 10.0, f"{text!r} in the broker's output")
    return "".join(broker.output)


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


def test_full_disk_takes_the_broker_offline_and_a_restart_with_space_keeps_every_ack(
    ackly_process, small_filesystem
) -> None:
    broker = ackly_process(name=str(small_filesystem / "data"))
    acknowledged = 0
    refused = 0
    with WireClient(broker.bootstrap) as c:
        assert c.request(rq.create_topic("fill")).topics[0].error_code == ErrorCode.none
        for _ in range(200):  # 200 x 10 KiB is twice the filesystem
            try:
                resp = c.request(rq.produce("fill", rq.batch(b"z" * 10_000)))
            except (ConnectionError, OSError):
                break  # the broker stopped and closed the connection
            code = resp.responses[0].partition_responses[0].error_code
            if code == ErrorCode.none:
                acknowledged += 1
                continue
            assert code == ErrorCode.kafka_storage_error
            refused += 1
            break
    assert acknowledged > 10
    assert refused == 1, "the produce that hit the full disk was not answered"
    # ENOSPC is a disk error like any other: the log directory goes offline, the broker exits
    # non-zero naming the file and the error.
    assert broker.proc is not None
    assert broker.proc.wait(timeout=30) == 4, "".join(broker.output)
    output = output_with(broker, "ENOSPC")
    assert "log dir failed: " in output and "No space left on device (ENOSPC)" in output, output
    # Space comes back: the restart recovers and every acknowledged batch is readable.
    subprocess.run(["mount", "-o", "remount,size=8m", str(small_filesystem)], check=True)
    broker.start()
    with WireClient(broker.bootstrap) as c:
        latest = c.request(rq.list_offsets("fill", -1)).topics[0].partitions[0]
        assert latest.error_code == ErrorCode.none and latest.offset >= acknowledged
        offset = 0
        while offset < acknowledged:
            part = c.request(rq.fetch("fill", offset)).responses[0].partitions[0]
            assert part.error_code == ErrorCode.none and part.records
            for _header, records in decode_batches(bytes(part.records)):
                for r in records:
                    assert r.offset == offset and r.value == b"z" * 10_000
                    offset += 1
        resp = c.request(rq.produce("fill", rq.batch(b"after")))
        assert resp.responses[0].partition_responses[0].error_code == ErrorCode.none
    assert broker.stop() == 0, "".join(broker.output)


def test_a_read_only_data_directory_is_refused_at_start_up_naming_it(ackly_process, small_filesystem) -> None:
    broker = ackly_process(name=str(small_filesystem / "data"))
    with WireClient(broker.bootstrap) as c:
        assert c.request(rq.create_topic("ro")).topics[0].error_code == ErrorCode.none
        resp = c.request(rq.produce("ro", rq.batch(b"kept")))
        assert resp.responses[0].partition_responses[0].error_code == ErrorCode.none
    assert broker.stop() == 0
    subprocess.run(["mount", "-o", "remount,ro", str(small_filesystem)], check=True)
    again = subprocess.run(BrokerProcess(broker.data_dir).command(), capture_output=True,
                           text=True, timeout=60)
    output = again.stdout + again.stderr
    assert again.returncode == 4, output
    assert "log dir failed: open " in output and "Read-only file system (EROFS)" in output, output
    subprocess.run(["mount", "-o", "remount,rw", str(small_filesystem)], check=True)
    broker.start()
    with WireClient(broker.bootstrap) as c:
        part = c.request(rq.fetch("ro", 0)).responses[0].partitions[0]
        assert part.error_code == ErrorCode.none
        assert [r.value for _h, records in decode_batches(bytes(part.records)) for r in records] == [b"kept"]
