"""Requests to an in-process BrokerNode as a given principal from a given host: encoded into
frames, run through `handle_frame`, answers decoded with kio (for the ACL tests)."""

from __future__ import annotations

import io
import random
import struct
from pathlib import Path
from typing import Any

from kio.serial import entity_reader, entity_writer

from ackly.broker.context import RequestContext
from ackly.broker.node import BrokerNode
from ackly.cluster.acls import AclOperation, AclPermission, PatternType, ResourceType
from ackly.config import BrokerConfig
from ackly.log.disk import RealDisk
from ackly.protocol.headers import RequestHeader
from ackly.protocol.messages import header_version, is_flexible, request_type, response_type

NOW_MS = 1_700_000_000_000
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
ADMIN = "User:admin"
CREATE_ACLS, DESCRIBE_ACLS, DELETE_ACLS = 30, 29, 31
_correlation = iter(range(1, 10_000_000))


def make_node(data_dir: Path, **props: str) -> BrokerNode:
    config = {"authorizer.class.name": AUTHORIZER, "super.users": ADMIN,
              "log.flush.policy": "never", "offsets.topic.num.partitions": "1",
              "transaction.state.log.num.partitions": "1",
              "transaction.partition.verification.enable": "false", **props}
    return BrokerNode(
        config=BrokerConfig.from_properties(config), disk=RealDisk(), data_dir=str(data_dir),
        host="127.0.0.1", port=9092, now_ms=NOW_MS, rng=random.Random(0),
    )


def encode(api_key: int, version: int, correlation_id: int, **fields: Any) -> bytes:
    request = request_type(api_key, version)(**fields)
    client_id = b"acl-test"
    frame = io.BytesIO()
    frame.write(struct.pack(">hhih", api_key, version, correlation_id, len(client_id)))
    frame.write(client_id)
    if header_version(api_key, version) >= 2:
        frame.write(b"\x00")
    entity_writer(type(request))(frame, request)
    return frame.getvalue()


def start(node: BrokerNode, api_key: int, version: int, principal: str, host: str = "10.0.0.1",
          **fields: Any) -> list[Any]:
    """Send the request; the returned list receives the answer (now or later)."""
    correlation_id = next(_correlation)
    answers: list[Any] = []
    ctx = RequestContext(header=RequestHeader(api_key, version, correlation_id, "acl-test"),
                         now_ms=NOW_MS, sink=answers.append, client_host=host, principal=principal)
    node.handle_frame(ctx, encode(api_key, version, correlation_id, **fields))
    return answers


def decode(api_key: int, version: int, answers: list[Any]) -> Any:
    assert len(answers) == 1 and answers[0] is not None, "exactly one answer"
    data = b"".join(bytes(p) for p in answers[0])
    offset = 8 + (1 if is_flexible(api_key, version) else 0)
    response, _ = entity_reader(response_type(api_key, version))(data, offset)
    return response


def call(node: BrokerNode, api_key: int, version: int, principal: str, host: str = "10.0.0.1",
         **fields: Any) -> Any:
    return decode(api_key, version, start(node, api_key, version, principal, host, **fields))


def creation(resource_type: ResourceType, name: str, principal: str, operation: AclOperation,
             permission: AclPermission = AclPermission.ALLOW,
             pattern: PatternType = PatternType.LITERAL, host: str = "*", version: int = 3) -> Any:
    import sys

    module = sys.modules[request_type(CREATE_ACLS, version).__module__]
    return module.AclCreation(
        resource_type=int(resource_type), resource_name=name, resource_pattern_type=int(pattern),
        principal=principal, host=host, operation=int(operation), permission_type=int(permission),
    )


def grant(node: BrokerNode, resource_type: ResourceType, name: str, principal: str,
          operation: AclOperation, *, permission: AclPermission = AclPermission.ALLOW,
          pattern: PatternType = PatternType.LITERAL) -> None:
    response = call(node, CREATE_ACLS, 3, ADMIN, creations=(
        creation(resource_type, name, principal, operation, permission, pattern),))
    assert [int(r.error_code) for r in response.results] == [0], response


def ask(node: BrokerNode, api_key: int, version: int, principal: str, data: dict[str, Any],
        host: str = "10.0.0.1") -> Any:
    """Send a request built from a dict (fields not given take their zero value)."""
    from ackly.protocol.messages import build_request

    request = build_request(api_key, version, data)
    correlation_id = next(_correlation)
    answers: list[Any] = []
    ctx = RequestContext(header=RequestHeader(api_key, version, correlation_id, "acl-test"),
                         now_ms=NOW_MS, sink=answers.append, client_host=host, principal=principal)
    frame = io.BytesIO()
    client_id = b"acl-test"
    frame.write(struct.pack(">hhih", api_key, version, correlation_id, len(client_id)))
    frame.write(client_id)
    if header_version(api_key, version) >= 2:
        frame.write(b"\x00")
    entity_writer(type(request))(frame, request)
    node.handle_frame(ctx, frame.getvalue())
    return decode(api_key, version, answers)


def error_codes(value: Any) -> list[int]:
    """Every error code in a decoded response, wherever it sits."""
    import dataclasses

    found: list[int] = []
    if isinstance(value, tuple):
        for item in value:
            found += error_codes(item)
    elif dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if f.name in ("error_code", "partition_error_code"):
                found.append(int(item))
            else:
                found += error_codes(item)
    return found
