"""Cluster metadata: immutable snapshots of what the MetadataStore holds, and their encodings.

Owns: the meaning of every key and value under the store's root (KeySpace builds and parses the
keys; each value type encodes and decodes itself as JSON), and `ClusterMetadata`, one broker's
view of the cluster at one store revision, as Kafka's MetadataImage is a view of the metadata
log at one offset. A view changes only by `apply(watch events)`, which returns a new snapshot;
nothing here is ever mutated, so a snapshot can be handed to request handlers as is.

Facts taken from the store, not from the values (so they cannot disagree with it):
- a broker's epoch is the create_revision of its registration key (one per incarnation, as
  Kafka's broker epoch is the offset of its registration record, KIP-380/KIP-903);
- the controller epoch is the create_revision of the controller key;
- every key's mod_revision is kept (`mod_revision(key)`) for compare-and-set.

Invariants of PartitionState (checked on construction and on decode; Kafka's
PartitionRegistration): replicas are distinct and non-empty; the ISR is a subset of the
replicas, empty only while the partition has no leader (which only the eligible leader replicas
rules write, KIP-966); the leader is NO_LEADER or an ISR member; epochs are >= 0; a RECOVERING
partition (KIP-704, after an unclean election) has an ISR of exactly one broker, its leader
unless it has none; the ELR and the last known ELR are subsets of the replicas, disjoint from
each other and from the ISR.
"""

from __future__ import annotations

import functools
import json
import urllib.parse
import uuid
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum, IntEnum
from types import MappingProxyType
from typing import Any

from ackly.cluster.acls import AclBinding
from ackly.cluster.quotas import QuotaEntity, QuotaError, decode_values
from ackly.cluster.scram import ScramCredential
from ackly.cluster.store import KeyValue, WatchEvent
from ackly.errors import AcklyError
from ackly.listeners import PLAINTEXT, SECURITY_PROTOCOLS, Listener
from ackly.types import TopicPartition

NO_LEADER = -1
VALUE_VERSION = 1  # the "v" of every encoded value; a reader refuses versions it does not know
# How many `apply` steps partition_changes follows back to the older view before it compares
# every partition instead (a member applies a few batches between two looks).
_MAX_LINEAGE = 16


