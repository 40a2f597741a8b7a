"""One broker: its view of the cluster, the partitions it hosts, delayed operations, flushes.

Owns: the broker's ClusterMember (its session with the metadata store, its view of the
cluster, and, when elected, the controller's decisions; cluster/member.py), the partitions it
hosts and their roles (broker/replicas.py, acting on every change of that view), the purgatory
of waiting produce and fetch requests, topic changes asked of the store (broker/admin.py),
which partitions need a flush, and the outputs for the shell. It is deterministic: requests,
ticks, flush completions, store inputs and peer responses come in from the shell with
`now_ms`; answers go out through each request's context; flush work goes out as FlushJobs;
peer requests and store commands go out through `take_outputs` (broker/io.py).

Two modes, one code path. With `external_metadata` (a cluster), store commands go to the shell,
which carries them to a shared MemoryStore or to etcd. Without it (`ackly serve` alone), the
broker is a cluster of one: its store is a DurableMemoryStore in the data directory
(cluster/durable_store.py), answered in-process after every input, so a request's topic change
is complete before its handler returns and topics survive restarts. A data directory written
before the metadata store existed (`topics.json`) is imported into it once, topic ids kept.

Small files off the loop: a running broker's shell sets `file_writes_off_loop`; from then on
the metadata store's file and the dynamic broker configs are written in the shell's writer
thread (`take_file_writes` / `complete_file_writes`, broker/file_writes.py), and whatever
depends on them (a store result or watch event, an IncrementalAlterConfigs answer) waits
until they are durable. Before (start-up, tests driving a node alone) they are written at once.

Group commit (flush.policy=always): appends mark their partition dirty; the shell takes every
dirty partition's FlushJob at once, runs them in one worker call, and reports back, so one
fsync covers every append made before it started. Appends made while it runs wait for the next.

Disk errors (Kafka's LogDirFailureChannel; ackly has one data directory): the first failed
write, fsync, rename or truncate (a StorageError, from the event loop or from a flush job)
takes the log directory offline for good: `log_dir_failure` is set (the output the shell acts
on: it tells the cluster and exits non-zero), every hosted partition goes offline (waiting and
new produces, and fetches, are answered KAFKA_STORAGE_ERROR), no flush completion is accepted
any more, followers stop fetching, and `close` leaves the logs for recovery at the next start.
The disk itself refuses every later change (log/disk.py), so no later fsync can ever be taken
to cover the range the failed one lost.

Invariants: every request gets exactly one answer (or none, for acks=0); a produce answer
with no error is sent only when the data is durable per the topic's flush.policy and, for
acks=all, below HW; this broker acts on a partition only as the metadata view it has shows it;
once `log_dir_failure` is set, no produce is answered with success again.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ackly.broker import dynamic_config
from ackly.broker.admin import DEFAULT_TIMEOUT_MS, AdminOps
from ackly.broker.authorizer import Authorizer
from ackly.broker.client_quotas import ClientQuotas
from ackly.broker.context import RequestContext
from ackly.broker.dispatch import dispatch
from ackly.broker.faults import FaultPoints
from ackly.broker.file_writes import FileWrite, FileWrites, run_batch
from ackly.broker.groups import make_group_coordinator
from ackly.broker.io import PeerRequest
from ackly.broker.log_cleaner import CleanerManager
from ackly.broker.replicas import ReplicaManager
from ackly.broker.stats import BrokerStats
from ackly.broker.transactions import TransactionsBroker
from ackly.cluster.controller import ControllerPolicy
from ackly.cluster.durable_store import DurableMemoryStore
from ackly.cluster.member import ClusterMember, MemberConfig
from ackly.cluster.metadata import BrokerInfo, ClusterMetadata, TopicInfo, encode_cluster_id
from ackly.cluster.store import Command, CommandResult, Put, StoreError, StoreInput
from ackly.cluster.topics import CATALOGUE_FILE, TopicCatalogue
from ackly.config import BrokerConfig, TopicConfig
from ackly.coordinator.producer_ids import BlockReservation, ProducerIdManager
from ackly.errors import ConfigError, ErrorCode, KafkaError, StorageError
from ackly.listeners import Listener
from ackly.log.cleaner import CleanJob
from ackly.log.disk import Disk
from ackly.log.log_dir import CleanLogState, LogDirCheckpoints
from ackly.log.partition_log import (
    FlushJob,
    MapFn,
    remove_deleted_dir,
    remove_deleted_dirs,
    run_flush_round,
)
from ackly.replication.fetch_sessions import FetchSessionCache
from ackly.replication.partition import Partition, check_leader_epoch
from ackly.replication.purgatory import Purgatory
from ackly.types import TopicPartition, WallClock, same_clock

log = logging.getLogger("ackly.broker")

# Single-broker mode: the lease of a store that lives in this process cannot outlive it, so its
# session never needs to expire; a day keeps the member's timers quiet.
_LOCAL_SESSION_MS = 86_400_000
_LOCAL_HEARTBEAT_MS = 3_600_000
# The single broker's store answers in-process, once per batch of writes: a cap on the writes
# in flight only split a start-up election of 10,000 partitions into ten batches, each
# rewriting the whole metadata file and copying the whole view (superlinear in partitions).
_LOCAL_MAX_INFLIGHT_WRITES = 1 << 30
_LOCAL_CLIENT = "local"
# Bound on one pump of the in-process store: each round is a command batch and its answers.
_MAX_LOCAL_ROUNDS = 1_000
# The key of the flush round's job that reserves the next block of producer ids (no partition).
PRODUCER_ID_BLOCK = TopicPartition("", -1)


@dataclass
class TopicState:
    """A topic as this broker's metadata view shows it, with the replicas hosted here.

    A topic whose stored config does not validate (`config_error`) has no effective config
    and no replica hosted here: its partitions stay offline until the config is fixed."""

    info: TopicInfo
    resolved: TopicConfig | None
    config_error: str | None = None
    replicas: dict[int, Partition] = field(default_factory=dict)

    @property
    def config(self) -> TopicConfig:
        """The effective config; KAFKA_STORAGE_ERROR if the stored one does not validate
        (see BrokerNode.partition for why that code)."""
        if self.resolved is None:
            raise KafkaError(ErrorCode.kafka_storage_error, self.config_error or self.name)
        return self.resolved

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def topic_id(self) -> uuid.UUID:
        return self.info.topic_id

    @property
    def partition_count(self) -> int:
        return self.info.partitions

    @property
    def meta(self) -> TopicInfo:
        """The topic as the metadata holds it (name, id, partitions, configs)."""
        return self.info

    @property
    def partitions(self) -> list[Partition]:
        """The replicas hosted on this broker, by index (on a single broker: all of them)."""
        return [self.replicas[i] for i in sorted(self.replicas)]


class BrokerNode:
    def __init__(
        self,
        *,
        config: BrokerConfig,
        disk: Disk,
        data_dir: str,
        host: str,
        port: int,
        now_ms: int,
        rng: random.Random,
        external_metadata: bool = False,
        member_config: MemberConfig | None = None,
        wall_clock: WallClock = same_clock,
        endpoints: tuple[Listener, ...] = (),
        on_coordinator_load: Callable[[str, int], None] | None = None,
    ) -> None:
        """`host`/`port`: where the other brokers reach this one (its inter-broker listener);
        `endpoints`: every advertised listener (none: one PLAINTEXT listener at host:port);
        `on_coordinator_load(coordinator, elapsed_ms)`: told how long each coordinator shard
        load ("group" or "transaction") took, from its start to its last slice."""
        self.config = config
        # `now_ms` in every input is monotonic; wall time only where Kafka stores it (types.py).
        self.wall_clock = wall_clock
        self.broker_id = config.broker_id
        self.disk = disk
        self.data_dir = data_dir
        self.host = host
        self.port = port
        self.rng = rng
        self.external_metadata = external_metadata
        self.faults = FaultPoints()
        self.stats = BrokerStats()  # counters the shell exports (server/metrics.py)
        self.purgatory = Purgatory()
        # Seeded apart from `rng` so that sessions do not shift the other draws.
        self.fetch_sessions = FetchSessionCache(
            int(config.get("max.incremental.fetch.session.cache.slots")),
            random.Random(f"fetch-sessions-{config.broker_id}-{now_ms}"),
        )
        self.topics: dict[str, TopicState] = {}
        self.topics_by_id: dict[uuid.UUID, TopicState] = {}
        self._dirty: set[TopicPartition] = set()
        self._flush_interval_due_ms: dict[TopicPartition, int] = {}
        self._next_retention_ms = now_ms + int(config.get("log.retention.check.interval.ms"))
        self._next_recovery_checkpoint_ms = now_ms + int(
            config.get("log.flush.offset.checkpoint.interval.ms")
        )
        self.cleaner = CleanerManager(config, now_ms)
        self._next_request_id = 1
        self._peer_out: list[PeerRequest] = []
        self._store_out: list[Command] = []
        # The first storage error: the log directory is offline from then on (see the module
        # docstring). The shell watches it after every input.
        self.log_dir_failure: StorageError | None = None
        # The metadata store's file and the dynamic configs (see the module docstring).
        self.file_writes = FileWrites(disk)
        self.file_writes_off_loop = False
        disk.makedirs(data_dir)
        # Deleted partitions' directories whose removal a crash cut short (start-up: before
        # the broker serves, so its fsync stalls nobody).
        remove_deleted_dirs(disk, data_dir)
        # The keys altered at run time (broker/dynamic_config.py) over the start-up config.
        self.static_config = config
        self.config = dynamic_config.load(config, disk, data_dir)
        self._dynamic_pending: BrokerConfig | None = None  # asked for, not yet durable
        # What the last clean stop recorded of every log (one set of files for the directory,
        # as Kafka's LogManager keeps): logs opened with it skip recovery and read no
        # checkpoint of their own. Its marker is gone from here on.
        self.log_dir = LogDirCheckpoints(disk, data_dir)
        self.log_dir.load()
        # Registered with the broker (KIP-966): the controller then stops counting this
        # broker's replicas as eligible leaders if its crash may have lost their records.
        unclean_shutdown = not self.log_dir.clean_start
        # In a cluster any broker answers InitProducerId, so each claims blocks of ids in the
        # cluster metadata (ClusterMember.claim_producer_ids); a single broker, whose metadata
        # lives on this same disk, reserves them in a file of its data directory, later blocks
        # in the flush rounds, off the loop.
        self.producer_ids = ProducerIdManager(disk, data_dir, reserve_ahead=True,
                                              claimed_blocks=external_metadata)
        # (request id, first id, end) of the claim in flight, and the store revision the view
        # must reach before claiming again after a refusal (the winner's write).
        self._producer_id_claim: tuple[int, int, int] | None = None
        self._producer_id_claim_after_revision = 0
        self.admin = AdminOps(self)
        self.replicas = ReplicaManager(self, now_ms)
        # Consumer groups: shards load as this broker becomes leader of __consumer_offsets
        # partitions (broker/groups.py).
        self.group_coordinator = make_group_coordinator(self, now_ms)
        # Transactions: shards load as this broker becomes leader of __transaction_state
        # partitions; markers and KIP-890 verification (broker/transactions.py).
        self.transactions = TransactionsBroker(self, now_ms)
        if on_coordinator_load is not None:  # before the first input can load a shard
            self.group_coordinator.runtime.on_load_time = functools.partial(on_coordinator_load, "group")
            self.transactions.coordinator.runtime.on_load_time = functools.partial(
                on_coordinator_load, "transaction")
        rack = str(config.get("broker.rack")) or None
        # A single broker resumes leading, in the same epoch, every partition it led at its
        # last clean stop: no election at the start (ClusterMember's resumed leadership).
        resumed = {} if external_metadata else {
            TopicPartition(topic, index): epoch
            for (topic, index), epoch in self.log_dir.led_epochs.items()
        }
        self.member = ClusterMember(
            BrokerInfo(self.broker_id, host, port, rack=rack, endpoints=endpoints,
                       unclean_shutdown=unclean_shutdown),
            config=member_config or self._member_config(), rng=random.Random(rng.getrandbits(64)),
            now_ms=now_ms, resumed=resumed,
        )
        # Authorization (broker/authorizer.py): decided on the ACLs of the member's view.
        self.authorizer = Authorizer(config, lambda: self.member.metadata.acls)
        if external_metadata and (warning := self.authorizer.inter_broker_warning()) is not None:
            log.warning("%s", warning)
        # Client quotas (broker/client_quotas.py): measured against the quotas of the view.
        self.quotas = ClientQuotas(lambda: self.member.metadata.client_quotas, config.quota_window_num,
                                   config.quota_window_size_seconds)
        self._local_store: DurableMemoryStore | None = None
        if not external_metadata:
            self._local_store = DurableMemoryStore(disk, data_dir, now_ms)
            if not self._local_store.existed:
                self._import_catalogue()
        self._after_input(now_ms)

    def _member_config(self) -> MemberConfig:
        policy = ControllerPolicy(
            auto_leader_rebalance=bool(self.config.get("auto.leader.rebalance.enable")),
            unclean_leader_election_default=bool(self.config.get("unclean.leader.election.enable")),
            eligible_leader_replicas=bool(self.config.get("eligible.leader.replicas.enable")),
            min_insync_replicas_default=int(self.config.get("min.insync.replicas")),
            flush_policy_default=str(self.config.get("log.flush.policy")),
            flush_messages_default=int(self.config.get("log.flush.interval.messages")),
        )
        if not self.external_metadata:
            return MemberConfig(
                session_timeout_ms=_LOCAL_SESSION_MS, heartbeat_interval_ms=_LOCAL_HEARTBEAT_MS,
                max_inflight_writes=_LOCAL_MAX_INFLIGHT_WRITES,
                policy=policy,
            )
        session_ms = int(self.config.get("broker.session.timeout.ms"))
        heartbeat_ms = int(self.config.get("broker.heartbeat.interval.ms"))
        if heartbeat_ms >= session_ms:
            # A lease renewed less often than it lasts would expire between renewals.
            log.warning("broker.heartbeat.interval.ms %d >= broker.session.timeout.ms %d; using %d",
                        heartbeat_ms, session_ms, max(session_ms // 3, 1))
            heartbeat_ms = max(session_ms // 3, 1)
        return MemberConfig(session_timeout_ms=session_ms, heartbeat_interval_ms=heartbeat_ms, policy=policy)

    def _import_catalogue(self) -> None:
        """A data directory from before the metadata store: take its topics (ids kept) and
        cluster id into the new store, all replicas on this broker."""
        if not self.disk.exists(f"{self.data_dir}/{CATALOGUE_FILE}"):
            return
        assert self._local_store is not None
        catalogue = TopicCatalogue(self.disk, self.data_dir, "")
        keys = self.member.keys
        puts = [Put(0, keys.cluster_id, encode_cluster_id(catalogue.cluster_id))]
        for meta in catalogue.topics.values():
            info = TopicInfo(meta.name, meta.topic_id, ((self.broker_id,),) * meta.partitions, meta.configs)
            puts.append(Put(0, keys.topic(meta.name), info.encode()))
        for i, put in enumerate(puts):
            self._local_store.submit("import", Put(i + 1, put.key, put.value))
        self._local_store.drain("import")
        log.info("imported %d topics from %s into the metadata store", len(catalogue.topics), CATALOGUE_FILE)

    # --- the cluster view ------------------------------------------------------------------

    @property
    def metadata(self) -> ClusterMetadata:
        return self.member.metadata

    @property
    def cluster_id(self) -> str:
        return self.member.metadata.cluster_id or ""

    @property
    def joined(self) -> bool:
        """Ready to serve clients: a single broker at once, a cluster member once it has joined
        (ClusterMember.joined)."""
        return not self.external_metadata or self.member.joined()

    @property
    def controller_id_for_clients(self) -> int:
        """The controller named in Metadata and DescribeCluster: the elected one; between two
        controllers (the old one's lease has just ended), this broker itself if registered.
        Every broker takes the admin requests a client sends to "the controller" (they are
        store writes, broker/admin.py), just as a Kafka broker forwards them (KIP-590) and
        names a live broker as controller; -1 would leave librdkafka's admin client waiting for
        a change it never asks about."""
        controller = self.member.metadata.controller
        if controller is not None:
            return controller.broker_id
        return self.broker_id if self.member.registration() is not None else -1

    def broker_address(self, broker_id: int) -> tuple[str, int] | None:
        """Where a broker listens, as it registered (None: not registered now)."""
        info = self.member.metadata.brokers.get(broker_id)
        return None if info is None else (info.host, info.port)

    def new_request_id(self) -> int:
        rid = self._next_request_id
        self._next_request_id += 1
        return rid

    def _sync_topics(self, metadata: ClusterMetadata) -> set[str]:
        """Topic states (names, ids, configs, partition counts) as the view shows them.
        Returns the topics whose stored config turned valid or invalid (their replicas are
        opened or taken offline by ReplicaManager.apply)."""
        for name in [n for n in self.topics if n not in metadata.topics]:
            gone = self.topics.pop(name)
            self.topics_by_id.pop(gone.topic_id, None)
        toggled: set[str] = set()
        for name, info in metadata.topics.items():
            state = self.topics.get(name)
            if state is not None and state.topic_id == info.topic_id:
                if state.info.configs != info.configs:
                    was_valid = state.resolved is not None
                    state.resolved, state.config_error = self._resolve_config(info)
                    if state.resolved is not None:
                        for p in state.replicas.values():
                            p.update_config(state.resolved)
                    if was_valid != (state.resolved is not None):
                        toggled.add(name)
                state.info = info
                continue
            if state is not None:
                self.topics_by_id.pop(state.topic_id, None)
            fresh = TopicState(info, *self._resolve_config(info))
            self.topics[name] = fresh
            self.topics_by_id[info.topic_id] = fresh
        self.stats.forget_topics(self.topics.keys())
        return toggled

    def _resolve_config(self, info: TopicInfo) -> tuple[TopicConfig | None, str | None]:
        """The topic's effective config, or None and why. Nothing falls back to the broker's
        defaults: a `min.insync.replicas` or `retention.ms` silently replaced would weaken
        what the topic promises, so the topic's partitions stay offline instead."""
        try:
            config, unknown = TopicConfig.load(self.config, info.configs)
        except ConfigError as exc:
            error = (f"topic {info.name!r}: stored config {exc.key}={info.configs.get(exc.key)!r}"
                     f" does not validate ({exc.reason}); its partitions stay offline until it"
                     " is altered")
            log.error("%s", error)
            return None, error
        for key in unknown:
            # Kafka ignores them at load too (LogConfig.fromProps); AlterConfigs refuses the
            # set until the key is deleted, as Kafka's LogConfig.validate does.
            log.warning("topic %r: stored config %s=%r is unknown to this version; ignored",
                        info.name, key, info.configs[key])
        return config, None

    def alter_dynamic_config(self, changes: Mapping[str, str | None], now_ms: int,
                             validate_only: bool = False,
                             on_durable: Callable[[StorageError | None], None] | None = None) -> None:
        """SET (a value) or DELETE (None) dynamic broker keys: stored, then every topic that
        follows a changed default takes it at once, and `on_durable(None)` runs (at once, or
        when the writer thread has written it: see the module docstring). Raises ConfigError
        for a key that is not dynamic or a bad value, StorageError (the log directory goes
        offline) if the store fails on the loop; a failure in the writer thread reaches
        `on_durable` instead, and the change is not applied."""
        config = dynamic_config.planned(self._dynamic_latest, self.static_config, changes)
        if validate_only:
            return
        if self.log_dir_failure is not None:
            raise StorageError("write", dynamic_config.config_path(self.data_dir), None,
                               "the log directory is offline")
        if not self.file_writes_off_loop:
            try:
                dynamic_config.store(self.disk, self.data_dir, config)
            except StorageError as exc:
                self._take_log_dir_offline(exc, now_ms)
                raise
            self._apply_dynamic_config(config, changes)
            if on_durable is not None:
                on_durable(None)
            return
        # Written in the writer thread; applied (in the order asked) and answered once durable.
        self._dynamic_pending = config

        def durable(error: StorageError | None) -> None:
            if error is None and self.log_dir_failure is None:
                self._apply_dynamic_config(config, changes)
            if on_durable is not None:
                on_durable(error)

        self.file_writes.write(dynamic_config.config_path(self.data_dir),
                               dynamic_config.encode(config), durable)

    @property
    def _dynamic_latest(self) -> BrokerConfig:
        """The config the last asked-for dynamic change leads to (written or waiting), which
        the next change builds on."""
        return self._dynamic_pending if self._dynamic_pending is not None else self.config

    def _apply_dynamic_config(self, config: BrokerConfig, changes: Mapping[str, str | None]) -> None:
        if self._dynamic_pending is config:
            self._dynamic_pending = None
        self.config = config
        log.info("broker %d: dynamic configs now %s", self.broker_id, dynamic_config.current(config),
                 extra={"event": "dynamic_config", "broker": self.broker_id,
                        "changes": dict(changes)})
        for state in self.topics.values():
            if state.resolved is None:
                continue  # offline for its own stored config; its defaults do not matter yet
            state.resolved, state.config_error = self._resolve_config(state.info)
            if state.resolved is not None:
                for p in state.replicas.values():
                    p.update_config(state.resolved)

    def topic_config(self, topic: str) -> TopicConfig:
        return self.topics[topic].config

    def partition_dir(self, tp: TopicPartition) -> str:
        return f"{self.data_dir}/{tp.topic}-{tp.partition}"

    def host_partition(self, p: Partition) -> None:
        state = self.topics.get(p.tp.topic)
        if state is not None:
            state.replicas[p.tp.partition] = p

    def forget_partition(self, p: Partition) -> None:
        state = self.topics.get(p.tp.topic)
        if state is not None and state.replicas.get(p.tp.partition) is p:
            del state.replicas[p.tp.partition]
        self._dirty.discard(p.tp)
        self._flush_interval_due_ms.pop(p.tp, None)

    def on_leadership_gained(self, p: Partition, now_ms: int) -> None:
        """p now leads in a new epoch: coordinators living in its topic take it over."""
        from ackly.broker.groups import on_partition_leadership

        on_partition_leadership(self, p, True, now_ms)
        self.transactions.on_partition_leadership(p, True, now_ms)

    def on_leadership_lost(self, p: Partition, now_ms: int) -> None:
        from ackly.broker.groups import on_partition_leadership

        on_partition_leadership(self, p, False, now_ms)
        self.transactions.on_partition_leadership(p, False, now_ms)

    # --- topics (single-broker conveniences, and what handlers call) ---------------------

    def create_topic(
        self, name: str, partitions: int, configs: dict[str, str], now_ms: int,
        replication_factor: int = 1,
    ) -> TopicState:
        """Create a topic and wait for it, in single-broker mode (tests, tools). Raises
        KafkaError if it cannot be created; in a cluster, use `admin.create_topic`."""
        outcome: list[tuple[ErrorCode, str | None]] = []
        self.admin.create_topic(
            name, partitions, replication_factor, configs, None, now_ms, DEFAULT_TIMEOUT_MS,
            lambda code, message: outcome.append((code, message)),
        )
        self._after_input(now_ms)
        while not outcome and self.has_file_writes:
            # A running broker's metadata file is written by the shell's writer thread; this
            # convenience (tests, tools) writes it here instead, to return the topic.
            batch = self.take_file_writes()
            error: BaseException | None = None
            try:
                run_batch(batch)
            except Exception as exc:
                error = exc
            self.complete_file_writes(batch, error, now_ms)
        if not outcome:
            raise KafkaError(ErrorCode.request_timed_out, f"topic {name!r} is not created yet")
        code, message = outcome[0]
        if code != ErrorCode.none:
            raise KafkaError(code, message or "")
        return self.topics[name]

    def partition(self, topic: str, index: int) -> Partition:
        """The replica of topic-index hosted here. KafkaError UNKNOWN_TOPIC_OR_PARTITION if the
        cluster has no such partition, NOT_LEADER_OR_FOLLOWER if this broker does not host it."""
        state = self.topics.get(topic)
        if state is None or not 0 <= index < state.partition_count:
            raise KafkaError(ErrorCode.unknown_topic_or_partition, f"{topic}-{index} is unknown")
        if state.config_error is not None:
            # No replica can be opened without a valid config. Kafka answers a partition whose
            # log it cannot serve (an offline log directory) with KAFKA_STORAGE_ERROR, which
            # clients retry after a metadata refresh and report once their timeout passes; a
            # NOT_LEADER_OR_FOLLOWER here would send them back to this same leader forever.
            raise KafkaError(ErrorCode.kafka_storage_error, state.config_error)
        p = state.replicas.get(index)
        if p is None:
            raise KafkaError(
                ErrorCode.not_leader_or_follower, f"{topic}-{index} has no replica on broker {self.broker_id}"
            )
        return p

    def leader_partition(self, topic: str, index: int, current_leader_epoch: int = -1) -> Partition:
        """The partition if this broker leads it (and the caller's leader epoch, if it gives
        one, is the current one); else KafkaError as `partition` and Partition.check_leader."""
        if self.log_dir_failure is not None:
            raise KafkaError(
                ErrorCode.kafka_storage_error,
                f"broker {self.broker_id}'s log directory is offline: {self.log_dir_failure}",
            )
        p = self.partition(topic, index)
        p.check_leader(current_leader_epoch)
        return p

    def replica_for_reads(self, topic: str, index: int, current_leader_epoch: int = -1) -> Partition:
        """The replica hosted here, leader or follower, for a consumer's fetch that any replica
        may serve (KIP-392, Fetch v11+), if the caller's leader epoch (when it gives one) is the
        one this replica knows; else KafkaError as `leader_partition`."""
        if self.log_dir_failure is not None:
            raise KafkaError(
                ErrorCode.kafka_storage_error,
                f"broker {self.broker_id}'s log directory is offline: {self.log_dir_failure}",
            )
        p = self.partition(topic, index)
        check_leader_epoch(current_leader_epoch, p.leader_epoch)
        return p

    def all_partitions(self) -> Iterable[Partition]:
        return list(self.replicas.partitions.values())

    # --- appends, flushes and time -------------------------------------------------------

    def after_append(self, p: Partition, now_ms: int) -> None:
        """An append happened: schedule its flush and wake whoever waits on the partition."""
        config = p.config
        if config.flush_always:
            self._dirty.add(p.tp)
        else:
            # flush.policy=interval and Kafka's flush.ms / flush.messages: the earliest wins.
            after_messages = config.flush_after_messages
            if after_messages is not None and (
                    p.log.log_end_offset - p.log.recovery_point >= after_messages):
                self._dirty.add(p.tp)
            after_ms = config.flush_after_ms
            if after_ms is not None and p.tp not in self._flush_interval_due_ms:
                self._flush_interval_due_ms[p.tp] = now_ms + after_ms
        self.purgatory.check(p.tp, now_ms)

    def remove_deleted_dir(self, path: str, now_ms: int) -> None:
        """A deleted partition's directory, renamed away by its log (PartitionLog.delete):
        removed, and the data directory synced, in the shell's writer thread; at once while
        no shell runs the writes (start-up, tests driving a node alone)."""
        if self.file_writes_off_loop:
            self.file_writes.remove(path)
            return
        try:
            remove_deleted_dir(self.disk, path)
        except StorageError as exc:
            self._take_log_dir_offline(exc, now_ms)

    def schedule_flush(self, tp: TopicPartition) -> None:
        """Flush tp in the next round whatever its flush.policy (a recovered tail, or
        changes made without their fsyncs: a truncation, a new log start)."""
        self._dirty.add(tp)

    def _metadata_written(self, revision: int, now_ms: int, error: StorageError | None) -> None:
        if error is not None:
            self._take_log_dir_offline(error, now_ms)
            return
        assert self._local_store is not None
        self._local_store.written(revision)
        # complete_file_writes runs _after_input next: it hands out what waited for this.

    def take_file_writes(self) -> list[FileWrite]:
        """The next batch of small-file writes (empty while one is out, or once the log
        directory is offline); the shell runs it in its writer thread (file_writes.run_batch)."""
        if self.log_dir_failure is not None:
            return []
        return self.file_writes.take()

    @property
    def has_file_writes(self) -> bool:
        return self.log_dir_failure is None and self.file_writes.has_work

    def complete_file_writes(self, batch: list[FileWrite], error: BaseException | None,
                             now_ms: int) -> None:
        """The batch from `take_file_writes` ran; `error` if it raised (any exception: a
        write that did not finish proves nothing, so the log directory goes offline)."""
        failure: StorageError | None = None
        if error is not None:
            failure = error if isinstance(error, StorageError) else StorageError(
                "write", batch[0].path if batch else self.data_dir, None, repr(error))
        if failure is not None:
            self._take_log_dir_offline(failure, now_ms)
        self.file_writes.done(batch, failure)
        self._after_input(now_ms)

    def take_flush_jobs(self) -> list[tuple[TopicPartition, FlushJob]]:
        """Everything waiting for a flush now; the shell runs the jobs off the loop."""
        jobs: list[tuple[TopicPartition, FlushJob]] = []
        if self.log_dir_failure is not None:
            self._dirty.clear()
            return jobs
        for tp in self._dirty:
            p = self.replicas.partitions.get(tp)
            if p is None:
                continue
            job = p.log.begin_flush()
            if job is not None:
                jobs.append((tp, job))
        self._dirty.clear()
        reservation = self.producer_ids.take_reservation()
        if reservation is not None:
            jobs.append((PRODUCER_ID_BLOCK, reservation))
        return jobs

    @property
    def has_flush_work(self) -> bool:
        return bool(self._dirty) or (
            self.log_dir_failure is None and self.producer_ids.reservation_due
        )

    def complete_flush(self, jobs: list[tuple[TopicPartition, FlushJob]], now_ms: int) -> None:
        """The jobs from `take_flush_jobs` ran without error. Ignored once the log directory
        is offline: a flush that ends after a failure proves nothing about what it covered."""
        if self.log_dir_failure is not None:
            return
        try:
            self._complete_flush(jobs, now_ms)
        except StorageError as exc:  # a checkpoint the completion writes
            self._take_log_dir_offline(exc, now_ms)
        self._after_input(now_ms)  # a follower's next fetch may have waited for this flush

    def _complete_flush(self, jobs: list[tuple[TopicPartition, FlushJob]], now_ms: int) -> None:
        for tp, job in jobs:
            if isinstance(job, BlockReservation):
                self.producer_ids.reserved(job)
                continue
            p = self.replicas.partitions.get(tp)
            if p is None:
                continue  # deleted while its flush ran
            p.log.complete_flush(job)
            p.on_flushed()
            self.purgatory.check(tp, now_ms)
        swapped = self.cleaner.apply_due_swaps(self.replicas.partitions.get)
        if swapped is not None:
            self.schedule_flush(swapped)  # the swap's renames owe their directory sync

    def flush_failed(self, error: BaseException, now_ms: int) -> None:
        """A flush job raised: its range (and everything after it) is never made durable by
        this process, so the log directory goes offline. Any exception counts, not only a
        StorageError: a flush that did not finish proves nothing."""
        if not isinstance(error, StorageError):
            error = StorageError("fsync", "(flush job)", None, repr(error))
        self._take_log_dir_offline(self.disk.failure or error, now_ms)
        self._after_input(now_ms)

    def _take_log_dir_offline(self, error: StorageError, now_ms: int) -> None:
        """Kafka's LogDirFailureChannel + ReplicaManager.handleLogDirFailure, for the only
        log directory: every partition goes offline, waiting produces are answered
        KAFKA_STORAGE_ERROR, flushes and fetches stop. The shell then tells the cluster and
        exits (it watches `log_dir_failure`)."""
        if self.log_dir_failure is not None:
            return
        self.log_dir_failure = error
        log.critical("broker %d: log directory %s failed (%s); taking it offline: nothing "
                     "appended after the last successful flush will be acknowledged",
                     self.broker_id, self.data_dir, error,
                     extra={"event": "log_dir_failure", "broker": self.broker_id,
                            "log_dir": self.data_dir, "operation": error.operation,
                            "path": error.path, "errno": error.errno})
        self._dirty.clear()
        self._flush_interval_due_ms.clear()
        reason = f"log directory offline: {error}"
        for p in self.all_partitions():
            p.take_offline(reason)
            self.purgatory.check(p.tp, now_ms)

    def _check_log_dir(self, now_ms: int) -> None:
        """Notice a failure the disk recorded while a handler turned it into an error code."""
        if self.log_dir_failure is None:
            failure = self.disk.failure
            if failure is not None:
                self._take_log_dir_offline(failure, now_ms)

    def take_clean_job(self, now_ms: int) -> tuple[TopicPartition, CleanJob] | None:
        """The next log clean for the shell's cleaner thread, if one is due (log_cleaner.py)."""
        return self.cleaner.take_job(self.all_partitions(), now_ms)

    def complete_clean(
        self, tp: TopicPartition, job: CleanJob, error: BaseException | None, now_ms: int
    ) -> None:
        """The cleaner thread finished `job`: prepare its swap (or drop it); the swap itself
        follows the log's next flush (`_complete_flush`), so neither fsyncs on the event loop.
        Nothing is swapped once the log directory is offline; a failed swap takes it offline."""
        if self.log_dir_failure is None:
            try:
                if self.cleaner.complete_job(tp, job, error, self.replicas.partitions.get):
                    self.schedule_flush(tp)  # the swap waits for its checkpoints' sync
            except StorageError as exc:
                self._take_log_dir_offline(exc, now_ms)
        self._after_input(now_ms)

    def tick(self, now_ms: int) -> None:
        """Run what is due: expired delayed operations, interval flushes, retention, the
        member's session and the controller, ISR checks, follower fetch retries."""
        try:
            self._tick(now_ms)
        except StorageError as exc:
            self._take_log_dir_offline(exc, now_ms)
        self._after_input(now_ms)

    def _tick(self, now_ms: int) -> None:
        self.purgatory.expire(now_ms)
        for tp, due in list(self._flush_interval_due_ms.items()):
            if due <= now_ms:
                del self._flush_interval_due_ms[tp]
                self._dirty.add(tp)
        if now_ms >= self._next_retention_ms:
            self._next_retention_ms = now_ms + int(
                self.config.get("log.retention.check.interval.ms")
            )
            self.enforce_retention(now_ms)
        if now_ms >= self._next_recovery_checkpoint_ms:
            self._next_recovery_checkpoint_ms = now_ms + int(
                self.config.get("log.flush.offset.checkpoint.interval.ms")
            )
            self.write_recovery_checkpoint()
        if self._local_store is not None:
            self._local_store.tick(now_ms)
        before = self.member.metadata
        self.member.tick(now_ms)
        self._after_member(before, now_ms)
        self.replicas.check_isr(now_ms)
        for p in self.all_partitions():
            p.log.tick(now_ms)
        self.group_coordinator.tick(now_ms)  # sessions, rebalance deadlines, offset expiry
        self.transactions.tick(now_ms)  # transaction timeouts, expired transactional ids
        self.admin.check(now_ms)
        if self.log_dir_failure is None:
            self.cleaner.tick(now_ms)

    def write_recovery_checkpoint(self) -> None:
        """Record where every log's recovery point lies (log_dir.py's log-recovery-checkpoint,
        as Kafka's LogManager checkpoints recovery points every
        log.flush.offset.checkpoint.interval.ms): a start after a crash checks only what
        follows. Written without an fsync; nothing while the log directory is offline."""
        if self.log_dir_failure is not None:
            return
        entries = {}
        for p in self.all_partitions():
            entry = p.log.recovery_checkpoint()
            if entry is not None:
                entries[os.path.basename(p.log.dir_path)] = entry
        self.log_dir.write_recovery_checkpoint(entries)

    def enforce_retention(self, now_ms: int) -> int:
        deleted = 0
        if self.log_dir_failure is not None:
            return 0
        for p in self.all_partitions():
            # Followers take their log start from the leader's (fetch responses).
            if p.is_leader and "delete" in p.config.cleanup_policy:
                count = p.log.enforce_retention(now_ms)
                if count:
                    self.schedule_flush(p.tp)  # the new log start's fsyncs, off the loop
                deleted += count
        return deleted

    def next_deadline_ms(self) -> int | None:
        candidates = [self._next_retention_ms, self._next_recovery_checkpoint_ms,
                      *self._flush_interval_due_ms.values()]
        for deadline in (
            self.purgatory.next_deadline_ms(),
            self.group_coordinator.next_deadline_ms(),
            self.transactions.next_deadline_ms(),
            self.member.next_deadline_ms(),
            self.replicas.next_deadline_ms(),
            self.admin.next_deadline_ms(),
            self.cleaner.next_deadline_ms(),
        ):
            if deadline is not None:
                candidates.append(deadline)
        return min(candidates)

    def close(self, map_fn: MapFn | None = None) -> None:
        """Clean shutdown: flush and close every log, then write the data directory's
        clean-shutdown checkpoints and marker (log_dir.py). Every log's closing job (its
        unflushed records, indexes, producer snapshot, directory) runs in one round,
        through `map_fn` if given (the shell's thread pool: concurrent fsyncs), and the
        marker is written only after all of them succeeded.

        A log that cannot begin its close (a full or failing disk) is logged and left for
        recovery at the next start, which checks it from its recovery point; the others still
        close. A failed round leaves every log for recovery. With the log directory offline
        nothing is flushed or written: every log is left for recovery, its files closed (no
        clean-shutdown marker can make the next start trust what the failed fsync may have
        lost).
        """
        if self.log_dir_failure is not None:
            count = 0
            for p in self.all_partitions():
                p.log.abandon()
                count += 1
            log.error("broker %d: log directory offline; %d logs left for recovery at the next "
                      "start", self.broker_id, count)
            return
        closing: list[tuple[Partition, FlushJob]] = []
        for p in self.all_partitions():
            if p.log.is_closed:
                continue
            try:
                closing.append((p, p.log.begin_close()))
            except (OSError, KafkaError) as exc:
                log.error("%s not closed cleanly (recovery will check it at start-up): %s", p.tp, exc)
                p.log.abandon()
        try:
            run_flush_round([job for _, job in closing], *([map_fn] if map_fn else []))
        except (OSError, KafkaError) as exc:
            log.error("broker %d: closing the logs failed (every log is recovered at the next "
                      "start): %s", self.broker_id, exc)
            for p, _ in closing:
                p.log.abandon()
            return
        states: dict[str, CleanLogState] = {}
        led_epochs: dict[str, int] = {}  # what a single broker resumes at its next start
        for p, _ in closing:
            name = os.path.basename(p.log.dir_path)
            states[name] = p.log.finish_close()
            if p.is_leader and p.offline is None:
                led_epochs[name] = p.leader_epoch
        try:
            # Last: the marker vouches for the logs listed, each closed and synced above.
            self.log_dir.write_clean_shutdown(states, led_epochs)
        except (OSError, KafkaError) as exc:
            log.error("clean-shutdown checkpoints not written (every log is recovered at the "
                      "next start): %s", exc)

    # --- the cluster: inputs and outputs for the shell (broker/io.py) ----------------------

    def take_outputs(self) -> tuple[list[PeerRequest], list[Command]]:
        """Peer requests and store commands to carry now (drained)."""
        if self.external_metadata:
            self._store_out.extend(self.member.take_commands())
        peers, self._peer_out = self._peer_out, []
        commands, self._store_out = self._store_out, []
        return peers, commands

    def on_store_inputs(self, items: list[StoreInput], now_ms: int) -> None:
        """Results and watch events from the metadata store, in delivery order."""
        try:
            self._handle_store_inputs(items, now_ms)
        except StorageError as exc:  # a log created, truncated or deleted for the new view
            self._take_log_dir_offline(exc, now_ms)
        self._after_input(now_ms)

    def on_peer_response(self, request_id: int, response: Any, now_ms: int) -> None:
        try:
            if self.replicas.fetcher.owns(request_id):
                self.replicas.on_fetch_response(request_id, response, now_ms)
            elif self.transactions.owns(request_id):
                self.transactions.on_peer_response(request_id, response, now_ms)
        except StorageError as exc:  # a follower's append or truncation
            self._take_log_dir_offline(exc, now_ms)
        self._after_input(now_ms)

    def on_peer_failure(self, request_id: int, reason: str, now_ms: int) -> None:
        if self.replicas.fetcher.owns(request_id):
            log.info("fetch %d failed: %s", request_id, reason)
            self.replicas.fetcher.on_failure(request_id, now_ms)
        elif self.transactions.owns(request_id):
            self.transactions.on_peer_failure(request_id, reason, now_ms)
        self._after_input(now_ms)

    def begin_controlled_shutdown(self, now_ms: int) -> None:
        """Ask the controller to move leadership away; poll `shutdown_ready`, then `leave`."""
        self.member.begin_controlled_shutdown(now_ms)
        self._after_input(now_ms)

    def shutdown_ready(self, now_ms: int) -> bool:
        return self.member.shutdown_ready(now_ms)

    def leave(self, now_ms: int) -> None:
        """End this broker's session now (its registration goes at once); then take_outputs
        once more to send the revocation."""
        self.member.leave(now_ms)
        self._after_input(now_ms)

    def _handle_store_inputs(self, items: list[StoreInput], now_ms: int) -> None:
        before = self.member.metadata
        self.member.handle_all(items, now_ms)
        self._after_member(before, now_ms)

    def _after_member(self, before: ClusterMetadata, now_ms: int) -> None:
        """Act on what the member learned: a new view, results of this broker's requests."""
        after = self.member.metadata
        if after is not before:
            toggled = self._sync_topics(after)
            self.replicas.apply(before, after, now_ms, toggled)
        results = self.replicas.on_member_results(self.member.take_results(), now_ms)
        results = self._on_producer_id_claim(results)
        self.admin.on_results(results)
        self.admin.check(now_ms)

    def _claim_producer_ids(self, now_ms: int) -> None:
        """Claim the next block of producer ids from the cluster when it is due (see
        coordinator/producer_ids.py)."""
        if self._producer_id_claim is not None or not self.producer_ids.claim_due:
            return
        if self.member.metadata.revision < self._producer_id_claim_after_revision:
            return  # the claim that won is not in the view yet: ours would be refused again
        claim = self.member.claim_producer_ids(self.producer_ids.block_size, now_ms)
        if claim is not None:
            self._producer_id_claim = claim
            self.producer_ids.claim_sent()

    def _on_producer_id_claim(self, results: list[CommandResult]) -> list[CommandResult]:
        """Take the result of the producer-id claim in flight; return the others."""
        claim = self._producer_id_claim
        if claim is None:
            return results
        rest = []
        for result in results:
            if result.request_id != claim[0]:
                rest.append(result)
                continue
            self._producer_id_claim = None
            if result.ok:
                self.producer_ids.claimed(claim[1], claim[2])
                continue
            self.producer_ids.claim_lost()
            if result.error is StoreError.COMPARE_FAILED:
                self._producer_id_claim_after_revision = max(
                    (kv.mod_revision for kv in result.kvs), default=result.revision)
        return rest

    def pump(self, now_ms: int) -> None:
        """Carry out what a handler asked of the store now (single-broker mode: completes it)."""
        self._after_input(now_ms)

    def _after_input(self, now_ms: int) -> None:
        """After any input: run the in-process store to quiescence (single-broker mode) and
        collect the follower fetches that can be sent."""
        self._check_log_dir(now_ms)
        if self.log_dir_failure is not None:
            # Offline: the store in the data directory takes no writes, there is nothing more
            # to replicate into, and no marker can be written here.
            return
        self._claim_producer_ids(now_ms)
        store = self._local_store
        if store is not None:
            for _ in range(_MAX_LOCAL_ROUNDS):
                commands = self.member.take_commands()
                for command in commands:
                    store.submit(_LOCAL_CLIENT, command)
                if self.file_writes_off_loop:
                    write = store.take_write()
                    if write is not None:
                        revision, data = write
                        self.file_writes.write(store.path, data, functools.partial(
                            self._metadata_written, revision, now_ms))
                    items = store.drain_durable(_LOCAL_CLIENT)
                else:
                    items = store.drain(_LOCAL_CLIENT)
                if items:
                    self._handle_store_inputs(items, now_ms)
                elif not commands:
                    break
            else:
                raise AssertionError("the in-process metadata store did not settle")
        self.replicas.poll_fetcher(now_ms, self._peer_out)
        self.transactions.poll(now_ms, self._peer_out)

    # --- requests --------------------------------------------------------------------------

    def handle_frame(self, ctx: RequestContext, frame: bytes | memoryview) -> None:
        """Decode one request frame (its header is in ctx) and run its handler."""
        try:
            dispatch(self, ctx, frame)
        except StorageError as exc:
            # A handler let it through (most answer it per partition): the request stays
            # unanswered, and the shell closes its connection as the broker stops.
            self._take_log_dir_offline(exc, ctx.now_ms)
        self._after_input(ctx.now_ms)

