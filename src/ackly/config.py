"""Typed broker and topic configuration; Kafka's property names are mapped here and only here.

A topic config value comes from the topic's own override if it has one, else from the
broker's default for it (its "synonym", e.g. `retention.ms` <- `log.retention.ms`), else
from Kafka's default. DescribeConfigs reports which of the three it was.

Every value is validated when it enters (start-up `--config`, CreateTopics, AlterConfigs):
a bad value is refused with the key and the reason, never coerced.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from ackly import kafka_broker_keys
from ackly.errors import ConfigError
from ackly.listeners import (
    DEFAULT_PROTOCOL_MAP,
    parse_protocol_map,
    resolve_listeners,
    split_listener_override,
)
from ackly.ssl_principal import parse_rules

# Kafka's class name of the rack-aware replica selector (KIP-392), the one built in.
RACK_AWARE_REPLICA_SELECTOR = "org.apache.kafka.common.replica.RackAwareReplicaSelector"


class Kind(Enum):
    INT = "int"
    LONG = "long"
    DOUBLE = "double"
    BOOLEAN = "boolean"
    STRING = "string"
    LIST = "list"


class Source(Enum):
    """Where a config value came from; numbers are DescribeConfigs' ConfigSource."""

    TOPIC = 1  # DYNAMIC_TOPIC_CONFIG
    BROKER_DYNAMIC = 2  # DYNAMIC_BROKER_CONFIG (IncrementalAlterConfigs on this broker)
    BROKER_STATIC = 4  # STATIC_BROKER_CONFIG
    DEFAULT = 5  # DEFAULT_CONFIG


@dataclass(frozen=True)
class ConfigDef:
    name: str
    kind: Kind
    default: Any
    doc: str
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] | None = None
    broker_synonym: str | None = None  # the broker-wide default for a topic config
    read_only: bool = False
    # A further check of the parsed value: returns why it is refused, or None.
    check: Callable[[Any], str | None] | None = None
    # A secret (a key's password, an inline private key): never shown (DescribeConfigs
    # answers null and is_sensitive, as Kafka does for PASSWORD configs).
    sensitive: bool = False
    # May also be set for one listener (`listener.name.<name>.<key>`, Kafka's prefix).
    per_listener: bool = False
    # Known but not implemented: why. Only the default is accepted (a value that would mean
    # something this broker does not do is refused, never stored and ignored).
    unsupported: str | None = None

    def parse(self, raw: str) -> Any:
        """Turn a string from the wire or the command line into a typed value, or refuse it."""
        value = self._parse(raw)
        if self.check is not None and (reason := self.check(value)) is not None:
            raise ConfigError(self.name, reason)
        if self.unsupported is not None and value != self.default:
            raise ConfigError(self.name, f"{self.render(value)!r} is not supported: "
                                         f"{self.unsupported} (only the default "
                                         f"{self.render(self.default)!r} is accepted)")
        return value

    def _parse(self, raw: str) -> Any:
        if self.kind in (Kind.INT, Kind.LONG):
            try:
                value: Any = int(raw.strip())
            except ValueError:
                raise ConfigError(self.name, f"{raw!r} is not an integer") from None
            bits = 31 if self.kind is Kind.INT else 63
            if not -(2**bits) <= value < 2**bits:
                raise ConfigError(self.name, f"{value} is out of range for a {self.kind.value}")
            if self.minimum is not None and value < self.minimum:
                raise ConfigError(self.name, f"{value} is below the minimum {self.minimum}")
            if self.maximum is not None and value > self.maximum:
                raise ConfigError(self.name, f"{value} is above the maximum {self.maximum}")
            return value
        if self.kind is Kind.DOUBLE:
            try:
                number = float(raw.strip())
            except ValueError:
                raise ConfigError(self.name, f"{raw!r} is not a number") from None
            if number != number:
                raise ConfigError(self.name, "NaN is not a valid value")
            if self.minimum is not None and number < self.minimum:
                raise ConfigError(self.name, f"{number} is below the minimum {self.minimum}")
            if self.maximum is not None and number > self.maximum:
                raise ConfigError(self.name, f"{number} is above the maximum {self.maximum}")
            return number
        if self.kind is Kind.BOOLEAN:
            lowered = raw.strip().lower()
            if lowered not in ("true", "false"):
                raise ConfigError(self.name, f"{raw!r} is not true or false")
            return lowered == "true"
        if self.kind is Kind.LIST:
            items = tuple(item.strip() for item in raw.split(",") if item.strip())
            for item in items:
                if self.choices is not None and item not in self.choices:
                    raise ConfigError(self.name, f"{item!r} is not one of {', '.join(self.choices)}")
            if not items and self.default != ():
                raise ConfigError(self.name, "the list is empty")
            return items
        if self.choices is not None and raw not in self.choices:
            raise ConfigError(self.name, f"{raw!r} is not one of {', '.join(self.choices)}")
        return raw

    def render(self, value: Any) -> str:
        """The value as Kafka writes it in DescribeConfigs."""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, tuple):
            return ",".join(value)
        return str(value)


_WEEK_MS = 7 * 24 * 60 * 60 * 1000
_INT_MAX = 2**31 - 1
_MiB = 1024 * 1024


def parse_connection_overrides(raw: str) -> dict[str, int]:
    """`host:count,host:count` (Kafka's max.connections.per.ip.overrides) as {host: count};
    raises ValueError saying which entry is wrong. An IPv6 host is written bare
    (`::1:5`: the count follows the last colon)."""
    overrides: dict[str, int] = {}
    for entry in (e.strip() for e in raw.split(",")):
        if not entry:
            continue
        host, sep, count = entry.rpartition(":")
        host = host.strip().strip("[]")
        if not sep or not host:
            raise ValueError(f"{entry!r} is not host:count")
        try:
            limit = int(count.strip())
        except ValueError:
            raise ValueError(f"{entry!r}: {count.strip()!r} is not an integer") from None
        if not 0 <= limit <= _INT_MAX:
            raise ValueError(f"{entry!r}: the count must be between 0 and {_INT_MAX}")
        if host in overrides:
            raise ValueError(f"{host!r} is given twice")
        overrides[host] = limit
    return overrides


def _check_overrides(value: Any) -> str | None:
    try:
        parse_connection_overrides(str(value))
    except ValueError as exc:
        return str(exc)
    return None


def _check_protocol_map(value: Any) -> str | None:
    try:
        parse_protocol_map(str(value))
    except ConfigError as exc:
        return exc.reason
    return None


def _check_mapping_rules(value: Any) -> str | None:
    try:
        parse_rules(str(value))
    except ValueError as exc:
        return str(exc)
    return None


def _check_one_dir(value: Any) -> str | None:
    dirs = [d for d in str(value).split(",") if d.strip()]
    if len(dirs) > 1:
        return (f"{len(dirs)} directories given; this broker keeps its logs in one data "
                "directory")
    return None


