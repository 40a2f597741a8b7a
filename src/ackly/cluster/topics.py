"""The topic catalogue of single brokers before the metadata store, and topic-name rules.

`TopicCatalogue` is what a single broker kept in its data directory before topics moved into
the cluster metadata (a single broker now keeps a durable in-process metadata store, see
cluster/durable_store.py). It is only read, once, to import an older data directory
(broker/node.py); nothing writes it any more except that import's own reading of an absent file.

File `topics.json`: {"version": 1, "cluster_id": str, "topics": [{"name", "topic_id",
"partitions", "configs"}]}.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from ackly.log.disk import Disk

CATALOGUE_FILE = "topics.json"


@dataclass(frozen=True)
class TopicMetadata:
    name: str
    topic_id: uuid.UUID
    partitions: int
    configs: Mapping[str, str] = field(default_factory=dict)

    def with_partitions(self, partitions: int) -> TopicMetadata:
        return replace(self, partitions=partitions)

    def with_configs(self, configs: Mapping[str, str]) -> TopicMetadata:
        return replace(self, configs=dict(configs))


class TopicCatalogue:
    def __init__(self, disk: Disk, data_dir: str, new_cluster_id: str) -> None:
        self._disk = disk
        self._path = f"{data_dir}/{CATALOGUE_FILE}"
        self.topics: dict[str, TopicMetadata] = {}
        raw = disk.read_file(self._path)
        if raw is None:
            self.cluster_id = new_cluster_id
            self._save()
            return
        doc = json.loads(raw)
        if doc.get("version") != 1:
            raise ValueError(f"{self._path}: unsupported catalogue version {doc.get('version')!r}")
        self.cluster_id = str(doc["cluster_id"])
        for t in doc["topics"]:
            meta = TopicMetadata(
                name=t["name"], topic_id=uuid.UUID(t["topic_id"]), partitions=int(t["partitions"]),
                configs=dict(t["configs"]),
            )
            self.topics[meta.name] = meta

    def put(self, meta: TopicMetadata) -> None:
        """Add or replace a topic; durable on return."""
        self.topics[meta.name] = meta
        self._save()

    def remove(self, name: str) -> None:
        """Forget a topic; durable on return."""
        self.topics.pop(name, None)
        self._save()

    def _save(self) -> None:
        doc = {
            "version": 1,
            "cluster_id": self.cluster_id,
            "topics": [
                {"name": t.name, "topic_id": str(t.topic_id), "partitions": t.partitions,
                 "configs": dict(t.configs)}
                for t in sorted(self.topics.values(), key=lambda t: t.name)
            ],
        }
        self._disk.write_atomic(self._path, json.dumps(doc, indent=1).encode())


_LEGAL_TOPIC_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
MAX_TOPIC_NAME_LENGTH = 249  # Kafka's Topic.MAX_NAME_LENGTH: the directory name must fit


def topic_name_problem(name: str | None) -> str | None:
    """Why `name` is not a legal topic name (Kafka's Topic.validate), or None if it is."""
    if not name:
        return "topic name is empty"
    if name in (".", ".."):
        return f"topic name cannot be {name!r}"
    if len(name) > MAX_TOPIC_NAME_LENGTH:
        return f"topic name is longer than {MAX_TOPIC_NAME_LENGTH} characters"
    bad = sorted(set(name) - _LEGAL_TOPIC_CHARS)
    if bad:
        return (
            f"topic name {name!r} contains illegal characters {''.join(bad)!r}"
            " (allowed: a-z A-Z 0-9 . _ -)"
        )
    return None
