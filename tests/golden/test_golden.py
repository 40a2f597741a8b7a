"""Golden frames: requests captured once from each real client, replayed into a BrokerNode.

`frames/` holds what `capture.py` recorded (see its docstring): for every client, the first
request of each (api, version) it sent, size prefix included, and `manifest.json`. Each
client's frames are replayed in a sensible order (ApiVersions, CreateTopics, Metadata,
Produce, ListOffsets, Fetch, DeleteTopics) into a node built in-process on a temporary
directory, driven the way the asyncio shell drives it (flush jobs run at once, the clock
moved to the node's next deadline when a request waits). Every frame must:

- parse (header prefix, header version, body through kio's request schema);
- get exactly one answer, except an acks=0 Produce, which must get none;
- get an answer whose size prefix matches its length, whose correlation id is the
  request's, and whose body decodes with kio's response schema of that version to the
  last byte (file ranges of a Fetch answer are read from their files);
- answer without an error code; and the captured Fetch must read back the records the
  captured Produce wrote (the topic ids in a Fetch v13+ frame are mapped to the replay's).

No network, no processes: this runs in the fast suite.
"""

from __future__ import annotations

import json
import random
import struct
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kio.serial import entity_reader

from ackly.broker.context import RequestContext
from ackly.broker.node import BrokerNode
from ackly.config import BrokerConfig
from ackly.log.disk import RealDisk
from ackly.protocol.headers import (
    API_VERSIONS_KEY,
    RequestHeader,
    body_offset,
    parse_prefix,
    skip_tagged_fields,
)
from ackly.protocol.messages import (
    decode_request,
    header_version,
    is_flexible,
    response_type,
)

FRAMES_DIR = Path(__file__).parent / "frames"
MANIFEST = json.loads((FRAMES_DIR / "manifest.json").read_text())["frames"]
CLIENTS = list(dict.fromkeys(e["client"] for e in MANIFEST))

PRODUCE, FETCH, LIST_OFFSETS, METADATA = 0, 1, 2, 3
CREATE_TOPICS, DELETE_TOPICS = 19, 20
UNSUPPORTED_VERSION = 35
REPLAY_ORDER = {API_VERSIONS_KEY: 0, CREATE_TOPICS: 1, METADATA: 2, PRODUCE: 3,
                LIST_OFFSETS: 4, FETCH: 5, DELETE_TOPICS: 9}
MAX_WAIT_STEPS = 20  # clock jumps allowed for one request to be answered