def _not_zero(value: Any) -> str | None:
    return "0 is not allowed; use -1 for no limit" if value == 0 else None


# Kafka's compression.type values for a topic (BrokerCompressionType): a codec, or keep the
# producer's batches as they came.
COMPRESSION_TYPES = ("uncompressed", "zstd", "lz4", "snappy", "gzip", "producer")
_LONG_MAX = 2**63 - 1


def _check_gzip_level(value: Any) -> str | None:
    # Kafka's CompressionType.GZIP levelValidator: Deflater's -1 (its default, 6) or 1..9.
    return None if value == -1 or 1 <= value <= 9 else f"{value} is not -1 or between 1 and 9"


def _check_throttled_replicas(value: Any) -> str | None:
    # Kafka's ThrottledReplicaListValidator: `*`, or partition:broker pairs.
    items = tuple(value)
    if items == ("*",):
        return None
    for item in items:
        partition, sep, broker = item.partition(":")
        if not sep or not partition.strip().isdigit() or not broker.strip().isdigit():
            return f"{item!r} is not partitionId:brokerId (or the list is not just *)"
    return None


# Topic-level configs: every one of Kafka 4's (LogConfig), by Kafka's name, type, default,
# validation and broker synonym. The attribute of TopicConfig is the name with dots as
# underscores. A def with `unsupported` set is known but not implemented: any value other than
# its default is refused with that reason (INVALID_CONFIG), never accepted and ignored.
_TIERED = "tiered storage is not supported by this broker"
_THROTTLE = ("replication throttles are not supported by this broker (no reassignment "
             "throttle exists)")
TOPIC_CONFIG_DEFS: tuple[ConfigDef, ...] = (
    ConfigDef("cleanup.policy", Kind.LIST, ("delete",), "delete old segments, or compact by key",
              choices=("delete", "compact"), broker_synonym="log.cleanup.policy"),
    ConfigDef("retention.ms", Kind.LONG, _WEEK_MS, "delete segments older than this (-1: keep)",
              minimum=-1, broker_synonym="log.retention.ms"),
    ConfigDef("retention.bytes", Kind.LONG, -1, "delete oldest segments above this size (-1: keep)",
              minimum=-1, broker_synonym="log.retention.bytes"),
    ConfigDef("segment.bytes", Kind.INT, 1024 * 1024 * 1024, "roll a segment at this size",
              minimum=14, broker_synonym="log.segment.bytes"),
    ConfigDef("segment.ms", Kind.LONG, _WEEK_MS, "roll a segment at this age",
              minimum=1, broker_synonym="log.roll.ms"),
    ConfigDef("segment.jitter.ms", Kind.LONG, 0,
              "roll a segment up to this much before segment.ms (each partition takes a fixed "
              "share of it, so partitions created together do not all roll at once)",
              minimum=0, broker_synonym="log.roll.jitter.ms"),
    ConfigDef("segment.index.bytes", Kind.INT, 10 * 1024 * 1024, "maximum size of an offset index",
              minimum=8, broker_synonym="log.index.size.max.bytes"),
    ConfigDef("index.interval.bytes", Kind.INT, 4096, "log bytes between two index entries",
              minimum=0, broker_synonym="log.index.interval.bytes"),
    ConfigDef("file.delete.delay.ms", Kind.LONG, 60_000, "delay before a deleted segment's files go",
              minimum=0, broker_synonym="log.segment.delete.delay.ms"),
    ConfigDef("preallocate", Kind.BOOLEAN, False,
              "accepted for compatibility; segment files are never preallocated here (a no-op: "
              "the files grow as they are written)", broker_synonym="log.preallocate"),
    ConfigDef("max.message.bytes", Kind.INT, 1024 * 1024 + 12,
              "largest record batch accepted (after recompression); larger ones are refused "
              "with MESSAGE_TOO_LARGE", minimum=0, broker_synonym="message.max.bytes"),
    ConfigDef("message.timestamp.type", Kind.STRING, "CreateTime",
              "CreateTime keeps the producer's timestamps; LogAppendTime overwrites each batch's "
              "with the broker's clock at the append", choices=("CreateTime", "LogAppendTime"),
              broker_synonym="log.message.timestamp.type"),
    # KIP-937 (defaults as Kafka 4: any age, at most one hour ahead): a CreateTime timestamp
    # outside [now - before, now + after] is refused with INVALID_TIMESTAMP.
    ConfigDef("message.timestamp.before.max.ms", Kind.LONG, _LONG_MAX,
              "oldest CreateTime timestamp accepted, as a distance before the broker's clock",
              minimum=0, broker_synonym="log.message.timestamp.before.max.ms"),
    ConfigDef("message.timestamp.after.max.ms", Kind.LONG, 3_600_000,
              "latest CreateTime timestamp accepted, as a distance after the broker's clock",
              minimum=0, broker_synonym="log.message.timestamp.after.max.ms"),
    ConfigDef("min.insync.replicas", Kind.INT, 1, "ISR size below which acks=all is refused",
              minimum=1, broker_synonym="min.insync.replicas"),
    ConfigDef("unclean.leader.election.enable", Kind.BOOLEAN, False,
              "let an out-of-sync replica become leader (may lose acknowledged writes)",
              broker_synonym="unclean.leader.election.enable"),
    # ackly's own: when appended bytes reach the disk (docs/guarantees.md rule 5).
    ConfigDef("flush.policy", Kind.STRING, "always",
              "always: fsync before acknowledging (group commit); interval: every "
              "flush.interval.ms; never: leave it to the OS. flush.messages and flush.ms add "
              "flushes to it, never remove any; flush.messages=1 acts as always",
              choices=("always", "interval", "never"), broker_synonym="log.flush.policy"),
    ConfigDef("flush.interval.ms", Kind.LONG, 1000, "flush period under flush.policy=interval",
              minimum=1, broker_synonym="log.flush.policy.interval.ms"),
    # Kafka's own flush settings, honoured on top of flush.policy (the stronger one wins).
    ConfigDef("flush.messages", Kind.LONG, _LONG_MAX,
              "fsync once this many messages are unflushed; 1 means an fsync before every "
              "acknowledgement, as flush.policy=always", minimum=1,
              broker_synonym="log.flush.interval.messages"),
    ConfigDef("flush.ms", Kind.LONG, _LONG_MAX,
              "fsync at most this long after an unflushed append", minimum=0,
              broker_synonym="log.flush.interval.ms"),
    ConfigDef("compression.type", Kind.STRING, "producer",
              "producer keeps each batch as the producer sent it; a codec (or uncompressed) "
              "makes the broker recompress batches in any other codec",
              choices=COMPRESSION_TYPES, broker_synonym="compression.type"),
    # KIP-390: the level the broker recompresses with.
    ConfigDef("compression.gzip.level", Kind.INT, -1,
              "gzip level for recompression (-1: zlib's default, 6)", check=_check_gzip_level,
              broker_synonym="compression.gzip.level"),
    ConfigDef("compression.lz4.level", Kind.INT, 9, "lz4 level for recompression (1 to 17)",
              minimum=1, maximum=17, broker_synonym="compression.lz4.level"),
    ConfigDef("compression.zstd.level", Kind.INT, 3, "zstd level for recompression (-131072 to 22)",
              minimum=-131072, maximum=22, broker_synonym="compression.zstd.level"),
    # Log compaction (cleanup.policy=compact); Kafka's names, synonyms and defaults.
    ConfigDef("min.cleanable.dirty.ratio", Kind.DOUBLE, 0.5,
              "clean when the uncleaned part is at least this share of the log",
              minimum=0, maximum=1, broker_synonym="log.cleaner.min.cleanable.ratio"),
    ConfigDef("min.compaction.lag.ms", Kind.LONG, 0,
              "a record stays uncompacted at least this long", minimum=0,
              broker_synonym="log.cleaner.min.compaction.lag.ms"),
    ConfigDef("max.compaction.lag.ms", Kind.LONG, _LONG_MAX,
              "a record is compacted at most this long after it is written, whatever the ratio",
              minimum=1, broker_synonym="log.cleaner.max.compaction.lag.ms"),
    ConfigDef("delete.retention.ms", Kind.LONG, 86_400_000,
              "keep tombstones and transaction markers this long after they are first cleaned",
              minimum=0, broker_synonym="log.cleaner.delete.retention.ms"),
    # Known, not implemented: refused unless given their default.
    ConfigDef("leader.replication.throttled.replicas", Kind.LIST, (),
              "replicas whose leader side would be throttled (not supported)",
              check=_check_throttled_replicas, unsupported=_THROTTLE),
    ConfigDef("follower.replication.throttled.replicas", Kind.LIST, (),
              "replicas whose follower side would be throttled (not supported)",
              check=_check_throttled_replicas, unsupported=_THROTTLE),
    ConfigDef("remote.storage.enable", Kind.BOOLEAN, False,
              "tiered storage for this topic (not supported)", unsupported=_TIERED),
    ConfigDef("local.retention.ms", Kind.LONG, -2,
              "local retention under tiered storage (not supported; -2: retention.ms)",
              minimum=-2, broker_synonym="log.local.retention.ms", unsupported=_TIERED),
    ConfigDef("local.retention.bytes", Kind.LONG, -2,
              "local retention under tiered storage (not supported; -2: retention.bytes)",
              minimum=-2, broker_synonym="log.local.retention.bytes", unsupported=_TIERED),
    ConfigDef("remote.log.copy.disable", Kind.BOOLEAN, False,
              "stop copying to tiered storage (not supported)", unsupported=_TIERED),
    ConfigDef("remote.log.delete.on.disable", Kind.BOOLEAN, False,
              "delete remote data when tiered storage is turned off (not supported)",
              unsupported=_TIERED),
)
TOPIC_CONFIGS: Mapping[str, ConfigDef] = {d.name: d for d in TOPIC_CONFIG_DEFS}

