"""A simulated cluster and one seeded history of it: brokers, store, network, clients, faults.

Owns: the composition of one simulation (`SimCluster`) and its run (`run_seed`), in three
phases:
1. faults: `steps` events with the seed's fault plan, producers writing, consumers reading,
   invariants checked after every event;
2. liveness: every fault healed (dead brokers restarted, partitions and pauses ended, delays
   off), no new writes; the cluster must converge within a bounded virtual time: every
   partition has a leader and its full replica set in the ISR, every follower has caught up,
   no producer has a write in flight, every consumer has read up to HW;
3. final: the history checks of `invariants.check_history`, and every follower's log byte for
   byte the leader's.
A failure in any phase stops the run; `SimResult.reproduction` is the one-line command that
replays it (`ackly sim --seed N --steps M`).

Everything is a function of (seed, steps, brokers, fault points): one thread, the scheduler's
virtual clock, PRNGs forked from the seed, no unordered iteration. `SimResult.trace_hash`
fingerprints the event sequence, so a replay can be compared with the original.

The brokers run with `external_metadata` on the simulated store (broker/io.py), the topic with
RF = min(3, brokers), min ISR 2 (1 below three brokers), flush.policy=always and unclean
election off. With one broker the same phases check rule 6 (crash durability).

With `transactions` (`ackly sim --transactions`), transactional producers and read_committed
consumers join the same topic (sim/txn_clients.py, drawn from a PRNG forked after everything
else, so every other seed keeps its history): convergence then also needs every partition's
LSO at its HW (rule 22: no hanging transaction) and every transactional producer out of its
transaction, and the final phase adds the transaction checks of sim/txn_invariants.py.
"""

from __future__ import annotations

import random
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ackly.broker.node import BrokerNode
from ackly.cluster.metadata import NO_LEADER
from ackly.config import BrokerConfig
from ackly.log.disk import SimDisk
from ackly.sim.broker import BrokerHost, NodeFactory
from ackly.sim.clients import Admin, ClientEnv, ClientViolation, Consumer, History, Producer
from ackly.sim.faults import FaultInjector, FaultPlan, WallSteps
from ackly.sim.group_clients import GroupHistory, GroupMember, converged
from ackly.sim.invariants import (
    InvariantViolation,
    LogRecord,
    MetadataObserver,
    ReplicaChecker,
    check_history,
    is_leader,
    log_records,
    partitions_of,
    read_batches,
)
from ackly.sim.network import Network
from ackly.sim.scheduler import Scheduler
from ackly.sim.store import StoreBridge
from ackly.sim.txn_clients import IsolatedConsumer, TransactionalProducer, TxnHistory
from ackly.sim.txn_invariants import check_transactions, marker_outcomes, transaction_epochs
from ackly.types import TopicPartition, WallClock

START_MS = 1_700_000_000_000
TOPIC = "sim"
PEER_TIMEOUT_MS = 2_500
CONVERGENCE_POLL_MS = 200
LIVELOCK_EVENTS = 5_000
# Events in the fault phase: enough for several kills, partitions and failovers (the first
# fault comes 50 ms to 3 s into a history; a few hundred events end before it).
DEFAULT_STEPS = 2_000


@dataclass(frozen=True)
class SimConfig:
    seed: int
    steps: int = DEFAULT_STEPS
    brokers: int = 3
    fault_points: tuple[str, ...] = ()
    liveness_ms: int = 60_000  # virtual time the healed cluster has to converge
    liveness_events: int = 200_000
    transactions: bool = False  # transactional producers and read_committed consumers too
    # 2: the transactional producers speak transaction version 2 (KIP-890 part 2) and send a
    # delayed copy of some EndTxn after the next transaction began (sim/txn_clients.py).
    transaction_version: int = 0
    # The log cleaner runs, and the internal topics roll small segments so that it has work.
    compaction: bool = False
    # Members of a KIP-848 consumer group heartbeat to its coordinator (sim/group_clients.py).
    consumer_groups: bool = False
    # KIP-966 eligible leader replicas (eligible.leader.replicas.enable on every broker).
    eligible_leader_replicas: bool = False
    # The user topic's flush.policy: "never" is Kafka's flushing, where a power loss takes
    # what a replica had not written back (acknowledged records still have other copies).
    flush_policy: str = "always"