def _ordered(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(entries, key=lambda e: (REPLAY_ORDER.get(e["api_key"], 6), e["api_version"]))


@dataclass
class Answer:
    header: RequestHeader
    request: Any
    body: Any  # the decoded kio response, or None for no answer


@dataclass
class Replay:
    """One BrokerNode on a temporary directory and a virtual clock."""

    data_dir: Path
    now_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    node: BrokerNode = field(init=False)

    def __post_init__(self) -> None:
        self.node = BrokerNode(
            config=BrokerConfig.from_properties({}), disk=RealDisk(), data_dir=str(self.data_dir),
            host="127.0.0.1", port=9092, now_ms=self.now_ms, rng=random.Random(0),
        )

    def _flush(self) -> None:
        jobs = self.node.take_flush_jobs()
        for _, job in jobs:
            job.run()
        self.node.complete_flush(jobs, self.now_ms)

    def send(self, sized_frame: bytes) -> Answer:
        (size,) = struct.unpack_from(">i", sized_frame, 0)
        assert size == len(sized_frame) - 4, "captured frame's size prefix is wrong"
        frame = sized_frame[4:]
        header = parse_prefix(frame)
        request = decode_request(
            header.api_key, header.api_version, frame,
            body_offset(frame, header_version(header.api_key, header.api_version)),
        )
        answers: list[Any] = []
        ctx = RequestContext(header=header, now_ms=self.now_ms, sink=answers.append)
        self.node.handle_frame(ctx, frame)
        for _ in range(MAX_WAIT_STEPS):
            self._flush()
            if ctx.answered:
                break
            due = self.node.next_deadline_ms()
            assert due is not None, "a request waits but the node has no deadline"
            self.now_ms = max(self.now_ms + 1, due)
            self.node.tick(self.now_ms)
        assert ctx.answered, f"no answer after {MAX_WAIT_STEPS} clock steps"
        assert len(answers) == 1
        if answers[0] is None:
            return Answer(header, request, None)
        return Answer(header, request, decode_answer(header, answers[0]))


def _piece_bytes(piece: Any) -> bytes:
    if isinstance(piece, (bytes, bytearray, memoryview)):
        return bytes(piece)
    return bytes(piece.file.read(piece.position, piece.size))  # a file range of a Fetch answer


def decode_answer(header: RequestHeader, pieces: Any) -> Any:
    data = b"".join(_piece_bytes(p) for p in pieces)
    (size,) = struct.unpack_from(">i", data, 0)
    assert size == len(data) - 4, f"size prefix {size} but {len(data) - 4} bytes follow"
    (correlation_id,) = struct.unpack_from(">i", data, 4)
    assert correlation_id == header.correlation_id
    api_key, version = header.api_key, header.api_version
    pos = 8
    if api_key == API_VERSIONS_KEY:
        # Header v0 always; a version the broker lacks is answered in v0 (KIP-511).
        (error_code,) = struct.unpack_from(">h", data, pos)
        if error_code == UNSUPPORTED_VERSION:
            version = 0
    elif is_flexible(api_key, version):
        pos = skip_tagged_fields(data, pos)  # response header v1
    body, consumed = entity_reader(response_type(api_key, version))(data, pos)
    assert pos + consumed == len(data), f"response decoded to byte {pos + consumed} of {len(data)}"
    return body


# --- what each answer must say ------------------------------------------------------------


def _codes(items: Any, attr: str = "error_code") -> list[int]:
    return [int(getattr(i, attr)) for i in items]


def check_api_versions(a: Answer) -> None:
    assert int(a.body.error_code) in (0, UNSUPPORTED_VERSION)
    keys = {int(k.api_key) for k in a.body.api_keys}
    assert {PRODUCE, FETCH, LIST_OFFSETS, METADATA, API_VERSIONS_KEY} <= keys


def check_metadata(a: Answer) -> None:
    assert [int(b.node_id) for b in a.body.brokers] == [0]
    assert all(c == 0 for c in _codes(a.body.topics)), a.body.topics


def check_create_topics(a: Answer) -> None:
    assert _codes(a.body.topics) == [0] * len(a.request.topics), a.body.topics


def check_produce(a: Answer) -> None:
    if int(a.request.acks) == 0:
        assert a.body is None, "an acks=0 Produce was answered"
        return
    assert a.body is not None, "a Produce with acks != 0 got no answer"
    codes = [int(p.error_code) for t in a.body.responses for p in t.partition_responses]
    assert codes and all(c == 0 for c in codes), a.body


def check_list_offsets(a: Answer) -> None:
    codes = [int(p.error_code) for t in a.body.topics for p in t.partitions]
    assert codes and all(c == 0 for c in codes), a.body


def check_fetch(a: Answer) -> None:
    parts = [p for t in a.body.responses for p in t.partitions]
    assert parts and all(int(p.error_code) == 0 for p in parts), a.body


def check_delete_topics(a: Answer) -> None:
    assert all(c == 0 for c in _codes(a.body.responses)), a.body


CHECKS: dict[int, Callable[[Answer], None]] = {
    API_VERSIONS_KEY: check_api_versions, METADATA: check_metadata,
    CREATE_TOPICS: check_create_topics, PRODUCE: check_produce,
    LIST_OFFSETS: check_list_offsets, FETCH: check_fetch, DELETE_TOPICS: check_delete_topics,
}


def records_in(batches: bytes) -> int:
    """Records in a run of magic-2 batches (count field at byte 57 of each header)."""
    count, pos = 0, 0
    while pos + 61 <= len(batches):
        (batch_length,) = struct.unpack_from(">i", batches, pos + 8)
        count += struct.unpack_from(">i", batches, pos + 57)[0]
        pos += 12 + batch_length
    return count


def produced_records(request: Any) -> dict[int, int]:
    """Partition -> records a Produce request carries."""
    return {int(p.index): records_in(p.records or b"")
            for t in request.topic_data for p in t.partition_data}


def map_topic_ids(frame: bytes, request: Any, replay: Replay, topic: str) -> bytes:
    """Fetch v13+ names topics by id: swap the capture's id for the replay's."""
    state = replay.node.topics.get(topic)
    if state is None:
        return frame
    for t in request.topics:
        captured: uuid.UUID = t.topic_id
        if captured.int != 0 and captured != state.topic_id:
            frame = frame.replace(captured.bytes, state.topic_id.bytes)
    return frame


def _frame_request(sized_frame: bytes) -> Any:
    frame = sized_frame[4:]
    header = parse_prefix(frame)
    return decode_request(header.api_key, header.api_version, frame,
                          body_offset(frame, header_version(header.api_key, header.api_version)))


def test_manifest_lists_every_frame_file() -> None:
    files = {p.name for p in FRAMES_DIR.glob("*.bin")}
    assert files == {e["file"] for e in MANIFEST}
    assert set(CLIENTS) == {"confluent-kafka", "kafka-python", "aiokafka", "kcat", "kafkajs"}
    for e in MANIFEST:
        assert e["file"] == f"{e['client']}-{e['api_name']}-v{e['api_version']}.bin"


@pytest.mark.parametrize("client", CLIENTS)
def test_replay_client_frames(client: str, tmp_path: Path) -> None:
    entries = _ordered([e for e in MANIFEST if e["client"] == client])
    topic = entries[0]["topic"]
    partitions = entries[0]["partitions"]
    replay = Replay(tmp_path / "data")
    failures: list[str] = []
    produced: dict[int, int] = {}
    fetched: dict[int, int] = {}
    has_create = any(e["api_key"] == CREATE_TOPICS for e in entries)

    for e in entries:
        if e["api_key"] in (METADATA, PRODUCE) and not has_create and topic not in replay.node.topics:
            # This client creates no topic itself (kcat): make the one its frames name.
            replay.node.create_topic(topic, partitions, {}, replay.now_ms)
        frame = (FRAMES_DIR / e["file"]).read_bytes()
        try:
            if e["api_key"] == FETCH and e["api_version"] >= 13:
                frame = map_topic_ids(frame, _frame_request(frame), replay, topic)
            answer = replay.send(frame)
            CHECKS[e["api_key"]](answer)
            if e["api_key"] == PRODUCE:
                produced = produced_records(answer.request)
            if e["api_key"] == FETCH:
                fetched = {int(p.partition_index): records_in(bytes(p.records or b""))
                           for t in answer.body.responses for p in t.partitions}
            if e["api_key"] == DELETE_TOPICS:
                assert topic not in replay.node.topics
        except Exception:
            failures.append(f"{e['file']}:\n{traceback.format_exc(limit=-4)}")

    # The captured Fetch started at offset 0 after the captured Produce: it must see those
    # records (a Fetch may stop at a partition's first batch, so ask for at least one).
    fetch_entry = next((e for e in entries if e["api_key"] == FETCH), None)
    if fetch_entry is not None and produced:
        wanted = {p for p, n in produced.items() if n}
        missing = {p for p in wanted if p in fetched and fetched[p] == 0}
        if not fetched or missing:
            failures.append(
                f"{fetch_entry['file']}: fetched records per partition {fetched}, "
                f"produced {produced}"
            )
    assert not failures, "\n".join(failures)