_BROKER_ONLY_DEFS: tuple[ConfigDef, ...] = (
    ConfigDef("broker.id", Kind.INT, 0, "this broker's id", minimum=0, read_only=True),
    ConfigDef("num.partitions", Kind.INT, 1, "partitions of an auto-created topic", minimum=1),
    ConfigDef("default.replication.factor", Kind.INT, 1, "replicas of an auto-created topic",
              minimum=1),
    ConfigDef("auto.create.topics.enable", Kind.BOOLEAN, True,
              "create a topic when a client asks for its metadata"),
    ConfigDef("delete.topic.enable", Kind.BOOLEAN, True, "allow DeleteTopics"),
    ConfigDef("socket.request.max.bytes", Kind.INT, 100 * 1024 * 1024,
              "largest request frame; a larger one closes the connection", minimum=1),
    # Resources a client cannot exhaust (the shell enforces them: server/connection.py).
    # Kafka's queued.max.request.bytes defaults to -1 (no limit); ackly bounds it by default
    # so that no set of clients can make the broker allocate more than this for requests in
    # flight: 256 MiB holds 2.5 frames of the largest size (socket.request.max.bytes) and
    # thousands of ordinary ones, and fits next to the page cache on a small machine.
    ConfigDef("queued.max.request.bytes", Kind.LONG, 256 * _MiB,
              "bytes of requests being received or waiting for their answer, over all "
              "connections; when they are reached the broker stops reading from sockets "
              "until answers release memory (-1: no limit)", minimum=-1, check=_not_zero),
    ConfigDef("max.connections", Kind.INT, _INT_MAX,
              "client connections the broker keeps open; more are closed as they are accepted",
              minimum=0),
    ConfigDef("max.connections.per.ip", Kind.INT, _INT_MAX,
              "client connections one IP address may keep open; more are closed as they are "
              "accepted (0 needs max.connections.per.ip.overrides)", minimum=0),
    ConfigDef("max.connections.per.ip.overrides", Kind.STRING, "",
              "per-host exceptions to max.connections.per.ip, as host:count,host:count",
              check=_check_overrides),
    ConfigDef("connections.max.idle.ms", Kind.LONG, 600_000,
              "close a connection that sent and received nothing for this long and has no "
              "request in flight (-1: never)", minimum=-1, check=_not_zero),
    # ackly's own: Kafka has no such deadline before authentication exists; a connection
    # that dribbles a partial first frame forever (slowloris) would otherwise stay open.
    ConfigDef("connections.first.request.timeout.ms", Kind.LONG, 10_000,
              "close a new connection that has not sent a complete first request (on a SASL "
              "listener: that has not authenticated) within this (-1: never)", minimum=-1,
              check=_not_zero),
    # Listeners (KIP-103; listeners.py): Kafka's keys. Unset `listeners` means the one
    # PLAINTEXT listener of --host/--port.
    ConfigDef("listeners", Kind.STRING, "",
              "NAME://host:port,... to listen on (empty: PLAINTEXT on --host/--port)",
              read_only=True),
    ConfigDef("advertised.listeners", Kind.STRING, "",
              "NAME://host:port,... given to clients and brokers (empty: as listeners)",
              read_only=True),
    ConfigDef("listener.security.protocol.map", Kind.STRING, DEFAULT_PROTOCOL_MAP,
              "NAME:PROTOCOL,... the security protocol of each listener name", read_only=True,
              check=_check_protocol_map),
    ConfigDef("inter.broker.listener.name", Kind.STRING, "",
              "the listener brokers reach each other on (empty: PLAINTEXT, or the only one)",
              read_only=True),
    # TLS (Kafka's ssl.* keys, PEM only); each may be set per listener.
    ConfigDef("ssl.keystore.type", Kind.STRING, "PEM", "format of the key store (PEM only)",
              choices=("PEM",), per_listener=True),
    ConfigDef("ssl.keystore.location", Kind.STRING, "",
              "PEM file with the certificate chain and the private key", per_listener=True),
    ConfigDef("ssl.keystore.certificate.chain", Kind.STRING, "",
              "the certificate chain in PEM, inline", per_listener=True),
    ConfigDef("ssl.keystore.key", Kind.STRING, "", "the private key in PEM, inline",
              sensitive=True, per_listener=True),
    ConfigDef("ssl.key.password", Kind.STRING, "", "password of an encrypted private key",
              sensitive=True, per_listener=True),
    ConfigDef("ssl.truststore.type", Kind.STRING, "PEM", "format of the trust store (PEM only)",
              choices=("PEM",), per_listener=True),
    ConfigDef("ssl.truststore.location", Kind.STRING, "",
              "PEM file with the CA certificates that client (and peer) certificates must chain to",
              per_listener=True),
    ConfigDef("ssl.truststore.certificates", Kind.STRING, "",
              "the trusted CA certificates in PEM, inline", per_listener=True),
    ConfigDef("ssl.client.auth", Kind.STRING, "none",
              "ask clients for a certificate: none, requested, or required (mTLS)",
              choices=("none", "requested", "required"), per_listener=True),
    ConfigDef("ssl.enabled.protocols", Kind.LIST, ("TLSv1.2", "TLSv1.3"),
              "TLS versions accepted (1.2 and later only)", choices=("TLSv1.2", "TLSv1.3"),
              per_listener=True),
    ConfigDef("ssl.cipher.suites", Kind.STRING, "",
              "OpenSSL cipher list for TLS 1.2 (empty: OpenSSL's default)", per_listener=True),
    ConfigDef("ssl.endpoint.identification.algorithm", Kind.STRING, "https",
              "check a peer broker's host name against its certificate (https), or not (empty)",
              choices=("https", ""), per_listener=True),
    ConfigDef("ssl.principal.mapping.rules", Kind.STRING, "DEFAULT",
              "how a client certificate's subject becomes a principal name (Kafka's "
              "DEFAULT and RULE:pattern/replacement/[LU] syntax)", per_listener=True,
              check=_check_mapping_rules),
    # The metadata store (--metadata etcds://... for TLS): ackly's own keys.
    ConfigDef("metadata.etcd.ssl.cafile", Kind.STRING, "",
              "PEM file of the CA that etcd's certificate chains to (empty: the system's)"),
    ConfigDef("metadata.etcd.ssl.certfile", Kind.STRING, "",
              "PEM client certificate for etcd (its --client-cert-auth)"),
    ConfigDef("metadata.etcd.ssl.keyfile", Kind.STRING, "", "PEM private key of that certificate"),
    ConfigDef("metadata.etcd.user", Kind.STRING, "", "etcd user to authenticate as (empty: no auth)"),
    ConfigDef("metadata.etcd.password", Kind.STRING, "", "that user's password", sensitive=True),
    # SASL (broker/sasl.py), on listeners whose protocol is SASL_PLAINTEXT or SASL_SSL.
    # Kafka's default is GSSAPI, which needs a Kerberos realm ackly does not have; the SCRAM
    # mechanisms never send the password, so they are on by default. PLAIN sends it as it is
    # (safe only over TLS) and is turned on by naming it here.
    ConfigDef("sasl.enabled.mechanisms", Kind.LIST, ("SCRAM-SHA-512", "SCRAM-SHA-256"),
              "SASL mechanisms clients may authenticate with",
              choices=("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"), per_listener=True),
    # A broker's own SASL client side, toward its peers on an inter-broker listener with SASL
    # (server/peer_sasl.py). Kafka's default mechanism is GSSAPI, which ackly does not have.
    ConfigDef("sasl.mechanism.inter.broker.protocol", Kind.STRING, "SCRAM-SHA-512",
              "the mechanism brokers authenticate to each other with",
              choices=("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")),
    ConfigDef("sasl.jaas.config", Kind.STRING, "",
              'this broker\'s credentials toward its peers: username="..." password="..." (a '
              "JAAS line as Kafka's; only these two options are read)", sensitive=True,
              per_listener=True),
    ConfigDef("sasl.server.max.receive.size", Kind.INT, 524_288,
              "largest frame a connection may send before it has authenticated", minimum=1),
    # Client quotas (broker/client_quotas.py): rates are measured over quota.window.num
    # samples of quota.window.size.seconds each, as Kafka's ClientQuotaManager.
    ConfigDef("quota.window.num", Kind.INT, 11, "number of samples a client quota's rate is measured over",
              minimum=1),
    ConfigDef("quota.window.size.seconds", Kind.INT, 1, "length of one sample of a client quota's rate",
              minimum=1),
    ConfigDef("connections.max.reauth.ms", Kind.LONG, 0,
              "a SASL session lasts this long; a connection that has not re-authenticated "
              "by then is closed at its next request (0: sessions do not end; KIP-368)", minimum=0),
    # Kafka's data directories: ackly has one (the --data-dir); log.dirs may name it.
    ConfigDef("log.dirs", Kind.STRING, "",
              "the data directory (one only; empty: log.dir, else --data-dir)", read_only=True,
              check=lambda v: _check_one_dir(v)),
    ConfigDef("log.dir", Kind.STRING, "", "the data directory when log.dirs is not set "
              "(empty: --data-dir)", read_only=True, check=lambda v: _check_one_dir(v)),
    ConfigDef("controller.listener.names", Kind.STRING, "",
              "the KRaft controller's listeners: not opened (the metadata lives in the store)",
              read_only=True),
    # KRaft's name for the broker id: the same number as broker.id when both are given.
    ConfigDef("node.id", Kind.INT, -1, "this node's id (KRaft's name for broker.id; -1: "
              "broker.id)", minimum=-1, read_only=True),
    # Kafka's coarser synonyms of topic defaults, used when the finer key is not set
    # (retention: ms > minutes > hours; roll: ms > hours).
    ConfigDef("log.retention.minutes", Kind.INT, 7 * 24 * 60,
              "log.retention.ms in minutes, when log.retention.ms is not set", minimum=-1),
    ConfigDef("log.retention.hours", Kind.INT, 7 * 24,
              "log.retention.ms in hours, when neither log.retention.ms nor "
              "log.retention.minutes is set", minimum=-1),
    ConfigDef("log.roll.hours", Kind.INT, 7 * 24, "log.roll.ms in hours, when it is not set",
              minimum=1),
    ConfigDef("log.roll.jitter.hours", Kind.INT, 0,
              "log.roll.jitter.ms in hours, when it is not set", minimum=0),
    ConfigDef("log.flush.scheduler.interval.ms", Kind.LONG, 2**63 - 1,
              "log.flush.interval.ms when it is not set (the flush check itself runs on every "
              "tick)", minimum=0),
    ConfigDef("log.retention.check.interval.ms", Kind.LONG, 300_000,
              "how often retention runs", minimum=1),
    ConfigDef("log.flush.offset.checkpoint.interval.ms", Kind.LONG, 60_000,
              "how often the recovery point is checkpointed", minimum=1),
    ConfigDef("fetch.max.bytes", Kind.INT, 55 * 1024 * 1024, "cap on one fetch response",
              minimum=1024),
    ConfigDef("group.initial.rebalance.delay.ms", Kind.INT, 3000, "first-join delay", minimum=0),
    # Consumer groups (classic protocol) and their offsets; Kafka's names and defaults.
    ConfigDef("group.min.session.timeout.ms", Kind.INT, 6000,
              "smallest session timeout a member may ask for", minimum=0),
    ConfigDef("group.max.session.timeout.ms", Kind.INT, 1_800_000,
              "largest session timeout a member may ask for", minimum=0),
    ConfigDef("group.max.size", Kind.INT, 2**31 - 1, "most members one group may have", minimum=1),
    # Consumer groups of the KIP-848 protocol (ConsumerGroupHeartbeat); Kafka's names and
    # defaults. The broker, not the member, sets the session timeout and heartbeat interval.
    ConfigDef("group.consumer.session.timeout.ms", Kind.INT, 45_000,
              "a consumer-protocol member without a heartbeat for this long is removed", minimum=1),
    ConfigDef("group.consumer.heartbeat.interval.ms", Kind.INT, 5_000,
              "how often consumer-protocol members heartbeat", minimum=1),
    ConfigDef("group.consumer.assignors", Kind.LIST, ("uniform", "range"),
              "server-side assignors members may ask for; the first is the default",
              choices=("uniform", "range", "org.apache.kafka.coordinator.group.assignor.UniformAssignor",
                       "org.apache.kafka.coordinator.group.assignor.RangeAssignor")),
    ConfigDef("group.consumer.max.size", Kind.INT, 2**31 - 1,
              "most members one consumer-protocol group may have", minimum=1),
    ConfigDef("offsets.topic.num.partitions", Kind.INT, 50,
              "partitions of __consumer_offsets (fixed once the topic exists)", minimum=1),
    ConfigDef("offsets.topic.replication.factor", Kind.INT, 3,
              "replicas of __consumer_offsets; in a cluster it is created once this many brokers "
              "are alive (COORDINATOR_NOT_AVAILABLE until then); a lone broker uses its one",
              minimum=1),
    ConfigDef("offsets.topic.segment.bytes", Kind.INT, 100 * 1024 * 1024,
              "segment size of __consumer_offsets", minimum=14),
    ConfigDef("offsets.retention.minutes", Kind.INT, 7 * 24 * 60,
              "keep the offsets of a group without members this long", minimum=1),
    ConfigDef("offsets.retention.check.interval.ms", Kind.LONG, 600_000,
              "how often expired offsets are removed", minimum=1),
    ConfigDef("offsets.commit.timeout.ms", Kind.INT, 5000,
              "how long a coordinator write may wait to be committed before the request fails",
              minimum=1),
    ConfigDef("offset.metadata.max.bytes", Kind.INT, 4096,
              "largest metadata string an offset commit may carry", minimum=0),
    ConfigDef("producer.id.expiration.ms", Kind.INT, 86_400_000,
              "forget an idempotent producer's state on a partition after this long without "
              "an append from it", minimum=1),
    ConfigDef("transaction.partition.verification.enable", Kind.BOOLEAN, True,
              "ask the transaction coordinator that a partition is in the producer's "
              "transaction before its first transactional batch there (KIP-890 part 1)"),
    # The transaction coordinator (KIP-98); Kafka's names and defaults.
    ConfigDef("transaction.state.log.num.partitions", Kind.INT, 50,
              "partitions of __transaction_state (fixed once the topic exists)", minimum=1),
    ConfigDef("transaction.state.log.replication.factor", Kind.INT, 3,
              "replicas of __transaction_state; in a cluster it is created once this many "
              "brokers are alive (COORDINATOR_NOT_AVAILABLE until then); a lone broker uses its "
              "one", minimum=1),
    ConfigDef("transaction.state.log.min.isr", Kind.INT, 2,
              "min.insync.replicas of __transaction_state; capped by its replicas", minimum=1),
    ConfigDef("transaction.state.log.segment.bytes", Kind.INT, 100 * 1024 * 1024,
              "segment size of __transaction_state", minimum=14),
    ConfigDef("transaction.max.timeout.ms", Kind.INT, 900_000,
              "largest transaction.timeout.ms a producer may ask for", minimum=1),
    ConfigDef("transactional.id.expiration.ms", Kind.INT, 604_800_000,
              "remove a transactional id with no transaction for this long", minimum=1),
    ConfigDef("transaction.abort.timed.out.transaction.cleanup.interval.ms", Kind.INT, 10_000,
              "how often transactions past their timeout are looked for and aborted", minimum=1),
    ConfigDef("transaction.remove.expired.transaction.cleanup.interval.ms", Kind.INT, 3_600_000,
              "how often expired transactional ids are removed", minimum=1),
    ConfigDef("request.timeout.ms", Kind.INT, 30_000,
              "how long a transaction coordinator write may wait to be committed",
              minimum=1),
    # Replication and cluster membership (Kafka's names and defaults).
    ConfigDef("replica.lag.time.max.ms", Kind.LONG, 30_000,
              "a follower that has not caught up for this long leaves the ISR", minimum=1),
    ConfigDef("max.incremental.fetch.session.cache.slots", Kind.INT, 1000,
              "fetch sessions (KIP-227) a broker keeps at most", minimum=0),
    ConfigDef("replica.fetch.wait.max.ms", Kind.INT, 500,
              "how long a follower's fetch waits at the leader for new data", minimum=0),
    ConfigDef("replica.fetch.max.bytes", Kind.INT, 1024 * 1024,
              "bytes a follower asks for per partition in one fetch", minimum=1),
    ConfigDef("replica.fetch.response.max.bytes", Kind.INT, 10 * 1024 * 1024,
              "bytes a follower asks for in one fetch", minimum=1),
    ConfigDef("replica.fetch.backoff.ms", Kind.INT, 1000,
              "pause after a failed follower fetch", minimum=0),
    ConfigDef("replica.socket.timeout.ms", Kind.INT, 30_000,
              "a follower's fetch unanswered for this long (beyond its wait) is sent again",
              minimum=1),
    ConfigDef("broker.session.timeout.ms", Kind.INT, 9000,
              "a broker that stops renewing its metadata-store lease this long is dead",
              minimum=2),
    ConfigDef("initial.broker.registration.timeout.ms", Kind.INT, 60_000,
              "at start, how long a broker in a cluster waits to have joined it (its view of the "
              "metadata, its registration and a controller) before it gives up and exits; it "
              "serves no client until then", minimum=1),
    ConfigDef("broker.heartbeat.interval.ms", Kind.INT, 2000,
              "how often a broker renews its lease (below broker.session.timeout.ms)", minimum=1),
    # KIP-966. Off by default, as in Kafka 4.0, where eligible leader replicas are a feature
    # the operator turns on: they trade availability for durability (docs/guarantees.md s.3).
    ConfigDef("eligible.leader.replicas.enable", Kind.BOOLEAN, False,
              "KIP-966 eligible leader replicas: replicas that leave the ISR while it is below "
              "min.insync.replicas stay electable, and the last ISR member back from an unclean "
              "shutdown that may have lost acknowledged records is not elected (the partition "
              "waits offline for an eligible replica instead)"),
    ConfigDef("max.request.partition.size.limit", Kind.INT, 2000,
              "most partitions one DescribeTopicPartitions answer lists (the client's "
              "ResponsePartitionLimit is capped by it)", minimum=1),
    ConfigDef("auto.leader.rebalance.enable", Kind.BOOLEAN, True,
              "move leadership back to each partition's preferred replica when it is in sync"),
    ConfigDef("broker.rack", Kind.STRING, "",
              "this broker's rack, for replica placement and for consumers' nearest replica"),
    # KIP-392: with the rack-aware selector, a leader answers a consumer's fetch (v11+) that
    # names a rack (client.rack) with the in-sync replica in that rack as the preferred read
    # replica, and followers serve consumers' fetches up to their HW. "" (Kafka's null): every
    # consumer reads from the leader. Kafka loads a class of that name; this broker has the
    # one selector Kafka ships built in, under its Kafka class name.
    ConfigDef("replica.selector.class", Kind.STRING, "",
              "which replica a consumer reads from: empty for the leader, or "
              "org.apache.kafka.common.replica.RackAwareReplicaSelector (KIP-392)",
              check=lambda v: None if v in ("", RACK_AWARE_REPLICA_SELECTOR) else (
                  f"no replica selector {v!r}: give {RACK_AWARE_REPLICA_SELECTOR} or leave it "
                  "empty (other classes cannot be loaded by this broker)"), read_only=True),
    # The log cleaner (compaction); Kafka's names and defaults.
    ConfigDef("log.cleaner.enable", Kind.BOOLEAN, True,
              "run the log cleaner for topics with cleanup.policy=compact"),
    ConfigDef("log.cleaner.threads", Kind.INT, 1, "cleaner threads", minimum=0),
    ConfigDef("log.cleaner.backoff.ms", Kind.LONG, 15_000,
              "pause of the cleaner when no log needs cleaning", minimum=0),
    ConfigDef("log.cleaner.dedupe.buffer.size", Kind.LONG, 128 * 1024 * 1024,
              "memory for the key -> offset map of all cleaner threads (24 bytes a key)",
              minimum=1),
    ConfigDef("log.cleaner.io.buffer.size", Kind.INT, 512 * 1024,
              "read and write buffer of the cleaner threads", minimum=0),
    ConfigDef("log.cleaner.io.buffer.load.factor", Kind.DOUBLE, 0.9,
              "how full the key -> offset map may get", minimum=0, maximum=1),
    ConfigDef("log.cleaner.io.max.bytes.per.second", Kind.DOUBLE, 1.7976931348623157e308,
              "cap on the bytes the cleaner reads and writes per second", minimum=0),
    # The admin HTTP listener (server/admin_http.py; not a Kafka config).
    ConfigDef("admin.listener", Kind.STRING, "",
              "host:port of the admin HTTP listener (/metrics, /v1/health); empty: none",
              check=lambda v: _check_host_port(v)),
    ConfigDef("admin.metrics.max.topics", Kind.INT, 1000,
              "per-topic metric series only while there are at most this many topics", minimum=0),
    ConfigDef("admin.metrics.max.partition.series", Kind.INT, 10_000,
              "most per-partition (and per-group-partition) series in one scrape", minimum=0),
    ConfigDef("admin.console.reports.dir", Kind.STRING, "",
              "directory of `ackly verify` reports the web console lists; empty: none"),
)


