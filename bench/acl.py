"""What authorization costs on the request path, in-process (one BrokerNode, no sockets).

For 0, 100 and 10,000 ACL bindings (a third LITERAL topic names, a third PREFIXED names, a
third groups, each for another principal, plus the one ALLOW the asking principal needs: ALL
on the prefix `topic-`), the time of:
- a Metadata request listing every one of 200 topics (one check per topic);
- a Produce request of one small batch to one partition (one check);
as a ratio to the same broker with its authorizer switched off. Run:

    .venv/bin/python bench/acl.py [--topics 200]
"""

from __future__ import annotations

import argparse
import io
import random
import struct
import tempfile
import time
from typing import Any

from ackly.broker.context import RequestContext
from ackly.broker.node import BrokerNode
from ackly.config import BrokerConfig
from ackly.log.disk import RealDisk
from ackly.protocol.headers import RequestHeader
from ackly.protocol.messages import build_request, header_version
from ackly.protocol.record_codec import Record, encode_batch

NOW_MS = 1_800_000_000_000
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
PRINCIPAL = "User:bench"
_correlation = iter(range(1, 1 << 40))


def request(node: BrokerNode, api_key: int, version: int, data: dict[str, Any], principal: str) -> None:
    body = build_request(api_key, version, data)
    correlation_id = next(_correlation)
    frame = io.BytesIO()
    frame.write(struct.pack(">hhih", api_key, version, correlation_id, 5))
    frame.write(b"bench")
    if header_version(api_key, version) >= 2:
        frame.write(b"\x00")
    from kio.serial import entity_writer

    entity_writer(type(body))(frame, body)
    answers: list[Any] = []
    ctx = RequestContext(header=RequestHeader(api_key, version, correlation_id, "bench"), now_ms=NOW_MS,
                         sink=answers.append, client_host="10.0.0.1", principal=principal)
    node.handle_frame(ctx, frame.getvalue())
    assert len(answers) == 1


def make(data_dir: str, authorizer: bool, topics: int) -> BrokerNode:
    props = {"log.flush.policy": "never", "super.users": "User:admin"}
    if authorizer:
        props["authorizer.class.name"] = AUTHORIZER
    node = BrokerNode(config=BrokerConfig.from_properties(props), disk=RealDisk(), data_dir=data_dir,
                      host="127.0.0.1", port=9092, now_ms=NOW_MS, rng=random.Random(0))
    for i in range(topics):
        node.create_topic(f"topic-{i}", 1, {}, NOW_MS)
    return node


def add_acls(node: BrokerNode, count: int, first: int = 0) -> None:
    """`count` more bindings for other principals (and, the first time, the ALLOW the asking
    principal needs: ALL on the PREFIXED name topic-)."""
    creations = [{"resource_type": 2, "resource_name": "topic-", "resource_pattern_type": 4,
                  "principal": PRINCIPAL, "host": "*", "operation": 2, "permission_type": 3}]
    for i in range(first, first + count):
        kind = i % 3
        creations.append({
            "resource_type": 3 if kind == 2 else 2,
            "resource_name": f"topic-{i}" if kind == 0 else f"t{i}-" if kind == 1 else f"group-{i}",
            "resource_pattern_type": 4 if kind == 1 else 3, "principal": f"User:u{i}", "host": "*",
            "operation": 3, "permission_type": 3,
        })
    for start in range(0, len(creations), 1000):
        request(node, 30, 3, {"creations": creations[start:start + 1000]}, "User:admin")
    assert len(node.metadata.acls) == first + count + 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--topics", type=int, default=200)
    args = parser.parse_args()
    batch = encode_batch([Record(key=None, value=b"x" * 100)], now_ms=NOW_MS)
    produce = {"acks": 1, "timeout": 1000, "topic_data": [
        {"name": "topic-0", "partition_data": [{"index": 0, "records": batch}]}]}
    metadata = {"topics": None}
    produces = 1000

    def paired(node: BrokerNode, fn: Any, rounds: int = 7) -> tuple[float, float]:
        """Best time with the authorizer off and on, alternating round by round so that the
        machine's other work falls on both alike."""
        best = {False: float("inf"), True: float("inf")}
        for _ in range(rounds):
            for enabled in (False, True):
                node.authorizer.enabled = enabled
                start = time.perf_counter()
                fn()
                best[enabled] = min(best[enabled], time.perf_counter() - start)
        node.authorizer.enabled = True
        return best[False], best[True]

    def listing(node: BrokerNode) -> None:
        request(node, 3, 9, metadata, PRINCIPAL)

    def produce_many(node: BrokerNode) -> None:
        for _ in range(produces):
            request(node, 0, 8, produce, PRINCIPAL)

    print(f"{'ACLs':>7} {'Metadata, ' + str(args.topics) + ' topics: off / on':>36} {'ratio':>6}"
          f" {'Produce (1 batch): off / on':>30} {'ratio':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        # One broker throughout (creating topics is what takes time here); "off" is the same
        # broker with its authorizer switched off, so each ratio is the checks' cost alone.
        node = make(f"{tmp}/data", True, args.topics)
        added = 0
        for count in (0, 100, 10_000):
            add_acls(node, count - added, first=added)
            added = count
            list_off, list_on = paired(node, lambda: listing(node))
            prod_off, prod_on = paired(node, lambda: produce_many(node), rounds=3)
            prod_off, prod_on = prod_off / produces, prod_on / produces
            print(f"{count:>7} {list_off * 1e3:>16.2f} ms / {list_on * 1e3:>8.2f} ms {list_on / list_off:>6.2f}"
                  f" {prod_off * 1e6:>12.1f} us / {prod_on * 1e6:>7.1f} us {prod_on / prod_off:>6.2f}")
        node.close()

if __name__ == "__main__":
    main()
