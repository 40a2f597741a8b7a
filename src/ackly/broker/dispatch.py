"""API key -> handler, and the ApiVersions table built from it.

Each handler module under `handlers/` declares API_KEY, MIN_VERSION, MAX_VERSION and
`handle(node, ctx, request)`. Only what is in this table is advertised (librdkafka calls
whatever it sees listed), and the ranges keep the pre-flexible versions that librdkafka needs
to turn features on (docs/clients.md).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ackly.broker.context import RequestContext
from ackly.broker.handlers import (
    add_offsets_to_txn,
    add_partitions_to_txn,
    alter_client_quotas,
    alter_configs,
    alter_user_scram_credentials,
    api_versions,
    consumer_group_describe,
    consumer_group_heartbeat,
    create_acls,
    create_partitions,
    create_topics,
    delete_acls,
    delete_groups,
    delete_records,
    delete_topics,
    describe_acls,
    describe_client_quotas,
    describe_cluster,
    describe_configs,
    describe_groups,
    describe_producers,
    describe_topic_partitions,
    describe_transactions,
    describe_user_scram_credentials,
    end_txn,
    fetch,
    find_coordinator,
    heartbeat,
    incremental_alter_configs,
    init_producer_id,
    join_group,
    leave_group,
    list_groups,
    list_offsets,
    list_transactions,
    metadata,
    offset_commit,
    offset_delete,
    offset_fetch,
    offset_for_leader_epoch,
    produce,
    sasl_authenticate,
    sasl_handshake,
    sync_group,
    txn_offset_commit,
    write_txn_markers,
)
from ackly.errors import ErrorCode, KafkaError
from ackly.protocol.frames import FrameError
from ackly.protocol.headers import API_VERSIONS_KEY, body_offset, response_header
from ackly.protocol.messages import decode_request, header_version

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode


@dataclass(frozen=True)
class ApiSpec:
    api_key: int
    min_version: int
    max_version: int
    handle: Callable[[BrokerNode, RequestContext, Any], None]


def _spec(module: ModuleType) -> ApiSpec:
    return ApiSpec(module.API_KEY, module.MIN_VERSION, module.MAX_VERSION, module.handle)


HANDLER_MODULES: tuple[ModuleType, ...] = (
    produce, fetch, list_offsets, metadata, api_versions, create_topics, delete_topics,
    create_partitions, delete_records, describe_configs, alter_configs,
    incremental_alter_configs, describe_cluster, init_producer_id, describe_producers,
    find_coordinator, join_group, sync_group, heartbeat, leave_group, offset_commit, offset_fetch,
    describe_groups, list_groups, delete_groups, offset_delete, offset_for_leader_epoch,
    write_txn_markers, txn_offset_commit, add_partitions_to_txn, add_offsets_to_txn, end_txn,
    describe_transactions, list_transactions, describe_acls, create_acls, delete_acls,
    describe_user_scram_credentials, alter_user_scram_credentials, sasl_handshake, sasl_authenticate,
    describe_client_quotas, alter_client_quotas, consumer_group_heartbeat, consumer_group_describe,
    describe_topic_partitions,
)

TABLE: dict[int, ApiSpec] = {m.API_KEY: _spec(m) for m in HANDLER_MODULES}


def dispatch(node: BrokerNode, ctx: RequestContext, frame: bytes | memoryview) -> None:
    header = ctx.header
    if ctx.sasl is not None:
        # Before authentication only ApiVersions and the SASL exchange; past the session's
        # end nothing but a re-authentication (broker/sasl.py). Refused: the connection closes.
        ctx.sasl.admit(header.api_key, ctx.now_ms)
    spec = TABLE.get(header.api_key)
    if spec is None or not spec.min_version <= header.api_version <= spec.max_version:
        if header.api_key == API_VERSIONS_KEY:
            # KIP-511: answer in v0 with the full table so the client can pick a version.
            api_versions.respond_unsupported(ctx, TABLE.values())
            return
        # Kafka has no response schema for an API or version it does not know: answer with the
        # correlation id and UNSUPPORTED_VERSION, which every client reads as that error.
        body = struct.pack(">h", ErrorCode.unsupported_version)
        payload = response_header(header.correlation_id, False) + body
        ctx.send([struct.pack(">i", len(payload)) + payload])
        return
    try:
        offset = body_offset(frame, header_version(header.api_key, header.api_version))
        request = decode_request(header.api_key, header.api_version, frame, offset)
    except (KafkaError, struct.error) as exc:
        raise FrameError(f"malformed {header.api_key}v{header.api_version} request: {exc}")
    ctx.request_bytes = len(frame)
    spec.handle(node, ctx, request)
