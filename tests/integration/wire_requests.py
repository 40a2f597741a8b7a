"""kio request builders shared by the wire-level tests."""

from __future__ import annotations

import datetime

from kio.schema.create_topics.v7.request import (
    CreatableTopic,
    CreatableTopicConfig,
    CreateTopicsRequest,
)
from kio.schema.fetch.v12.request import FetchPartition, FetchRequest, FetchTopic
from kio.schema.list_offsets.v7.request import (
    ListOffsetsPartition,
    ListOffsetsRequest,
    ListOffsetsTopic,
)
from kio.schema.metadata.v12.request import MetadataRequest, MetadataRequestTopic
from kio.schema.produce.v9.request import PartitionProduceData, ProduceRequest, TopicProduceData
from kio.static.primitive import Records, i8, i16, i32, i64

from ackly.protocol.record_codec import Record, encode_batch


def batch(*values: bytes, timestamp_ms: int = 1_700_000_000_000) -> bytes:
    return encode_batch([Record(key=None, value=v, timestamp_ms=timestamp_ms) for v in values])


def produce(topic: str, records: bytes, acks: int = 1, partition: int = 0) -> ProduceRequest:
    return ProduceRequest(
        transactional_id=None, acks=i16(acks), timeout=datetime.timedelta(seconds=10),
        topic_data=(TopicProduceData(name=topic, partition_data=(
            PartitionProduceData(index=i32(partition), records=Records(records)),)),),
    )


def create_topic(name: str, partitions: int = 1, configs: dict[str, str] | None = None,
                 validate_only: bool = False) -> CreateTopicsRequest:
    return CreateTopicsRequest(
        topics=(CreatableTopic(
            name=name, num_partitions=i32(partitions), replication_factor=i16(-1), assignments=(),
            configs=tuple(CreatableTopicConfig(name=k, value=v) for k, v in (configs or {}).items()),
        ),),
        timeout=datetime.timedelta(seconds=10), validate_only=validate_only,
    )


def metadata(*topics: str, auto_create: bool = True) -> MetadataRequest:
    return MetadataRequest(
        topics=tuple(MetadataRequestTopic(name=t, topic_id=None) for t in topics),
        allow_auto_topic_creation=auto_create, include_topic_authorized_operations=False,
    )


def list_offsets(topic: str, timestamp: int, partition: int = 0) -> ListOffsetsRequest:
    return ListOffsetsRequest(
        replica_id=i32(-1), isolation_level=i8(0),
        topics=(ListOffsetsTopic(name=topic, partitions=(ListOffsetsPartition(
            partition_index=i32(partition), current_leader_epoch=i32(-1), timestamp=i64(timestamp),
        ),)),),
    )


def fetch(topic: str, offset: int, max_wait_ms: int = 0, min_bytes: int = 1,
          partition: int = 0, max_bytes: int = 1 << 20) -> FetchRequest:
    return FetchRequest(
        cluster_id=None, replica_id=i32(-1), max_wait=datetime.timedelta(milliseconds=max_wait_ms),
        min_bytes=i32(min_bytes), max_bytes=i32(max_bytes), isolation_level=i8(0),
        session_id=i32(0), session_epoch=i32(-1),
        topics=(FetchTopic(topic=topic, partitions=(FetchPartition(
            partition=i32(partition), current_leader_epoch=i32(-1), fetch_offset=i64(offset),
            last_fetched_epoch=i32(-1), log_start_offset=i64(-1), partition_max_bytes=i32(max_bytes),
        ),)),),
        forgotten_topics_data=(), rack_id="",
    )
