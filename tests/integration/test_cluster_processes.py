"""Three `ackly serve` processes on etcd, real clients, real faults (docs/guarantees.md rules 7-17).

- The partition leader is killed with SIGKILL while an idempotent acks=all producer (min ISR 2)
  is mid-stream, and later restarted: every acknowledged record is consumed exactly once, in
  send order, and the restarted broker rejoins the ISR.
- The leader is partitioned away (its peers' fetches are cut by the fault proxy every broker
  advertises, and its etcd connection by a TCP relay): it cannot acknowledge an acks=all write,
  a new leader is elected, and after healing the old leader's divergent tail is truncated.

Timing: sessions are short (broker.session.timeout.ms=3000) so that failover takes seconds.
Every wait is for a condition, bounded; a sleep only paces a producer.
"""

from __future__ import annotations

import datetime
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kio.schema.errors import ErrorCode
from kio.schema.produce.v9.request import PartitionProduceData, ProduceRequest, TopicProduceData
from kio.static.primitive import Records, i16, i32

from ackly.errors import KafkaError
from ackly.protocol.record_codec import Record, decode_batches, encode_batch
from ackly.server.etcd_process import free_port
from ackly.testing.cluster_processes import ClusterProcesses, PartitionView, wait_until
from ackly.testing.fault_proxy import FaultProxy
from ackly.testing.tcp_relay import TcpRelay
from ackly.testing.wire import WireClient

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

TOPIC = "replicated"
FAST_FAILOVER = {
    "broker.session.timeout.ms": "3000",
    "broker.heartbeat.interval.ms": "500",
    "replica.lag.time.max.ms": "4000",
    "replica.fetch.backoff.ms": "200",
    "log.flush.policy": "never",  # durability here is by replication (rule 13), not fsync
}
WAIT_S = 60.0


def create_topic(bootstrap: str, topic: str = TOPIC) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, 1, 3, config={"min.insync.replicas": "2"})],
                                  operation_timeout=30)
    futures[topic].result(timeout=60)


def fully_replicated(cluster: ClusterProcesses, topic: str = TOPIC) -> PartitionView | None:
    view = cluster.partition(topic)
    if view is None or view.error_code != 0 or view.leader < 0 or len(view.isr) != 3:
        return None
    return view


class StreamingProducer:
    """An idempotent acks=all producer sending the values 0, 1, 2, ... in a thread, paced."""

    def __init__(self, bootstrap: str, count: int, pace_every: int = 50, pace_s: float = 0.01) -> None:
        self.producer = Producer({
            "bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
            "linger.ms": 2, "message.timeout.ms": 120_000, "request.timeout.ms": 10_000,
            "retry.backoff.ms": 100, "topic.metadata.refresh.interval.ms": 1000,
        })
        self.count = count
        self.pace_every = pace_every
        self.pace_s = pace_s
        self.acked: list[int] = []
        self.failed: dict[int, str] = {}
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.done = threading.Event()

    def _on_delivery(self, err: Any, msg: Any) -> None:
        value = int(msg.value())
        with self.lock:
            if err is None:
                self.acked.append(value)
            else:
                self.failed[value] = str(err)

    def _run(self) -> None:
        for value in range(self.count):
            while True:
                try:
                    self.producer.produce(TOPIC, str(value).encode(), partition=0,
                                          on_delivery=self._on_delivery)
                    break
                except BufferError:
                    self.producer.poll(0.05)
            self.producer.poll(0)
            if value % self.pace_every == 0:
                time.sleep(self.pace_s)  # pacing the stream so faults land mid-stream
        self.producer.flush(150)
        self.done.set()

    def start(self) -> StreamingProducer:
        self.thread.start()
        return self

    def acked_count(self) -> int:
        with self.lock:
            return len(self.acked)