# Authorization (Kafka's keys). The names an authorizer may be given: Kafka's two ACL
# authorizers and ackly's own; all of them mean the ACL authorizer of broker/authorizer.py.
AUTHORIZER_CLASS_NAMES = (
    "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "kafka.security.authorizer.AclAuthorizer",
    "ackly.authorizer.AclAuthorizer",
)


def _check_authorizer(value: Any) -> str | None:
    if value == "" or value in AUTHORIZER_CLASS_NAMES:
        return None
    return f"unknown authorizer {value!r}; known: {', '.join(AUTHORIZER_CLASS_NAMES)} (empty: none)"


def parse_super_users(raw: str) -> tuple[str, ...]:
    """`User:a;User:b` (Kafka's super.users) as principals; ValueError names a bad entry."""
    users = tuple(u.strip() for u in raw.split(";") if u.strip())
    for user in users:
        kind, sep, name = user.partition(":")
        if not sep or not kind or not name:
            raise ValueError(f"{user!r} is not a principal Type:name (e.g. User:alice)")
    return users


def _check_super_users(value: Any) -> str | None:
    try:
        parse_super_users(str(value))
    except ValueError as exc:
        return str(exc)
    return None


def parse_host_port(value: str) -> tuple[str, int]:
    """`host:port` (an IPv6 host in brackets); ValueError with the reason."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{value!r} is not host:port")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"{port_text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range")
    return host.removeprefix("[").removesuffix("]"), port


def _check_host_port(value: Any) -> str | None:
    if value == "":
        return None
    try:
        parse_host_port(str(value))
    except ValueError as exc:
        return str(exc)
    return None


_AUTHORIZER_DEFS: tuple[ConfigDef, ...] = (
    ConfigDef("authorizer.class.name", Kind.STRING, "",
              "the ACL authorizer (Kafka's StandardAuthorizer or AclAuthorizer name); empty: "
              "every request is allowed", read_only=True, check=_check_authorizer),
    ConfigDef("super.users", Kind.STRING, "",
              "principals allowed everything, as User:a;User:b", read_only=True,
              check=_check_super_users),
    ConfigDef("allow.everyone.if.no.acl.found", Kind.BOOLEAN, False,
              "allow an action on a resource that no ACL names", read_only=True),
)


def _broker_defs() -> dict[str, ConfigDef]:
    defs = {d.name: d for d in _BROKER_ONLY_DEFS + _AUTHORIZER_DEFS}
    for topic_def in TOPIC_CONFIG_DEFS:
        if topic_def.broker_synonym is None:
            continue  # a topic-only config (Kafka has no broker default for it)
        defs[topic_def.broker_synonym] = dataclasses.replace(
            topic_def, name=topic_def.broker_synonym, broker_synonym=None
        )
    return defs


BROKER_CONFIGS: Mapping[str, ConfigDef] = _broker_defs()

# The broker keys IncrementalAlterConfigs may change while the broker runs (Kafka marks them
# dynamic, DynamicBrokerConfig / DynamicLogConfig): topic defaults that every topic without
# its own override follows at once, through the same path as a topic's AlterConfigs.
DYNAMIC_BROKER_KEYS: frozenset[str] = frozenset({
    "log.retention.ms", "log.retention.bytes", "message.max.bytes",
    "log.cleaner.min.cleanable.ratio", "log.cleaner.min.compaction.lag.ms",
    "log.cleaner.max.compaction.lag.ms", "log.cleaner.delete.retention.ms",
    # Compression and Kafka's flush settings, dynamic in Kafka too (DynamicLogConfig).
    "compression.type", "compression.gzip.level", "compression.lz4.level",
    "compression.zstd.level", "log.flush.interval.messages", "log.flush.interval.ms",
    "log.roll.jitter.ms", "log.preallocate",
})


def _attr(name: str) -> str:
    return name.replace(".", "_")


@dataclass(frozen=True)
class TopicConfig:
    """The effective configuration of one topic."""

    cleanup_policy: tuple[str, ...]
    retention_ms: int
    retention_bytes: int
    segment_bytes: int
    segment_ms: int
    segment_index_bytes: int
    index_interval_bytes: int
    file_delete_delay_ms: int
    max_message_bytes: int
    message_timestamp_type: str
    message_timestamp_before_max_ms: int
    message_timestamp_after_max_ms: int
    min_insync_replicas: int
    unclean_leader_election_enable: bool
    flush_policy: str
    flush_interval_ms: int
    compression_type: str
    min_cleanable_dirty_ratio: float
    min_compaction_lag_ms: int
    max_compaction_lag_ms: int
    delete_retention_ms: int
    segment_jitter_ms: int
    preallocate: bool
    flush_messages: int
    flush_ms: int
    compression_gzip_level: int
    compression_lz4_level: int
    compression_zstd_level: int
    leader_replication_throttled_replicas: tuple[str, ...]
    follower_replication_throttled_replicas: tuple[str, ...]
    remote_storage_enable: bool
    local_retention_ms: int
    local_retention_bytes: int
    remote_log_copy_disable: bool
    remote_log_delete_on_disable: bool
    overrides: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def resolve(cls, broker: BrokerConfig, overrides: Mapping[str, str]) -> TopicConfig:
        """Build the effective config from a topic's overrides and the broker's defaults."""
        validate_topic_overrides(overrides)
        values: dict[str, Any] = {}
        for d in TOPIC_CONFIG_DEFS:
            if d.name in overrides:
                values[_attr(d.name)] = d.parse(overrides[d.name])
            elif d.broker_synonym is not None:
                values[_attr(d.name)] = broker.get(d.broker_synonym)
            else:
                values[_attr(d.name)] = d.default
        return cls(**values, overrides=dict(overrides))

    # Flushing: ackly's flush.policy and Kafka's flush.messages / flush.ms together. Each
    # asks for fsyncs; a log is flushed as soon as any of them asks (the stronger wins, none
    # removes a flush another asked for). flush.messages=1 is an fsync before every
    # acknowledgement, which is what flush.policy=always gives (HW and acks wait for it).

    @property
    def flush_always(self) -> bool:
        """Acknowledgements (and HW) wait for the fsync of what they cover."""
        return self.flush_policy == "always" or self.flush_messages == 1

    @property
    def flush_after_ms(self) -> int | None:
        """How long after an unflushed append a flush is due (None: no time bound asks)."""
        bounds = []
        if self.flush_policy == "interval":
            bounds.append(self.flush_interval_ms)
        if self.flush_ms < 2**63 - 1:
            bounds.append(self.flush_ms)
        return min(bounds) if bounds else None

    @property
    def flush_after_messages(self) -> int | None:
        """How many unflushed messages make a flush due (None: no count asks)."""
        return self.flush_messages if self.flush_messages < 2**63 - 1 else None

    @classmethod
    def load(cls, broker: BrokerConfig, stored: Mapping[str, str]) -> tuple[TopicConfig, list[str]]:
        """The effective config of a topic from the overrides the metadata stores, and the
        stored keys this version does not know.

        As Kafka's LogConfig.fromProps: a key no config defines (one a newer version wrote)
        is ignored, since only CreateTopics and AlterConfigs check names (LogConfig.validate);
        a known key's bad value is refused (ConfigError naming the key), never replaced."""
        unknown = sorted(k for k in stored if k not in TOPIC_CONFIGS)
        known = {k: v for k, v in stored.items() if k in TOPIC_CONFIGS}
        return cls.resolve(broker, known), unknown

    def get(self, name: str) -> Any:
        return getattr(self, _attr(name))

    def source_of(self, name: str, broker: BrokerConfig) -> Source:
        if name in self.overrides:
            return Source.TOPIC
        synonym = TOPIC_CONFIGS[name].broker_synonym
        if synonym is None:
            return Source.DEFAULT
        if synonym is not None and synonym in broker.dynamic:
            return Source.BROKER_DYNAMIC
        if synonym is not None and synonym in broker.explicit:
            return Source.BROKER_STATIC
        return Source.DEFAULT


