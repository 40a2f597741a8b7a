"""A single broker is a cluster of one: its metadata survives restarts in the data directory,
and a data directory from before the metadata store (topics.json) is imported."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

from ackly.broker.node import BrokerNode
from ackly.cluster.topics import TopicCatalogue, TopicMetadata
from ackly.config import BrokerConfig
from ackly.log.disk import RealDisk
from ackly.log.partition_log import PartitionLog
from ackly.protocol.record_codec import Record, encode_batch
from ackly.protocol.records import validate_batches
from ackly.types import TopicPartition

NOW_MS = 1_700_000_000_000


def make_node(data_dir: Path) -> BrokerNode:
    return BrokerNode(config=BrokerConfig.from_properties({}), disk=RealDisk(), data_dir=str(data_dir),
                      host="127.0.0.1", port=9092, now_ms=NOW_MS, rng=random.Random(0))


def append(node: BrokerNode, topic: str, value: bytes) -> None:
    p = node.leader_partition(topic, 0)
    data = bytearray(encode_batch([Record(key=None, value=value)], now_ms=NOW_MS))
    p.append_as_leader(data, validate_batches(data, 1 << 20), -1, NOW_MS)
    node.after_append(p, NOW_MS)
    jobs = node.take_flush_jobs()
    for _, job in jobs:
        job.run()
    node.complete_flush(jobs, NOW_MS)


def epochs(node: BrokerNode) -> list[int]:
    return [p.leader_epoch for p in node.topics["t"].partitions]


def test_topics_ids_and_data_survive_a_clean_restart_in_the_same_leader_epoch(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    state = node.create_topic("t", 2, {"retention.ms": "1000"}, NOW_MS)
    topic_id, cluster_id = state.topic_id, node.cluster_id
    append(node, "t", b"before")
    epoch = node.partition("t", 0).leader_epoch
    revision = node.metadata.partition_revision(TopicPartition("t", 0))
    node.close()
    again = make_node(tmp_path)
    assert again.cluster_id == cluster_id
    state = again.topics["t"]
    assert (state.topic_id, state.partition_count) == (topic_id, 2)
    assert dict(state.config.overrides) == {"retention.ms": "1000"}
    p = again.leader_partition("t", 0)
    assert p.high_watermark == 1
    # Resumed, not elected: nothing was lost at a clean stop, and no other replica exists.
    assert p.leader_epoch == epoch and not again.member.controller_changes
    assert again.metadata.partition_revision(TopicPartition("t", 0)) == revision
    append(again, "t", b"after")
    assert p.log.leader_epochs.latest_epoch == p.leader_epoch == epoch
    assert again.metadata.controller is not None and list(again.metadata.brokers) == [0]


def test_a_restart_after_a_crash_elects_every_partition_in_a_new_epoch(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    node.create_topic("t", 2, {}, NOW_MS)
    append(node, "t", b"before")
    node.close()
    resumed = make_node(tmp_path)
    before = epochs(resumed)
    append(resumed, "t", b"flushed")
    # No close: a crash. The epochs the clean stop recorded were for the last start only.
    crashed = make_node(tmp_path)
    assert epochs(crashed) == [e + 1 for e in before]
    assert crashed.member.controller_changes["election"] == 2
    assert crashed.leader_partition("t", 0).log_end_offset == 2
    crashed.close()
    assert epochs(make_node(tmp_path)) == [e + 1 for e in before]


def test_a_log_not_opened_as_the_clean_stop_left_it_is_elected_again(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    node.create_topic("t", 2, {}, NOW_MS)
    append(node, "t", b"before")
    before = epochs(node)
    node.close()
    # Its topic id file gone: the log recovers from its own checkpoints, not the clean state.
    (tmp_path / "t-0" / "partition.metadata").unlink()
    again = make_node(tmp_path)
    assert epochs(again) == [before[0] + 1, before[1]]
    assert again.member.controller_changes["election"] == 1
    assert again.leader_partition("t", 0).log_end_offset == 1
    again.close()


def test_a_garbled_epoch_record_costs_an_election_not_the_clean_state(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    node.create_topic("t", 2, {}, NOW_MS)
    append(node, "t", b"before")
    before = epochs(node)
    node.close()
    (tmp_path / "clean-shutdown-leader-epochs").write_bytes(b"0\n2\nt 0\n")
    again = make_node(tmp_path)
    assert epochs(again) == [e + 1 for e in before]
    assert all(p.log.recovered_segments == 0 for p in again.topics["t"].partitions)
    again.close()


def test_a_data_directory_from_before_the_metadata_store_is_imported(tmp_path: Path) -> None:
    disk = RealDisk()
    topic_id = uuid.UUID(int=12345, version=4)
    catalogue = TopicCatalogue(disk, str(tmp_path), "old-cluster-id")
    catalogue.put(TopicMetadata("legacy", topic_id, 1, {"segment.ms": "5000"}))
    config = BrokerConfig.from_properties({}).topic_defaults()
    log = PartitionLog.open(disk, str(tmp_path / "legacy-0"), config, NOW_MS)
    data = bytearray(encode_batch([Record(key=None, value=b"old")], now_ms=NOW_MS))
    log.append(data, validate_batches(data, 1 << 20), 0, NOW_MS)
    log.set_high_watermark(1)
    log.close()

    node = make_node(tmp_path)
    assert node.cluster_id == "old-cluster-id"
    state = node.topics["legacy"]
    assert state.topic_id == topic_id and dict(state.config.overrides) == {"segment.ms": "5000"}
    p = node.leader_partition("legacy", 0)
    assert (p.log_end_offset, p.high_watermark) == (1, 1)
    append(node, "legacy", b"new")
    node.close()
    assert make_node(tmp_path).leader_partition("legacy", 0).high_watermark == 2