def consume_all(bootstrap: str, at_least: int, timeout_s: float = WAIT_S) -> list[int]:
    """Every value in the partition, from the start to the end (read_uncommitted: below HW)."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": "cluster-check", "enable.auto.commit": False,
        "enable.partition.eof": True, "auto.offset.reset": "earliest",
    })
    values: list[int] = []
    try:
        consumer.assign([TopicPartition(TOPIC, 0, 0)])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == -191 and len(values) >= at_least:  # partition EOF
                    break
                continue
            values.append(int(msg.value()))
    finally:
        consumer.close()
    return values


def check_exactly_once_in_order(values: list[int], acked: list[int], sent: int) -> None:
    assert len(values) == len(set(values)), "a record was consumed twice (rule 15)"
    assert values == sorted(values), "records are out of send order (rule 17)"
    assert set(values) <= set(range(sent))
    missing = sorted(set(acked) - set(values))
    assert not missing, f"{len(missing)} acknowledged records lost (rule 13), e.g. {missing[:10]}"


def test_leader_killed_mid_stream_loses_no_acknowledged_record_and_rejoins(
    ackly_cluster_processes: Callable[..., ClusterProcesses],
) -> None:
    cluster = ackly_cluster_processes(3, configs=FAST_FAILOVER)
    create_topic(cluster.bootstrap)
    before = wait_until(lambda: fully_replicated(cluster), WAIT_S, "a leader and an ISR of 3")

    sent = 6000
    producer = StreamingProducer(cluster.bootstrap, sent).start()
    wait_until(lambda: producer.acked_count() >= 1500, WAIT_S, "1500 acknowledged records")
    victim = before.leader
    cluster.kill(victim)  # SIGKILL, mid-stream

    after = wait_until(
        lambda: (v := cluster.partition(TOPIC)) and v.leader not in (-1, victim) and v,
        WAIT_S, "a new leader",
    )
    assert after.leader_epoch > before.leader_epoch, "leadership changed without an epoch bump (rule 10)"
    assert victim not in after.isr
    assert producer.done.wait(180), "the producer did not finish"
    assert producer.acked_count() > 1500, "nothing was acknowledged after the failover"

    cluster.restart(victim)
    rejoined = wait_until(
        lambda: (v := fully_replicated(cluster)) and victim in v.isr and v, WAIT_S,
        f"broker {victim} back in the ISR",
    )
    assert rejoined.leader_epoch >= after.leader_epoch

    values = consume_all(cluster.bootstrap, at_least=len(producer.acked))
    check_exactly_once_in_order(values, producer.acked, sent)
    assert not producer.failed, f"deliveries failed: {list(producer.failed.items())[:5]}"


# --- the leader partitioned away ---------------------------------------------------------------


def produce_request(values: list[int], acks: int = -1, timeout_ms: int = 3000) -> ProduceRequest:
    batch = encode_batch([Record(key=None, value=str(v).encode(), timestamp_ms=1_700_000_000_000)
                          for v in values])
    return ProduceRequest(
        transactional_id=None, acks=i16(acks), timeout=datetime.timedelta(milliseconds=timeout_ms),
        topic_data=(TopicProduceData(name=TOPIC, partition_data=(
            PartitionProduceData(index=i32(0), records=Records(batch)),)),),
    )


def produce_direct(address: str, values: list[int], timeout_s: float = 15.0) -> int | None:
    """An acks=all produce straight to one broker: its error code, or None if no answer came."""
    try:
        with WireClient(address, timeout_s=timeout_s) as client:
            response = client.request(produce_request(values))
    except (OSError, ConnectionError):
        return None
    return int(response.responses[0].partition_responses[0].error_code)


def logged_values(partition_dir: Any) -> list[int] | None:
    """The record values in a partition directory's segments, in offset order; None if a
    segment ends in a partial batch (being written)."""
    data = b"".join(path.read_bytes() for path in sorted(partition_dir.glob("*.log")))
    try:
        batches = decode_batches(data)
    except KafkaError:
        return None
    return [int(r.value) for _, records in batches for r in records if r.value is not None]


def test_partitioned_leader_cannot_acknowledge_and_its_divergent_tail_is_truncated(
    tmp_path: Any,
) -> None:
    from ackly.server.etcd_process import EtcdProcess, etcd_binary

    if etcd_binary() is None:
        pytest.skip("etcd is not installed")
    etcd = EtcdProcess(str(tmp_path / "etcd")).start()
    # Every broker listens on a port of its own and advertises the fault proxy's listener for
    # it, so brokers (and clients) reach each other only through the proxy.
    ports = {b: free_port() for b in range(3)}
    proxy = FaultProxy(upstreams={b: ("127.0.0.1", p) for b, p in ports.items()}).start()
    advertised = {b: int(addr.rsplit(":", 1)[1]) for b, addr in proxy.listeners.items()}
    # And each reaches etcd through a relay of its own, which can be cut.
    relays = {b: TcpRelay(("127.0.0.1", etcd.client_port)).start() for b in range(3)}
    cluster = ClusterProcesses(
        str(tmp_path / "cluster"), 3, configs=FAST_FAILOVER, etcd=etcd, ports=ports,
        advertised_ports=advertised, metadata_urls={b: f"etcd://{r.address}" for b, r in relays.items()},
        log_level="INFO",
    )
    try:
        cluster.start()
        bootstrap = proxy.bootstrap
        create_topic(bootstrap)
        before = wait_until(lambda: fully_replicated(cluster), WAIT_S, "a leader and an ISR of 3")
        old = before.leader
        # Committed before the partition.
        assert produce_direct(cluster.address(old), list(range(0, 100))) == ErrorCode.none

        # Partition the old leader: no replica fetch reaches it (Fetch and OffsetsForLeaderEpoch
        # through its proxy listener), and it cannot reach etcd. Clients still reach it directly.
        peer_apis = {1, 23}
        cut = proxy.add_rule(None, "reset", broker_id=old,
                             match=lambda api_key, version, cid: api_key in peer_apis)
        proxy.disconnect_all(reset=True)
        relays[old].cut()

        # The old leader takes writes it cannot replicate: never acknowledged with acks=all.
        segment = tmp_path / "cluster" / f"broker-{old}" / f"{TOPIC}-0" / f"{0:020d}.log"
        size_before = segment.stat().st_size
        diverged = list(range(10_000, 10_050))
        code = produce_direct(cluster.address(old), diverged, timeout_s=15)
        assert code != ErrorCode.none, "a partitioned leader acknowledged an acks=all write"
        # It did append them (its ISR cannot shrink without the store): a divergent tail.
        assert segment.stat().st_size > size_before, "no divergent tail: the test proves nothing"

        # The others elect a new leader (epoch bumped) and take acks=all writes without it.
        after = wait_until(
            lambda: (v := cluster.partition(TOPIC, asking=next(b for b in range(3) if b != old)))
            and v.leader not in (-1, old) and v, WAIT_S, "a new leader among the others",
        )
        assert after.leader_epoch > before.leader_epoch
        new_leader = after.leader
        committed_after = list(range(100, 200))
        code = wait_until(
            lambda: produce_direct(cluster.address(new_leader), committed_after) == ErrorCode.none,
            WAIT_S, "an acks=all write on the new leader",
        )
        assert code

        # Heal: the old leader comes back as a follower and truncates its divergent tail.
        relays[old].heal()
        proxy.clear_rules()
        assert cut.fired > 0
        healed = wait_until(
            lambda: (v := cluster.partition(TOPIC, asking=new_leader)) and old in v.isr
            and len(v.isr) == 3 and v,
            WAIT_S, f"broker {old} back in the ISR (as broker {new_leader} sees it)",
        )
        assert healed.leader_epoch >= after.leader_epoch
        # Its own log, read from its files: the committed records, and nothing of the tail.
        logged = wait_until(lambda: (v := logged_values(segment.parent)) == list(range(0, 200)) and v,
                            WAIT_S, f"broker {old}'s log to hold exactly the committed records")
        assert set(diverged).isdisjoint(logged)
        # The old leader leads again, in a newer epoch: it is the preferred replica, so the
        # controller's rebalance brings leadership back; if it has not, a controlled shutdown of
        # the current leader does. Consumers then read its log.
        stopped: set[int] = set()
        current = cluster.partition(TOPIC, asking=old)
        if current is not None and current.leader not in (old, -1):
            cluster.stop(current.leader)
            stopped.add(current.leader)
        again = wait_until(
            lambda: (v := cluster.partition(TOPIC, asking=old)) and v.leader == old and v,
            WAIT_S, f"broker {old} leading again",
        )
        assert again.leader_epoch > after.leader_epoch
        bootstrap = ",".join(cluster.address(b) for b in range(3) if b not in stopped)
        values = consume_all(bootstrap, 200)
        assert set(diverged).isdisjoint(values), "the old leader's divergent tail survived"
        assert values == list(range(0, 200)), "the committed records are not exactly what was acknowledged"
    except BaseException:
        for b in cluster.brokers:  # shown by pytest with the failure
            print(f"===== broker {b} =====\n{cluster.output(b)[-20000:]}")
        raise
    finally:
        cluster.stop_all()
        proxy.stop()
        for relay in relays.values():
            relay.stop()
        etcd.stop()
    assert os.path.isdir(tmp_path / "cluster")