@dataclass
class SimResult:
    config: SimConfig
    ok: bool
    phase: str
    failure: str | None
    events: int
    virtual_ms: int
    trace_hash: str
    stats: dict[str, Any] = field(default_factory=dict)
    trace_tail: list[str] = field(default_factory=list)

    @property
    def reproduction(self) -> str:
        c = self.config
        line = f"ackly sim --seed {c.seed} --steps {c.steps}"
        if c.brokers != SimConfig.brokers:
            line += f" --brokers {c.brokers}"
        for name in c.fault_points:
            line += f" --fault-point {name}"
        if c.transactions:
            line += " --transactions"
        if c.transaction_version:
            line += f" --transaction-version {c.transaction_version}"
        if c.compaction:
            line += " --compaction"
        if c.consumer_groups:
            line += " --consumer-groups"
        if c.eligible_leader_replicas:
            line += " --eligible-leader-replicas"
        if c.flush_policy != SimConfig.flush_policy:
            line += f" --flush-policy {c.flush_policy}"
        return line


# Transaction version 2: the share of transaction ends whose EndTxn is sent again, late.
DELAYED_END_RATE = 0.3

# Kafka's timeouts scaled down so that a short history holds several failovers.
SIM_BROKER_CONFIG = {
    "broker.session.timeout.ms": "3000",
    "broker.heartbeat.interval.ms": "1000",
    "replica.lag.time.max.ms": "2000",
    "replica.fetch.wait.max.ms": "200",
    "replica.fetch.backoff.ms": "100",
    "replica.socket.timeout.ms": "2000",
}
# With transactions: a few coordinator shards, and timed-out transactions looked for every
# second, so a crashed producer's transaction is aborted well within the liveness phase.
SIM_TXN_CONFIG = {
    "transaction.state.log.num.partitions": "4",
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000",
}
# With consumer groups: a few coordinator shards, and sessions short enough that a member cut
# off by a partition is removed within a history.
SIM_GROUP_CONFIG = {
    "offsets.topic.num.partitions": "4",
    "group.consumer.heartbeat.interval.ms": "500",
    "group.consumer.session.timeout.ms": "4000",
}
# With compaction: small segments of the (compacted) internal topics, a cleaner that looks
# often and keeps tombstones and markers a short while, so a short history compacts them.
SIM_COMPACTION_CONFIG = {
    "transaction.state.log.segment.bytes": "2048",
    "offsets.topic.segment.bytes": "2048",
    "log.cleaner.backoff.ms": "500",
    "log.cleaner.min.cleanable.ratio": "0.2",
    "log.cleaner.delete.retention.ms": "5000",
}


# How long a broker whose disk failed keeps answering KAFKA_STORAGE_ERROR before its process
# exits (the shell waits for its lease revocation, bounded).
DISK_ERROR_EXIT_MS = 50


def default_node_factory(broker_config: dict[str, str], fault_points: tuple[str, ...]) -> NodeFactory:
    def make(broker_id: int, disk: SimDisk, now_ms: int, rng: random.Random,
             wall_clock: WallClock) -> BrokerNode:
        props = {**broker_config, "broker.id": str(broker_id)}
        node = BrokerNode(
            config=BrokerConfig.from_properties(props), disk=disk, data_dir=f"/data/b{broker_id}",
            host=f"b{broker_id}.sim", port=9092, now_ms=now_ms, rng=rng, external_metadata=True,
            wall_clock=wall_clock,
        )
        for name in fault_points:
            node.faults.enable(name)
        return node

    return make


