"""Compaction in a replicated partition (three BrokerNodes on a virtual clock): every replica
cleans its own copy, and a follower that fetches a cleaned range from scratch ends with what
the leader has (holes, emptied batches and all)."""

from __future__ import annotations

import shutil
from pathlib import Path

from ackly.broker.node import BrokerNode
from ackly.errors import ErrorCode
from ackly.protocol.record_codec import Record, decode_batch, encode_batch
from ackly.protocol.records import iter_batches
from ackly.types import TopicPartition

from .core_cluster import START_MS, CoreCluster, log_bytes
from .test_cluster_core import create, produce, result

COMPACT = {"cleanup.policy": "compact", "segment.bytes": "1000", "min.cleanable.dirty.ratio": "0.01"}


def keyed(key: bytes, value: bytes) -> bytes:
    return encode_batch([Record(key=key, value=value)], now_ms=START_MS)


def records(node: BrokerNode) -> list[tuple[int, bytes | None, bytes | None]]:
    data = log_bytes(node, "c")
    out = []
    for pos, header in iter_batches(data):
        _, decoded = decode_batch(data[pos : pos + header.size])
        out.extend((r.offset, r.key, r.value) for r in decoded)
    return out


def clean(c: CoreCluster, broker: int) -> int:
    """Run every clean the broker's cleaner wants now, as its shell would; return how many."""
    node = c.node(broker)
    done = 0
    while (taken := node.take_clean_job(c.now_ms)) is not None:
        tp, job = taken
        job.run()
        node.complete_clean(tp, job, None, c.now_ms)
        c.pump()  # the flush the swap waits for, then the swap
        done += 1
    return done


def test_every_replica_compacts_its_copy_and_a_new_follower_copies_the_holes(tmp_path: Path) -> None:
    c = CoreCluster(tmp_path, [1, 2, 3])
    assert create(c, 1, "c", configs=COMPACT).topics[0].error_code == ErrorCode.none
    c.settle()
    leader = c.leader("c")
    written: dict[int, tuple[bytes, bytes]] = {}
    for i in range(120):
        key, value = b"k%d" % (i % 4), b"v%d-" % i + b"x" * 40
        code, offset = result(c.wait(produce(c, leader, "c", keyed(key, value))))
        assert code == ErrorCode.none
        written[offset] = (key, value)
    c.settle()
    latest = {key: offset for offset, (key, _) in sorted(written.items())}
    for b in (1, 2, 3):
        before = len(records(c.node(b)))
        assert clean(c, b) >= 1, f"broker {b} did not clean its copy"
        seen = records(c.node(b))
        assert len(seen) < before / 3
        for offset, key, value in seen:
            assert written[offset] == (key, value)
        assert {o for o, _, _ in seen} >= set(latest.values())
    # Broker 3 loses its copy and fetches it again from the leader, across the holes.
    follower = next(b for b in (1, 2, 3) if b != leader)
    c.kill(follower)
    shutil.rmtree(Path(c.hosts[follower].data_dir) / "c-0")
    c.start(follower)
    tp = TopicPartition("c", 0)
    c.until(lambda: c.node(follower).replicas.partitions.get(tp) is not None
            and c.node(follower).partition("c", 0).log_end_offset
            == c.node(leader).partition("c", 0).log_end_offset)
    assert records(c.node(follower)) == records(c.node(leader))
    # More writes after the holes replicate as usual.
    code, offset = result(c.wait(produce(c, leader, "c", keyed(b"k0", b"after"))))
    assert code == ErrorCode.none
    c.settle()
    assert records(c.node(follower))[-1] == (offset, b"k0", b"after")