def validate_topic_overrides(overrides: Mapping[str, str]) -> None:
    """Refuse unknown keys and bad values (raises ConfigError naming the key)."""
    for key, raw in overrides.items():
        d = TOPIC_CONFIGS.get(key)
        if d is None:
            raise ConfigError(key, "unknown topic config")
        d.parse(raw)


@dataclass(frozen=True)
class BrokerConfig:
    """The broker's configuration: static (`--config-file`, ACKLY_*, `--config` at start-up),
    and the dynamic keys altered since (`dynamic`, which win over the static values)."""

    values: Mapping[str, Any]
    explicit: frozenset[str]
    dynamic: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # Kafka keys given that mean nothing here (kafka_broker_keys.IGNORED), for the start-up
    # warning.
    ignored: tuple[str, ...] = ()

    @classmethod
    def from_properties(cls, props: Mapping[str, str]) -> BrokerConfig:
        values = {name: d.default for name, d in BROKER_CONFIGS.items()}
        ignored: list[str] = []
        for key, raw in props.items():
            d = BROKER_CONFIGS.get(key)
            if d is None:
                d = _listener_override_def(key)
            if d is None:
                if key in kafka_broker_keys.IGNORED:
                    ignored.append(key)
                    continue
                if key in kafka_broker_keys.UNSUPPORTED:
                    problem = kafka_broker_keys.unsupported_problem(key, raw)
                    if problem is not None:
                        raise ConfigError(key, problem)
                    continue
                raise ConfigError(key, "unknown broker config")
            values[key] = d.parse(raw)
        explicit = set(props)
        for fine, coarser in _UNIT_SYNONYMS.items():
            if fine in props:
                continue
            for key, factor in coarser:
                if key in props:
                    # As Kafka's ServerTopicConfigSynonyms: the coarser key, in the finer unit.
                    value = int(values[key])
                    values[fine] = value * factor if value >= 0 else value
                    explicit.add(fine)
                    break
        node_id = int(values["node.id"])
        if node_id >= 0:
            if "broker.id" in props and int(values["broker.id"]) != node_id:
                raise ConfigError("node.id", f"{node_id} differs from broker.id "
                                             f"{values['broker.id']}; they name the same id")
            values["broker.id"] = node_id
            explicit.add("broker.id")
        if values["controller.listener.names"]:
            _drop_controller_listeners(values, values["controller.listener.names"])
        # The listener keys together (names in the map, the inter-broker listener, ...).
        resolve_listeners(values, host="127.0.0.1", port=9092)
        if values["max.connections.per.ip"] == 0 and not values["max.connections.per.ip.overrides"]:
            # As Kafka: a limit of 0 for everyone only makes sense with exceptions.
            raise ConfigError("max.connections.per.ip",
                              "0 refuses every client unless max.connections.per.ip.overrides "
                              "lets some in")
        return cls(values=values, explicit=frozenset(explicit), ignored=tuple(sorted(ignored)))

    def get(self, name: str) -> Any:
        return self.values[name]

    def with_dynamic(self, raw: Mapping[str, str]) -> BrokerConfig:
        """This (static) config with the dynamic values `raw` over it; ConfigError names a
        key that is not dynamic or a value that does not parse."""
        dynamic: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in DYNAMIC_BROKER_KEYS:
                reason = "unknown broker config" if key not in BROKER_CONFIGS else (
                    "cannot be updated dynamically; dynamic keys: " + ", ".join(sorted(DYNAMIC_BROKER_KEYS)))
                raise ConfigError(key, reason)
            dynamic[key] = BROKER_CONFIGS[key].parse(value)
        return dataclasses.replace(self, values={**self.values, **dynamic}, dynamic=dynamic)

    def for_listener(self, listener_name: str, name: str) -> Any:
        """A per-listener key's value on one listener: `listener.name.<name>.<key>` if set,
        else the key itself (Kafka's precedence)."""
        override = f"listener.name.{listener_name.lower()}.{name}"
        return self.values[override] if override in self.values else self.values[name]

    @property
    def broker_id(self) -> int:
        return int(self.values["broker.id"])

    @property
    def log_dir(self) -> str | None:
        """The data directory named by log.dirs (else log.dir), or None for --data-dir's."""
        for key in ("log.dirs", "log.dir"):
            named = [d.strip() for d in str(self.values[key]).split(",") if d.strip()]
            if named:
                return named[0]
        return None

    @property
    def socket_request_max_bytes(self) -> int:
        return int(self.values["socket.request.max.bytes"])

    @property
    def queued_max_request_bytes(self) -> int | None:
        """The request memory pool's capacity; None: no limit."""
        value = int(self.values["queued.max.request.bytes"])
        return None if value < 0 else value

    @property
    def max_connections(self) -> int:
        return int(self.values["max.connections"])

    @property
    def max_connections_per_ip(self) -> int:
        return int(self.values["max.connections.per.ip"])

    @property
    def max_connections_per_ip_overrides(self) -> dict[str, int]:
        return parse_connection_overrides(self.values["max.connections.per.ip.overrides"])

    @property
    def connections_max_idle_ms(self) -> int | None:
        value = int(self.values["connections.max.idle.ms"])
        return None if value < 0 else value

    @property
    def connections_first_request_timeout_ms(self) -> int | None:
        value = int(self.values["connections.first.request.timeout.ms"])
        return None if value < 0 else value

    def sasl_enabled_mechanisms(self, listener_name: str) -> tuple[str, ...]:
        return tuple(self.for_listener(listener_name, "sasl.enabled.mechanisms"))

    @property
    def sasl_server_max_receive_size(self) -> int:
        return int(self.values["sasl.server.max.receive.size"])

    @property
    def quota_window_num(self) -> int:
        return int(self.values["quota.window.num"])

    @property
    def quota_window_size_seconds(self) -> int:
        return int(self.values["quota.window.size.seconds"])

    @property
    def connections_max_reauth_ms(self) -> int:
        return int(self.values["connections.max.reauth.ms"])

    def topic_defaults(self) -> TopicConfig:
        return TopicConfig.resolve(self, {})