class MetadataDecodeError(AcklyError):
    """A value in the store that this version of ackly cannot read: version skew or a bug in
    whatever wrote it. Raised, never skipped: acting on a partial view is worse."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"cannot decode {what}: {reason}")


class LeaderRecoveryState(IntEnum):
    """KIP-704. After an unclean election the leader is RECOVERING until it has made its log
    consistent; until then the ISR stays {leader} and followers do not fetch from it."""

    RECOVERED = 0
    RECOVERING = 1


# --- keys --------------------------------------------------------------------------------------


class KeyKind(Enum):
    CLUSTER_ID = "cluster_id"
    CONTROLLER = "controller"
    BROKER = "broker"
    TOPIC = "topic"
    PARTITION = "partition"
    ACL = "acl"
    SCRAM = "scram"
    QUOTA = "quota"
    PRODUCER_IDS = "producer_ids"


@dataclass(frozen=True)
class ParsedKey:
    kind: KeyKind
    broker_id: int = -1
    topic: str = ""
    partition: int = -1
    acl: str = ""  # ACL: the binding's digest (AclBinding.key_name)
    user: str = ""  # SCRAM: the user name; topic holds the mechanism
    quota: QuotaEntity | None = None  # QUOTA: the entity the key names

    @property
    def tp(self) -> TopicPartition:
        assert self.kind is KeyKind.PARTITION
        return TopicPartition(self.topic, self.partition)


def _parse_index(text: str) -> int | None:
    """A non-negative decimal with no sign or leading zeros, as the key writers produce."""
    if not text.isdigit() or (len(text) > 1 and text[0] == "0"):
        return None
    return int(text)


@dataclass(frozen=True)
class KeySpace:
    """The store keys of one cluster. The root lets several clusters (or tests) share a store."""

    root: str = "/ackly"

    def __post_init__(self) -> None:
        assert self.root.startswith("/") and not self.root.endswith("/"), self.root

    @property
    def prefix(self) -> str:
        return self.root + "/"

    @property
    def cluster_id(self) -> str:
        return f"{self.root}/cluster_id"

    @property
    def controller(self) -> str:
        return f"{self.root}/controller"

    @property
    def brokers_prefix(self) -> str:
        return f"{self.root}/brokers/"

    def broker(self, broker_id: int) -> str:
        assert broker_id >= 0
        return f"{self.root}/brokers/{broker_id}"

    def topic(self, name: str) -> str:
        assert name and "/" not in name, name
        return f"{self.root}/topics/{name}"

    def partition(self, tp: TopicPartition) -> str:
        assert tp.topic and "/" not in tp.topic and tp.partition >= 0, tp
        return f"{self.root}/partitions/{tp.topic}/{tp.partition}"

    @property
    def producer_ids(self) -> str:
        """The next producer id no broker has claimed (cluster/producer_id_blocks.py)."""
        return f"{self.root}/producer_ids"

    @property
    def acls_prefix(self) -> str:
        return f"{self.root}/acls/"

    def acl(self, binding: AclBinding) -> str:
        return f"{self.root}/acls/{binding.key_name}"

    @property
    def scram_prefix(self) -> str:
        return f"{self.root}/scram/"

    def scram(self, mechanism: str, user: str) -> str:
        """One user's credential for one mechanism. The user name is percent-quoted: Kafka
        allows any character in it, "/" included."""
        assert mechanism and "/" not in mechanism and user, (mechanism, user)
        return f"{self.root}/scram/{mechanism}/{urllib.parse.quote(user, safe='')}"

    @property
    def quotas_prefix(self) -> str:
        return f"{self.root}/quotas/"

    def quota(self, entity: QuotaEntity) -> str:
        """One entity's client quotas (cluster/quotas.py), one key per entity as Kafka's
        ClientQuotaRecords of one entity."""
        return f"{self.root}/quotas/{entity.key_name}"

    def parse(self, key: str) -> ParsedKey | None:
        """What a key names, or None for keys this version does not know (ignored, so that
        a newer broker can add keys without breaking older ones)."""
        if not key.startswith(self.prefix):
            return None
        parts = key[len(self.prefix):].split("/")
        if parts == ["cluster_id"]:
            return ParsedKey(KeyKind.CLUSTER_ID)
        if parts == ["controller"]:
            return ParsedKey(KeyKind.CONTROLLER)
        if parts == ["producer_ids"]:
            return ParsedKey(KeyKind.PRODUCER_IDS)
        if len(parts) == 2 and parts[0] == "brokers":
            broker_id = _parse_index(parts[1])
            return None if broker_id is None else ParsedKey(KeyKind.BROKER, broker_id=broker_id)
        if len(parts) == 2 and parts[0] == "topics" and parts[1]:
            return ParsedKey(KeyKind.TOPIC, topic=parts[1])
        if len(parts) == 3 and parts[0] == "partitions" and parts[1]:
            index = _parse_index(parts[2])
            return None if index is None else ParsedKey(KeyKind.PARTITION, topic=parts[1], partition=index)
        if len(parts) == 2 and parts[0] == "acls" and parts[1]:
            return ParsedKey(KeyKind.ACL, acl=parts[1])
        if len(parts) == 3 and parts[0] == "scram" and parts[1] and parts[2]:
            return ParsedKey(KeyKind.SCRAM, topic=parts[1], user=urllib.parse.unquote(parts[2]))
        if len(parts) == 2 and parts[0] == "quotas" and parts[1]:
            try:
                return ParsedKey(KeyKind.QUOTA, quota=QuotaEntity.from_key_name(parts[1]))
            except QuotaError:
                return None
        return None


# --- values ------------------------------------------------------------------------------------


def _dump(doc: dict[str, Any]) -> bytes:
    return json.dumps({"v": VALUE_VERSION, **doc}, sort_keys=True, separators=(",", ":")).encode()


def _load(what: str, data: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MetadataDecodeError(what, f"not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise MetadataDecodeError(what, "not a JSON object")
    if doc.get("v") != VALUE_VERSION:
        raise MetadataDecodeError(what, f"unknown value version {doc.get('v')!r}")
    return doc


def _field(what: str, doc: Mapping[str, Any], name: str, kind: type) -> Any:
    value = doc.get(name)
    # bool is an int in Python; never accept one for the other.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise MetadataDecodeError(what, f"field {name!r} is not a {kind.__name__}: {value!r}")
    return value


def _int_list(what: str, doc: Mapping[str, Any], name: str) -> tuple[int, ...]:
    value = _field(what, doc, name, list)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise MetadataDecodeError(what, f"field {name!r} is not a list of integers: {value!r}")
    return tuple(value)


@dataclass(frozen=True)
class BrokerInfo:
    """A registered (live) broker. lease_id and epoch come from its key, not its value.

    `host`/`port` are where the other brokers reach it (its inter-broker listener);
    `endpoints` are all its advertised listeners (Kafka's registration record lists them the
    same way). No endpoints means the one PLAINTEXT listener at host:port (a registration
    from before listeners existed)."""

    broker_id: int
    host: str
    port: int
    rack: str | None = None
    shutting_down: bool = False  # controlled shutdown asked: move leadership away (KIP-631)
    lease_id: int | None = None
    epoch: int = 0
    endpoints: tuple[Listener, ...] = ()
    # This incarnation started without its data directory's clean-shutdown marker: a crash
    # may have taken unflushed records (KIP-966's previous broker epoch tells Kafka the same).
    unclean_shutdown: bool = False

    @property
    def listeners(self) -> tuple[Listener, ...]:
        return self.endpoints or (Listener(PLAINTEXT, self.host, self.port, PLAINTEXT),)

    def endpoint(self, listener_name: str) -> Listener | None:
        """The endpoint on a listener (None: the broker has no such listener). An empty name
        (a request from no listener: tests, the simulator) is the inter-broker address."""
        if not listener_name:
            return Listener(PLAINTEXT, self.host, self.port, PLAINTEXT)
        return next((e for e in self.listeners if e.name == listener_name), None)

    def encode(self) -> bytes:
        doc: dict[str, Any] = {
            "broker_id": self.broker_id, "host": self.host, "port": self.port, "rack": self.rack,
            "shutting_down": self.shutting_down,
        }
        if self.unclean_shutdown:  # only when set: older registrations read as clean
            doc["unclean_shutdown"] = True
        if self.endpoints:
            doc["endpoints"] = [
                {"name": e.name, "host": e.host, "port": e.port, "security_protocol": e.security_protocol}
                for e in self.endpoints
            ]
        return _dump(doc)

    @classmethod
    def decode(cls, data: bytes, *, lease_id: int | None = None, epoch: int = 0) -> BrokerInfo:
        doc = _load("broker", data)
        rack = doc.get("rack")
        if rack is not None and not isinstance(rack, str):
            raise MetadataDecodeError("broker", f"rack is not a string: {rack!r}")
        return cls(
            broker_id=_field("broker", doc, "broker_id", int), host=_field("broker", doc, "host", str),
            port=_field("broker", doc, "port", int), rack=rack,
            shutting_down=_field("broker", doc, "shutting_down", bool), lease_id=lease_id, epoch=epoch,
            endpoints=_endpoints(doc.get("endpoints", [])),
            unclean_shutdown=doc.get("unclean_shutdown", False) is True,
        )


def _endpoints(value: Any) -> tuple[Listener, ...]:
    if not isinstance(value, list):
        raise MetadataDecodeError("broker", f"endpoints is not a list: {value!r}")
    endpoints = []
    for entry in value:
        if not isinstance(entry, dict):
            raise MetadataDecodeError("broker", f"endpoint is not an object: {entry!r}")
        endpoint = Listener(
            _field("broker endpoint", entry, "name", str), _field("broker endpoint", entry, "host", str),
            _field("broker endpoint", entry, "port", int),
            _field("broker endpoint", entry, "security_protocol", str),
        )
        if endpoint.security_protocol not in SECURITY_PROTOCOLS:
            raise MetadataDecodeError("broker", f"unknown security protocol in {entry!r}")
        endpoints.append(endpoint)
    return tuple(endpoints)


@dataclass(frozen=True)
class ControllerInfo:
    """Who holds the controller key. epoch = its create_revision; lease_id = its lease."""

    broker_id: int
    lease_id: int | None = None
    epoch: int = 0

    def encode(self) -> bytes:
        return _dump({"broker_id": self.broker_id})

    @classmethod
    def decode(cls, data: bytes, *, lease_id: int | None = None, epoch: int = 0) -> ControllerInfo:
        doc = _load("controller", data)
        return cls(_field("controller", doc, "broker_id", int), lease_id=lease_id, epoch=epoch)


@dataclass(frozen=True)
class TopicInfo:
    """A topic: id, config overrides, and the replica assignment its partitions were created
    with. The assignment says which partitions exist and how the controller creates a missing
    partition state; once a partition state exists, its `replicas` are authoritative."""

    name: str
    topic_id: uuid.UUID
    assignment: tuple[tuple[int, ...], ...]
    configs: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "configs", MappingProxyType(dict(self.configs)))
        assert self.assignment, "a topic has at least one partition"
        for replicas in self.assignment:
            assert replicas and len(set(replicas)) == len(replicas), replicas

    @property
    def partitions(self) -> int:
        return len(self.assignment)

    def partition_ids(self) -> range:
        return range(len(self.assignment))

    def with_assignment(self, assignment: Sequence[tuple[int, ...]]) -> TopicInfo:
        return replace(self, assignment=tuple(assignment))

    def with_configs(self, configs: Mapping[str, str]) -> TopicInfo:
        return replace(self, configs=dict(configs))

    def encode(self) -> bytes:
        return _dump({
            "name": self.name, "topic_id": str(self.topic_id),
            "assignment": [list(r) for r in self.assignment], "configs": dict(self.configs),
        })

    @classmethod
    def decode(cls, data: bytes) -> TopicInfo:
        doc = _load("topic", data)
        try:
            topic_id = uuid.UUID(_field("topic", doc, "topic_id", str))
        except ValueError:
            raise MetadataDecodeError("topic", f"bad topic id {doc.get('topic_id')!r}") from None
        raw_assignment = _field("topic", doc, "assignment", list)
        assignment = tuple(_int_list("topic", {"r": r}, "r") for r in raw_assignment)
        if not assignment or any(not r or len(set(r)) != len(r) for r in assignment):
            raise MetadataDecodeError("topic", f"bad assignment {raw_assignment!r}")
        configs = _field("topic", doc, "configs", dict)
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in configs.items()):
            raise MetadataDecodeError("topic", f"configs are not strings: {configs!r}")
        return cls(_field("topic", doc, "name", str), topic_id, assignment, configs)


@dataclass(frozen=True)
class PartitionState:
    """Leader and ISR of one partition (Kafka's PartitionRegistration).

    leader_epoch rises with every leadership change, including to NO_LEADER (rule 10).
    partition_epoch rises with every change of any field: it is what an AlterPartition
    request must match (KIP-497), as the store's mod_revision is what a write must match.
    """

    topic_id: uuid.UUID
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    leader: int
    leader_epoch: int = 0
    partition_epoch: int = 0
    leader_recovery_state: LeaderRecoveryState = LeaderRecoveryState.RECOVERED
    # KIP-966: replicas out of the ISR that still hold every committed offset (they left it
    # while it was below min.insync.replicas, so the HW could not pass them); eligible to lead.
    elr: tuple[int, ...] = ()
    # Replicas that left the ELR by an unclean shutdown while the ISR stayed below the minimum:
    # what an unclean election tries first (they held the data most recently).
    last_known_elr: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "isr", tuple(sorted(self.isr)))
        object.__setattr__(self, "elr", tuple(sorted(self.elr)))
        object.__setattr__(self, "last_known_elr", tuple(sorted(self.last_known_elr)))
        problems = self.problems()
        assert not problems, f"{self}: {'; '.join(problems)}"

    def problems(self) -> list[str]:
        return partition_state_problems(
            self.replicas, self.isr, self.leader, self.leader_epoch, self.partition_epoch,
            self.leader_recovery_state, self.elr, self.last_known_elr,
        )

    @property
    def has_leader(self) -> bool:
        return self.leader != NO_LEADER

    @property
    def preferred_leader(self) -> int:
        return self.replicas[0]

    def encode(self) -> bytes:
        return _dump({
            "topic_id": str(self.topic_id), "replicas": list(self.replicas), "isr": list(self.isr),
            "leader": self.leader, "leader_epoch": self.leader_epoch,
            "partition_epoch": self.partition_epoch,
            "leader_recovery_state": int(self.leader_recovery_state),
            # Written only when set, so the states of clusters without ELR encode as before.
            **({"elr": list(self.elr)} if self.elr else {}),
            **({"last_known_elr": list(self.last_known_elr)} if self.last_known_elr else {}),
        })

    @classmethod
    def decode(cls, data: bytes) -> PartitionState:
        """The state these bytes encode (MetadataDecodeError if they are not a valid one).
        States are immutable and most partitions of a topic share their encoding (same
        replicas, ISR, leader and epochs): equal bytes decode once (`_decode_partition_state`),
        so a view of 10,000 partitions parses a handful of JSON documents, not 10,000."""
        if not isinstance(data, bytes):
            return cls._decode(data)  # not hashable (bytearray, memoryview)
        return _decode_partition_state(data)

    @classmethod
    def _decode(cls, data: bytes) -> PartitionState:
        what = "partition state"
        doc = _load(what, data)
        try:
            topic_id = uuid.UUID(_field(what, doc, "topic_id", str))
            recovery = LeaderRecoveryState(_field(what, doc, "leader_recovery_state", int))
        except ValueError as exc:
            raise MetadataDecodeError(what, str(exc)) from None
        replicas = _int_list(what, doc, "replicas")
        isr = tuple(sorted(_int_list(what, doc, "isr")))
        leader = _field(what, doc, "leader", int)
        leader_epoch = _field(what, doc, "leader_epoch", int)
        partition_epoch = _field(what, doc, "partition_epoch", int)
        elr = tuple(sorted(_int_list(what, doc, "elr"))) if "elr" in doc else ()
        last_known_elr = tuple(sorted(_int_list(what, doc, "last_known_elr"))) if "last_known_elr" in doc else ()
        problems = partition_state_problems(replicas, isr, leader, leader_epoch, partition_epoch, recovery,
                                            elr, last_known_elr)
        if problems:
            raise MetadataDecodeError(what, "; ".join(problems))
        return cls(topic_id, replicas, isr, leader, leader_epoch, partition_epoch, recovery, elr, last_known_elr)


@functools.lru_cache(maxsize=4096)
def _decode_partition_state(data: bytes) -> PartitionState:
    return PartitionState._decode(data)  # a decode error is raised each time, never cached


def partition_state_problems(
    replicas: tuple[int, ...], isr: tuple[int, ...], leader: int, leader_epoch: int, partition_epoch: int,
    leader_recovery_state: LeaderRecoveryState, elr: tuple[int, ...] = (),
    last_known_elr: tuple[int, ...] = (),
) -> list[str]:
    """Which of PartitionState's invariants these fields break (empty: none)."""
    found = []
    if not replicas or len(set(replicas)) != len(replicas):
        found.append(f"replicas {replicas} are empty or repeat a broker")
    if len(set(isr)) != len(isr) or not set(isr) <= set(replicas):
        found.append(f"ISR {isr} is not a subset of replicas {replicas}")
    if not isr and leader != NO_LEADER:
        found.append(f"ISR is empty but broker {leader} leads")
    if not isr and not elr and not last_known_elr:
        found.append("ISR, ELR and last known ELR are all empty")
    for name, members in (("ELR", elr), ("last known ELR", last_known_elr)):
        if len(set(members)) != len(members) or not set(members) <= set(replicas):
            found.append(f"{name} {members} is not a subset of replicas {replicas}")
    if set(elr) & set(isr) or set(last_known_elr) & (set(isr) | set(elr)):
        found.append(f"ISR {isr}, ELR {elr} and last known ELR {last_known_elr} overlap")
    if leader != NO_LEADER and leader not in isr:
        found.append(f"leader {leader} is not in the ISR {isr}")
    if leader_epoch < 0 or partition_epoch < 0:
        found.append("negative epoch")
    if leader_recovery_state is LeaderRecoveryState.RECOVERING and (
        len(isr) != 1 or leader not in (NO_LEADER, isr[0])
    ):
        found.append("a RECOVERING partition's ISR must be exactly its leader")
    return found


def encode_next_producer_id(next_id: int, broker_id: int) -> bytes:
    """The producer-ids key's value: every id below `next_id` is claimed (by `broker_id` for the
    last block; Kafka's ProducerIdsRecord)."""
    return _dump({"next": next_id, "broker_id": broker_id})


def decode_next_producer_id(data: bytes) -> int:
    doc = _load("producer ids", data)
    next_id = int(_field("producer ids", doc, "next", int))
    if next_id < 0:
        raise MetadataDecodeError("producer ids", f"next is negative: {next_id}")
    return next_id


def decode_cluster_id(data: bytes) -> str:
    doc = _load("cluster id", data)
    return str(_field("cluster id", doc, "cluster_id", str))


def encode_cluster_id(cluster_id: str) -> bytes:
    return _dump({"cluster_id": cluster_id})


def _decode_credential(key: str, data: bytes) -> ScramCredential:
    try:
        return ScramCredential.decode(data)
    except AcklyError as exc:
        raise MetadataDecodeError(key, str(exc)) from None


# --- the snapshot ------------------------------------------------------------------------------

def _empty() -> Mapping[Any, Any]:
    return MappingProxyType({})


@dataclass(frozen=True)
class ClusterMetadata:
    """One view of the cluster at store revision `revision`.

    `partitions` holds every partition key in the store, including leftovers of a deleted or
    re-created topic that the controller has not cleaned up yet; `partition(tp)` and
    `partitions_of(topic)` show only those that belong to a live topic (same topic id, index
    within its assignment). Everything else should use those.
    """

    keys: KeySpace = KeySpace()
    revision: int = 0
    cluster_id: str | None = None
    controller: ControllerInfo | None = None
    brokers: Mapping[int, BrokerInfo] = field(default_factory=_empty)
    topics: Mapping[str, TopicInfo] = field(default_factory=_empty)
    partitions: Mapping[TopicPartition, PartitionState] = field(default_factory=_empty)
    mod_revisions: Mapping[str, int] = field(default_factory=_empty)
    # ACL bindings by their key's last part (cluster/acls.py).
    acls: Mapping[str, AclBinding] = field(default_factory=_empty)
    # SCRAM credentials by (user, mechanism) (cluster/scram.py).
    scram_credentials: Mapping[tuple[str, str], ScramCredential] = field(default_factory=_empty)
    # Client quotas by entity: quota key -> value (cluster/quotas.py).
    client_quotas: Mapping[QuotaEntity, Mapping[str, float]] = field(default_factory=_empty)
    # The first producer id no broker has claimed; None: no block was ever claimed.
    next_producer_id: int | None = None
    # What `apply` changed from the view it was applied to, so that `partition_changes`
    # between two views of one line of updates looks at those partitions only, not at all
    # of them on every change (an ISR change of one partition out of thousands). The parent
    # is a weak reference: a view never keeps its history alive.
    parent: weakref.ref[ClusterMetadata] | None = field(default=None, compare=False, repr=False)
    touched_partitions: frozenset[TopicPartition] = field(default=frozenset(), compare=False, repr=False)
    touched_topics: frozenset[str] = field(default=frozenset(), compare=False, repr=False)

    @classmethod
    def from_kvs(
        cls, kvs: Iterable[KeyValue], revision: int, keys: KeySpace | None = None
    ) -> ClusterMetadata:
        """The view from a Get of the root prefix answered at `revision`."""
        builder = _Builder(cls(keys=keys or KeySpace()))
        for kv in kvs:
            builder.set(kv.key, kv.value, kv.mod_revision, kv.create_revision, kv.lease_id)
        return builder.build(revision)

    def apply(self, events: Iterable[WatchEvent]) -> ClusterMetadata:
        """The view after these watch events (in the order the watch delivered them)."""
        builder = _Builder(self)
        revision = self.revision
        for event in events:
            builder.set(event.key, event.value, event.mod_revision, event.create_revision, event.lease_id)
            revision = max(revision, event.mod_revision)
        return builder.build(revision)

    # Pure updates, for code (and tests) that build a view without a store.
    def with_broker(self, info: BrokerInfo, mod_revision: int) -> ClusterMetadata:
        epoch = info.epoch or mod_revision
        return self._with(self.keys.broker(info.broker_id), info.encode(), mod_revision, epoch, info.lease_id)

    def without_broker(self, broker_id: int, revision: int) -> ClusterMetadata:
        return self._with(self.keys.broker(broker_id), None, revision, 0, None)

    def with_controller(self, info: ControllerInfo, mod_revision: int) -> ClusterMetadata:
        epoch = info.epoch or mod_revision
        return self._with(self.keys.controller, info.encode(), mod_revision, epoch, info.lease_id)

    def with_topic(self, topic: TopicInfo, mod_revision: int) -> ClusterMetadata:
        return self._with(self.keys.topic(topic.name), topic.encode(), mod_revision, mod_revision, None)

    def with_partition(self, tp: TopicPartition, state: PartitionState, mod_revision: int) -> ClusterMetadata:
        return self._with(self.keys.partition(tp), state.encode(), mod_revision, mod_revision, None)

    def _with(
        self, key: str, value: bytes | None, mod_revision: int, create_revision: int, lease_id: int | None
    ) -> ClusterMetadata:
        builder = _Builder(self)
        builder.set(key, value, mod_revision, create_revision, lease_id)
        return builder.build(max(self.revision, mod_revision))

    # --- queries -------------------------------------------------------------------------------

    def mod_revision(self, key: str) -> int:
        """The key's mod_revision in this view; 0 if absent (what create-if-absent compares)."""
        return self.mod_revisions.get(key, 0)

    def partition_revision(self, tp: TopicPartition) -> int:
        return self.mod_revision(self.keys.partition(tp))

    def partition(self, tp: TopicPartition) -> PartitionState | None:
        """The state of a partition of a live topic, or None (unknown, or not created yet)."""
        topic = self.topics.get(tp.topic)
        state = self.partitions.get(tp)
        if topic is None or state is None or state.topic_id != topic.topic_id:
            return None
        return state if tp.partition < topic.partitions else None

    def partitions_of(self, topic: str) -> Iterator[tuple[TopicPartition, PartitionState]]:
        info = self.topics.get(topic)
        if info is None:
            return
        for index in info.partition_ids():
            tp = TopicPartition(topic, index)
            state = self.partition(tp)
            if state is not None:
                yield tp, state

    def all_partitions(self) -> Iterator[tuple[TopicPartition, PartitionState]]:
        for name in sorted(self.topics):
            yield from self.partitions_of(name)

    def is_leftover(self, tp: TopicPartition) -> bool:
        """A partition key that belongs to no live topic (deleted, re-created, or shrunk)."""
        return tp in self.partitions and self.partition(tp) is None

    def partition_changes(
        self, newer: ClusterMetadata
    ) -> list[tuple[TopicPartition, PartitionState | None, PartitionState | None]]:
        """(tp, state here, state in `newer`) for every partition whose state differs: what a
        broker acts on after new events (become leader or follower, stop, delete), as Kafka's
        brokers act on a MetadataDelta.

        When `newer` was built from this view by a few `apply` steps, only the partitions
        those steps touched (and every partition of a topic they touched) are compared."""
        touched = newer.touched_since(self)
        if touched is not None:
            tps, topics = touched
            candidates = set(tps)
            for name in topics:
                for view in (self, newer):
                    info = view.topics.get(name)
                    if info is not None:
                        candidates.update(TopicPartition(name, i) for i in info.partition_ids())
            changes = []
            for tp in sorted(candidates):
                old, new = self.partition(tp), newer.partition(tp)
                if old != new:
                    changes.append((tp, old, new))
            return changes
        mine = dict(self.all_partitions())
        theirs = dict(newer.all_partitions())
        return [
            (tp, mine.get(tp), theirs.get(tp))
            for tp in sorted(mine.keys() | theirs.keys())
            if mine.get(tp) != theirs.get(tp)
        ]

    def touched_since(
        self, older: ClusterMetadata
    ) -> tuple[set[TopicPartition], set[str]] | None:
        """The partition and topic keys set between `older` and this view, if this view
        descends from it by at most _MAX_LINEAGE `apply` steps; else None (compare all)."""
        tps: set[TopicPartition] = set()
        topics: set[str] = set()
        view: ClusterMetadata | None = self
        for _ in range(_MAX_LINEAGE):
            if view is older:
                return tps, topics
            if view is None or view.parent is None:
                return None
            tps.update(view.touched_partitions)
            topics.update(view.touched_topics)
            view = view.parent()
        return None

    def live_broker_ids(self) -> list[int]:
        return sorted(self.brokers)

    def led_by(self, broker_id: int) -> list[TopicPartition]:
        return [tp for tp, state in self.all_partitions() if state.leader == broker_id]


class _Builder:
    """Copy-on-write: one copy of each map per batch of events, however many events."""

    def __init__(self, base: ClusterMetadata) -> None:
        self.base = base
        self.cluster_id = base.cluster_id
        self.controller = base.controller
        self.next_producer_id = base.next_producer_id
        self.brokers = dict(base.brokers)
        self.topics = dict(base.topics)
        self.partitions = dict(base.partitions)
        self.mod_revisions = dict(base.mod_revisions)
        self.acls: dict[str, AclBinding] | None = None  # copied on the first ACL change
        self.scram_credentials: dict[tuple[str, str], ScramCredential] | None = None  # copied on the first change
        self.client_quotas: dict[QuotaEntity, Mapping[str, float]] | None = None  # copied on the first change
        self.touched_partitions: set[TopicPartition] = set()
        self.touched_topics: set[str] = set()

    def set(
        self, key: str, value: bytes | None, mod_revision: int, create_revision: int, lease_id: int | None
    ) -> None:
        parsed = self.base.keys.parse(key)
        if parsed is None:
            return
        if value is None:
            self.mod_revisions.pop(key, None)
        else:
            self.mod_revisions[key] = mod_revision
        kind = parsed.kind
        if kind is KeyKind.CLUSTER_ID:
            self.cluster_id = None if value is None else decode_cluster_id(value)
        elif kind is KeyKind.PRODUCER_IDS:
            self.next_producer_id = None if value is None else decode_next_producer_id(value)
        elif kind is KeyKind.CONTROLLER:
            if value is None:
                self.controller = None
            else:
                self.controller = ControllerInfo.decode(value, lease_id=lease_id, epoch=create_revision)
        elif kind is KeyKind.BROKER:
            if value is None:
                self.brokers.pop(parsed.broker_id, None)
            else:
                info = BrokerInfo.decode(value, lease_id=lease_id, epoch=create_revision)
                if info.broker_id != parsed.broker_id:
                    raise MetadataDecodeError(key, f"names broker {info.broker_id}")
                self.brokers[parsed.broker_id] = info
        elif kind is KeyKind.TOPIC:
            self.touched_topics.add(parsed.topic)
            if value is None:
                self.topics.pop(parsed.topic, None)
            else:
                topic = TopicInfo.decode(value)
                if topic.name != parsed.topic:
                    raise MetadataDecodeError(key, f"names topic {topic.name!r}")
                self.topics[parsed.topic] = topic
        elif kind is KeyKind.PARTITION:
            self.touched_partitions.add(parsed.tp)
            if value is None:
                self.partitions.pop(parsed.tp, None)
            else:
                self.partitions[parsed.tp] = PartitionState.decode(value)
        elif kind is KeyKind.ACL:
            if self.acls is None:
                self.acls = dict(self.base.acls)
            if value is None:
                self.acls.pop(parsed.acl, None)
            else:
                try:
                    self.acls[parsed.acl] = AclBinding.decode(value)
                except (ValueError, KeyError, TypeError) as exc:
                    raise MetadataDecodeError(key, str(exc)) from None
        elif kind is KeyKind.SCRAM:
            if self.scram_credentials is None:
                self.scram_credentials = dict(self.base.scram_credentials)
            if value is None:
                self.scram_credentials.pop((parsed.user, parsed.topic), None)
            else:
                credential = _decode_credential(key, value)
                if (credential.user, credential.mechanism) != (parsed.user, parsed.topic):
                    raise MetadataDecodeError(key, f"names {credential.user!r} / {credential.mechanism}")
                self.scram_credentials[(parsed.user, parsed.topic)] = credential
        elif kind is KeyKind.QUOTA:
            assert parsed.quota is not None
            if self.client_quotas is None:
                self.client_quotas = dict(self.base.client_quotas)
            if value is None:
                self.client_quotas.pop(parsed.quota, None)
            else:
                try:
                    entity, values = decode_values(value)
                except QuotaError as exc:
                    raise MetadataDecodeError(key, str(exc)) from None
                if entity != parsed.quota:
                    raise MetadataDecodeError(key, f"names entity {entity}")
                self.client_quotas[entity] = MappingProxyType(values)

    def build(self, revision: int) -> ClusterMetadata:
        return ClusterMetadata(
            keys=self.base.keys, revision=revision, cluster_id=self.cluster_id, controller=self.controller,
            next_producer_id=self.next_producer_id,
            brokers=MappingProxyType(self.brokers), topics=MappingProxyType(self.topics),
            partitions=MappingProxyType(self.partitions), mod_revisions=MappingProxyType(self.mod_revisions),
            acls=self.base.acls if self.acls is None else MappingProxyType(self.acls),
            scram_credentials=(self.base.scram_credentials if self.scram_credentials is None
                               else MappingProxyType(self.scram_credentials)),
            client_quotas=(self.base.client_quotas if self.client_quotas is None
                           else MappingProxyType(self.client_quotas)),
            parent=weakref.ref(self.base), touched_partitions=frozenset(self.touched_partitions),
            touched_topics=frozenset(self.touched_topics),
        )