class SimCluster:
    def __init__(self, config: SimConfig, node_factory: NodeFactory | None = None) -> None:
        self.config = config
        self.scheduler = Scheduler(config.seed, START_MS)
        n = config.brokers
        assert n >= 1
        self.plan = FaultPlan.draw(self.scheduler.fork(), brokers=n)
        self.replication_factor = min(3, n)
        self.min_isr = 2 if self.replication_factor >= 3 else 1
        broker_config = {**SIM_BROKER_CONFIG,
                         # Internal topics as the user topic: every broker of a smaller cluster.
                         "offsets.topic.replication.factor": str(self.replication_factor),
                         "transaction.state.log.replication.factor": str(self.replication_factor),
                         "transaction.state.log.min.isr": str(self.min_isr),
                         **(SIM_TXN_CONFIG if config.transactions else {}),
                         **(SIM_COMPACTION_CONFIG if config.compaction else {}),
                         **(SIM_GROUP_CONFIG if config.consumer_groups else {}),
                         **({"eligible.leader.replicas.enable": "true"} if config.eligible_leader_replicas else {})}
        factory = node_factory or default_node_factory(broker_config, config.fault_points)
        host_rng = self.scheduler.fork()
        self.hosts: dict[int, BrokerHost] = {
            b: BrokerHost(b, self.scheduler, random.Random(host_rng.getrandbits(64)), factory, self,
                          self.plan.flush_delay_max_ms, compaction=config.compaction)
            for b in range(1, n + 1)
        }
        self.network = Network(self.scheduler, self.scheduler.fork(), self.hosts.get, self.plan.network)
        self.observer: MetadataObserver | None = None
        self.store = StoreBridge(self.scheduler, self.scheduler.fork(), self.hosts.get, self.plan.store,
                                 on_change=self._poll_observer)
        self.observer = MetadataObserver(self.store.store, elr_enabled=config.eligible_leader_replicas)
        self.checker = ReplicaChecker(compaction=config.compaction)
        self.restart_revision: dict[int, int] = {}
        self.history = History()
        self.env = ClientEnv(self.scheduler, self.network, self.history, sorted(self.hosts), TOPIC)
        client_rng = self.scheduler.fork()
        self.partitions = client_rng.randint(1, 3)
        self.admin = Admin("admin", self.env, random.Random(client_rng.getrandbits(64)), self.partitions,
                           self.replication_factor, {
                               "min.insync.replicas": str(self.min_isr), "flush.policy": config.flush_policy,
                               "unclean.leader.election.enable": "false",
                           })
        self.producers: list[Producer] = []
        for i in range(client_rng.randint(1, 3)):
            acks = 1 if client_rng.random() < 0.2 else -1
            idempotent = acks == -1 and client_rng.random() < 0.8
            self.producers.append(Producer(
                f"p{i}", self.env, random.Random(client_rng.getrandbits(64)), acks=acks,
                producer_id=1_000 + i if idempotent else None, max_writes=10_000,
                think_ms=client_rng.choice((0, 20, 200)),
            ))
        self.consumers = [
            Consumer(f"c{i}", self.env, random.Random(client_rng.getrandbits(64)),
                     max_wait_ms=client_rng.choice((0, 100, 500)))
            for i in range(client_rng.randint(1, 2))
        ]
        self.injector = FaultInjector(self, self.plan, self.scheduler.fork())
        # Drawn last, and only with transactions, so that every other seed keeps its history.
        self.txns = TxnHistory()
        self.txn_producers: list[TransactionalProducer] = []
        self.txn_consumers: list[IsolatedConsumer] = []
        if config.transactions:
            self._add_transactional_clients(self.scheduler.fork())
        # Forked after everything else, so that the other components draw what they drew.
        self.wall_steps = WallSteps(self, self.plan, self.scheduler.fork(), self.injector.injected)
        self.groups = GroupHistory()
        self.group_members: list[GroupMember] = []
        if config.consumer_groups:  # drawn last: every other seed keeps its history
            group_rng = self.scheduler.fork()
            leave_rate = group_rng.choice((0.0, 0.02, 0.05))
            self.group_members = [
                GroupMember(f"gm{i}", self.env, random.Random(group_rng.getrandbits(64)), self.groups,
                            leave_rate=leave_rate)
                for i in range(group_rng.randint(2, 4))]
        self.phase = "faults"
        self.converged = False

    def _add_transactional_clients(self, rng: random.Random) -> None:
        count = rng.randint(1, 2)
        twins = count == 2 and rng.random() < 0.3  # both instances of one transactional id
        for i in range(count):
            self.txn_producers.append(TransactionalProducer(
                f"tp{i}", self.env, random.Random(rng.getrandbits(64)), self.txns,
                timeout_ms=rng.choice((3_000, 6_000, 10_000)), commit_rate=rng.choice((0.5, 0.8)),
                crash_rate=rng.choice((0.0, 0.01, 0.03)), max_txns=10_000, think_ms=rng.choice((0, 20, 200)),
                transactional_id="txn-tp0" if twins else None,
                transaction_version=self.config.transaction_version,
                delayed_end_rate=DELAYED_END_RATE if self.config.transaction_version >= 2 else 0.0,
            ))
        for i in range(rng.randint(1, 2)):
            self.txn_consumers.append(IsolatedConsumer(
                f"rc{i}", self.env, random.Random(rng.getrandbits(64)), max_wait_ms=rng.choice((0, 100, 500)),
                txns=self.txns,
            ))

    # --- outputs of the nodes (BrokerHost's OutputSink) -----------------------------------------

    def peer_requests(self, host: BrokerHost, requests: list[Any]) -> None:
        for req in requests:
            # The replica channel keeps the connection key every history has always used.
            channel = "" if req.channel == "replica" else req.channel
            self._peer_request(host, req.request_id, req.broker_id, req.request, channel)

    def _peer_request(self, host: BrokerHost, rid: int, dst: int, request: Any, channel: str = "") -> None:
        """Carry one PeerRequest; exactly one of on_peer_response / on_peer_failure follows."""
        incarnation = host.incarnation

        def respond(response: Any) -> None:
            host.deliver(incarnation, lambda n: n.on_peer_response(rid, response, self.scheduler.now_ms))

        def fail(reason: str) -> None:
            host.deliver(incarnation, lambda n: n.on_peer_failure(rid, reason, self.scheduler.now_ms))

        if host.node.broker_address(dst) is None or dst not in self.hosts:
            # The shell's peer pool cannot connect to a broker it has no address for.
            label = f"no address b{host.broker_id}->b{dst}"
            self.scheduler.after(1, label, lambda: fail("unknown broker address"))
            return
        self.network.request(
            host.endpoint, dst, request, client_id=f"ackly-broker-{host.broker_id}",
            timeout_ms=PEER_TIMEOUT_MS, on_response=respond, on_failure=fail, channel=channel,
        )

    def store_commands(self, host: BrokerHost, commands: list[Any]) -> None:
        self.store.send(host, commands)

    def log_dir_failed(self, host: BrokerHost) -> None:
        """A broker's disk failed (the "disk-error" fault): it answered KAFKA_STORAGE_ERROR and
        left the cluster; the process exits a little later (the shell's bounded wait for the
        lease revocation), and comes back after a while on its disk as the failure left it."""
        broker_id, incarnation = host.broker_id, host.incarnation

        def exit_process() -> None:
            if host.incarnation != incarnation or not host.running:
                return
            self.kill(broker_id)
            self.injector.after_disk_error(broker_id)

        self.scheduler.after(DISK_ERROR_EXIT_MS, f"exit b{broker_id} (disk error)", exit_process)

    # --- processes ---------------------------------------------------------------------------------

    def kill(self, broker_id: int) -> None:
        host = self.hosts[broker_id]
        incarnation = host.incarnation
        host.kill()
        self.network.drop_endpoint(host.endpoint, broker_id)
        self.store.broker_died(broker_id)
        self.checker.forget_incarnation(broker_id, incarnation)

    def stop(self, broker_id: int) -> None:
        """A clean stop of one broker (see BrokerHost.stop)."""
        host = self.hosts[broker_id]
        incarnation = host.incarnation
        host.stop()
        self.network.drop_endpoint(host.endpoint, broker_id)
        self.store.broker_died(broker_id)
        self.checker.forget_incarnation(broker_id, incarnation)

    def restart(self, broker_id: int) -> None:
        host = self.hosts[broker_id]
        if host.running:
            return
        self.restart_revision[broker_id] = self.store.store.revision
        host.start()

    def client_names(self) -> list[str]:
        return [c.name for c in self._clients()]

    def _clients(self) -> list[Admin | Producer | Consumer | TransactionalProducer | GroupMember]:
        return [self.admin, *self.producers, *self.consumers, *self.txn_producers, *self.txn_consumers,
                *self.group_members]

    def replica_peers(self, broker_id: int) -> set[int]:
        """Brokers that share a partition with `broker_id` (all others while none is known)."""
        assert self.observer is not None
        states = list(self.observer.metadata.all_partitions())
        if not states:
            return set(self.hosts) - {broker_id}
        peers: set[int] = set()
        for _, state in states:
            if broker_id in state.replicas:
                peers.update(state.replicas)
        peers.discard(broker_id)
        return peers

    def fully_in_sync(self, broker_id: int) -> bool:
        """Whether a restarted broker holds again what its crash may have lost: registered anew,
        and back in the ISR of every partition it replicates (joined since it registered)."""
        assert self.observer is not None
        metadata = self.observer.metadata
        registration = metadata.brokers.get(broker_id)
        if registration is None or registration.epoch <= self.restart_revision.get(broker_id, 0):
            return False
        for tp, state in metadata.all_partitions():
            if broker_id not in state.replicas:
                continue
            if broker_id not in state.isr:
                return False
            joined = self.observer.isr_joined.get((tp, broker_id), 0)
            if joined <= registration.epoch and state.isr != (broker_id,):
                return False
        return True

    # --- checks ------------------------------------------------------------------------------------

    def _poll_observer(self) -> None:
        if self.observer is not None:
            self.observer.poll()

    def check(self) -> None:
        """The invariants that must hold after every event."""
        self._poll_observer()
        for b, host in self.hosts.items():
            if host.disk.loop_syncs:
                raise InvariantViolation(
                    f"b{b}: fsync on the event loop: {host.disk.loop_syncs[:5]}"
                )
            if host.node is not None:
                self.checker.check(b, host.incarnation, host.node)

    def _leader_of(self, tp: TopicPartition) -> tuple[int, Any] | None:
        """(broker, replica) of the partition's leader as the store names it."""
        assert self.observer is not None
        state = self.observer.metadata.partition(tp)
        if state is None or state.leader == NO_LEADER:
            return None
        host = self.hosts[state.leader]
        if host.node is None:
            return None
        for p in partitions_of(host.node):
            if p.tp == tp:
                return state.leader, p
        return None

    def topic_partitions(self) -> list[TopicPartition]:
        return [TopicPartition(TOPIC, i) for i in range(self.partitions)]

    def unconverged(self) -> list[str]:
        """What still keeps the healed cluster from having converged (empty: converged)."""
        waiting: list[str] = []
        if not self.admin.done:
            waiting.append("the topic is not created")
            return waiting
        for b, host in self.hosts.items():
            if not host.running or host.paused:
                waiting.append(f"b{b} is not running")
        leader_hws: dict[int, int] = {}
        for tp in self.topic_partitions():
            found = self._leader_of(tp)
            if found is None:
                waiting.append(f"{tp} has no running leader")
                continue
            leader_id, leader = found
            if not is_leader(leader):
                waiting.append(f"{tp}: b{leader_id} does not act as leader yet")
                continue
            leo, hw = leader.log_end_offset, leader.high_watermark
            leader_hws[tp.partition] = hw
            if hw != leo:
                waiting.append(f"{tp}: leader b{leader_id} HW {hw} < LEO {leo}")
            if leader.last_stable_offset != hw:
                # A hanging transaction: open with no producer to end it, or its markers unwritten.
                waiting.append(f"{tp}: leader b{leader_id} LSO {leader.last_stable_offset} < HW {hw}")
            waiting += self._followers_waiting(tp, leader_id, leader)
        for producer in self.producers:
            if not producer.idle:
                write = producer.current
                waiting.append(f"{producer.name} still sending write {write.write_id if write else '?'}")
        for txn_producer in self.txn_producers:
            if not txn_producer.idle:
                txn = txn_producer.txn
                waiting.append(f"{txn_producer.name} still in transaction {txn.txn_id if txn else '?'}")
        for consumer in [*self.consumers, *self.txn_consumers]:
            if not consumer.caught_up(leader_hws):
                waiting.append(f"{consumer.name} at {consumer.positions}, leader HWs {leader_hws}")
        if (group_waiting := converged(self.group_members, self.partitions)) is not None:
            waiting.append(group_waiting)
        return waiting

    def _followers_waiting(self, tp: TopicPartition, leader_id: int, leader: Any) -> list[str]:
        assert self.observer is not None
        state = self.observer.metadata.partition(tp)
        assert state is not None
        waiting = []
        if set(state.isr) != set(state.replicas):
            waiting.append(f"{tp}: ISR {state.isr} != replicas {state.replicas}")
        for b in state.replicas:
            if b == leader_id:
                continue
            node = self.hosts[b].node
            if node is None:
                continue
            replica = next((p for p in partitions_of(node) if p.tp == tp), None)
            if replica is None:
                waiting.append(f"{tp}: b{b} has no replica")
            elif (replica.log_end_offset, replica.high_watermark, replica.leader_epoch) != (
                leader.log_end_offset, leader.high_watermark, leader.leader_epoch
            ):
                waiting.append(
                    f"{tp}: follower b{b} LEO/HW/epoch {replica.log_end_offset}/{replica.high_watermark}/"
                    f"{replica.leader_epoch} vs leader b{leader_id} {leader.log_end_offset}/"
                    f"{leader.high_watermark}/{leader.leader_epoch}"
                )
        return waiting

    def final_problems(self) -> list[str]:
        leader_logs: dict[TopicPartition, list[LogRecord]] = {}
        markers: dict[TopicPartition, dict[bytes, str]] = {}
        epochs: dict[bytes, tuple[int, int]] = {}
        problems: list[str] = []
        for tp in self.topic_partitions():
            found = self._leader_of(tp)
            assert found is not None
            leader_id, leader = found
            leader_logs[tp] = log_records(leader)
            expected = read_batches(leader, leader.log_start_offset, leader.log_end_offset)
            markers[tp] = marker_outcomes(data for _base, _last, data in expected)
            if self.config.transactions:
                written, mixed = transaction_epochs((data for _base, _last, data in expected), str(tp))
                epochs.update(written)
                problems += mixed
            for b, host in self.hosts.items():
                if b == leader_id or host.node is None:
                    continue
                replica = next((p for p in partitions_of(host.node) if p.tp == tp), None)
                if replica is None:
                    continue
                got = read_batches(replica, replica.log_start_offset, replica.log_end_offset)
                if got != expected:
                    problems.append(f"{tp}: follower b{b}'s log differs from leader b{leader_id}'s (rule 11)")
        # acks=all with RF 3 / min ISR 2 / flush always (rule 13); with a single replica that
        # flushes always, acks=1 is as durable (rule 6).
        durable = (-1,) if self.replication_factor > 1 else (-1, 1)
        problems += check_history(self.history, leader_logs, durable_acks=durable)
        problems += self.groups.problems(self.scheduler.now_ms)
        if self.config.transactions:
            problems += check_transactions(self.txns, leader_logs, self.txn_consumers,
                                           durable=self.replication_factor != 2, markers=markers,
                                           epochs=epochs)
        return problems

    # --- the run -----------------------------------------------------------------------------------

    def heal(self) -> None:
        """Start the liveness phase: every fault ends, no new ones, no new writes."""
        self.injector.stop()
        self.wall_steps.stop()
        self.network.heal_all()
        self.network.faults.delay_rate = 0.0
        self.store.faults.delay_rate = 0.0
        for b in sorted(self.hosts):
            self.store.reconnect(b)
            host = self.hosts[b]
            if not host.running:
                self.restart(b)
            elif host.paused:
                host.resume()
        for producer in self.producers:
            producer.producing = False
            producer.wake()
        for txn_producer in self.txn_producers:
            txn_producer.producing = False
            txn_producer.wake()
        for consumer in [*self.consumers, *self.txn_consumers]:
            consumer.wake()
        for member in self.group_members:
            member.leave_rate = 0.0  # the group must settle
            member.wake()
        self._poll_convergence()

    def _poll_convergence(self) -> None:
        self.converged = not self.unconverged()
        if not self.converged:
            self.scheduler.after(CONVERGENCE_POLL_MS, "convergence poll", self._poll_convergence)

    def run(self) -> SimResult:
        failure: str | None = None
        try:
            self._run()
        except (InvariantViolation, ClientViolation) as exc:
            failure = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # the core (or the simulator) crashed: a bug all the same
            failure = f"{type(exc).__name__}: {exc}\n{''.join(traceback.format_exc(limit=-8))}"
        return SimResult(
            config=self.config, ok=failure is None, phase=self.phase, failure=failure,
            events=self.scheduler.events_run, virtual_ms=self.scheduler.now_ms - START_MS,
            trace_hash=self.scheduler.trace_hash, stats=self.stats(),
            trace_tail=list(self.scheduler.trace_tail),
        )

    def _run(self) -> None:
        for b in sorted(self.hosts):
            self.hosts[b].start()
        for client in self._clients():
            client.wake()
        self.injector.start()
        self.wall_steps.start()
        self.check()
        self._steps(lambda: self.scheduler.events_run < self.config.steps)
        self.phase = "liveness"
        self.heal()
        deadline_ms = self.scheduler.now_ms + self.config.liveness_ms
        event_limit = self.scheduler.events_run + self.config.liveness_events
        self._steps(lambda: not self.converged and self.scheduler.now_ms <= deadline_ms
                    and self.scheduler.events_run < event_limit)
        if not self.converged:
            waiting = self.unconverged()
            if waiting:
                raise InvariantViolation(
                    f"liveness: the healed cluster did not converge within {self.config.liveness_ms} ms: "
                    + "; ".join(waiting[:8])
                )
        self.phase = "final"
        problems = self.final_problems()
        if problems:
            raise InvariantViolation(
                f"{len(problems)} problem(s) in the history:\n  " + "\n  ".join(problems[:10])
            )

    def _steps(self, more: Callable[[], bool]) -> None:
        scheduler = self.scheduler
        still_since = (scheduler.now_ms, scheduler.events_run)
        while more():
            if not scheduler.step():
                return
            self.check()
            if scheduler.now_ms != still_since[0]:
                still_since = (scheduler.now_ms, scheduler.events_run)
            elif scheduler.events_run - still_since[1] > LIVELOCK_EVENTS:
                # Messages bouncing back and forth with no time passing: a retry without backoff.
                raise InvariantViolation(
                    f"livelock: {LIVELOCK_EVENTS} events at one instant without the clock moving; "
                    f"the last ones: {scheduler.trace_tail[-6:]}"
                )

    def stats(self) -> dict[str, Any]:
        writes = self.history.writes
        return {
            "brokers": len(self.hosts),
            "partitions": self.partitions,
            "plan": self.plan.describe(),
            "faults": dict(sorted(self.injector.injected.items())),
            "writes": len(writes),
            "acknowledged": sum(1 for w in writes if w.acknowledged),
            "refused": sum(1 for w in writes if w.refused),
            "reads": len(self.history.reads),
            "kills": sum(h.kills for h in self.hosts.values()),
            "log_dir_failures": sum(h.log_dir_failures for h in self.hosts.values()),
            "elections": self.observer.elections if self.observer else 0,
            "messages": self.network.messages_sent,
            "dropped": self.network.messages_dropped,
            "resets": self.network.resets,
            "store_commands": self.store.commands,
            "committed_batches_checked": self.checker.checked_batches,
            **(self._txn_stats() if self.config.transactions else {}),
            **({"cleans": sum(h.cleans for h in self.hosts.values())} if self.config.compaction else {}),
            **({"group": {"members": len(self.group_members), "answers": self.groups.answers,
                          "fenced": self.groups.fenced, "leaves": self.groups.leaves,
                          "epochs": len(self.groups.by_epoch)}} if self.config.consumer_groups else {}),
            **({"elr_states": self.observer.elr_states if self.observer else 0}
               if self.config.eligible_leader_replicas else {}),
        }

    def _txn_stats(self) -> dict[str, Any]:
        return {
            "transactions": self.txns.counts(),
            "committed_reads": len(self.txns.committed_reads),
            "producer_crashes": self.txns.crashes,
            "fenced": self.txns.fenced,
            **({"delayed_ends": self.txns.delayed_ends, "delayed_ends_fenced": self.txns.delayed_ends_fenced}
               if self.config.transaction_version >= 2 else {}),
            "surprises": list(self.txns.surprises[:5]),
        }


def run_seed(seed: int, steps: int = DEFAULT_STEPS, brokers: int = 3, fault_points: tuple[str, ...] = (),
             **kwargs: Any) -> SimResult:
    """Run one seeded history and report what happened (never raises for a found bug)."""
    config = SimConfig(seed=seed, steps=steps, brokers=brokers, fault_points=fault_points, **kwargs)
    return SimCluster(config).run()