# Kafka's coarser broker keys for a topic default, in the order they are tried, with the
# factor to the finer key's unit (ServerTopicConfigSynonyms).
_UNIT_SYNONYMS: Mapping[str, tuple[tuple[str, int], ...]] = {
    "log.retention.ms": (("log.retention.minutes", 60_000), ("log.retention.hours", 3_600_000)),
    "log.roll.ms": (("log.roll.hours", 3_600_000),),
    "log.roll.jitter.ms": (("log.roll.jitter.hours", 3_600_000),),
    "log.flush.interval.ms": (("log.flush.scheduler.interval.ms", 1),),
}


def _drop_controller_listeners(values: dict[str, Any], names_raw: str) -> None:
    """Remove the KRaft controller's listeners (controller.listener.names) from `listeners`
    and `advertised.listeners`: the quorum is not run here, so they are not opened."""
    names = {n.strip().upper() for n in names_raw.split(",") if n.strip()}
    for key in ("listeners", "advertised.listeners"):
        kept = [entry for entry in str(values[key]).split(",")
                if entry.strip() and entry.strip().split("://", 1)[0].strip().upper() not in names]
        values[key] = ",".join(e.strip() for e in kept)


def _listener_override_def(key: str) -> ConfigDef | None:
    """The definition a `listener.name.<name>.<key>` key is parsed with (None: not one)."""
    split = split_listener_override(key)
    if split is None:
        return None
    base = BROKER_CONFIGS.get(split[1])
    if base is None or not base.per_listener:
        return None
    return dataclasses.replace(base, name=key)


def parse_properties(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """Parse `key=value` strings as given on the command line."""
    props: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(pair, "expected key=value")
        props[key.strip()] = value.strip()
    return props

