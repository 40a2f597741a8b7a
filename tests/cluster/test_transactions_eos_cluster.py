"""Exactly-once consume-transform-produce on three `ackly serve` processes while a broker dies
(docs/guarantees.md rules 13, 18-22, 24), with confluent-kafka.

Three processes (tests/clients/txn_process.py transform) read an input topic in one group and
write an output topic, in transactions that carry their input positions (KIP-447); every
seventh transaction is aborted on purpose and rewound. While they work, the broker that
coordinates their group is killed (SIGKILL): the group, some transactions and some partitions
all fail over at once, and it comes back later. Every topic has RF 3 and min ISR 2. At the end
the output read with read_committed holds every input record exactly once, and the group's
offsets are the input's ends. A member stuck inside librdkafka (docs/clients.md, "Known client
bugs") is started again, as a supervisor would; exactly-once must hold across that too.
"""

from __future__ import annotations

import uuid
import warnings
from typing import Any

import pytest
from confluent_kafka import Producer
from kio.schema.errors import ErrorCode

from ackly.testing.cluster_processes import ClusterProcesses
from tests.clients.txnkit import (
    COORDINATOR_GROUP,
    TxnProcess,
    assert_each_input_once,
    ck_read_committed_to_end,
    create_replicated_topics,
    find_coordinator,
    offset_fetch,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.clients, pytest.mark.timeout(420)]

CONFIGS = {
    "broker.session.timeout.ms": "3000",
    "broker.heartbeat.interval.ms": "500",
    "replica.lag.time.max.ms": "3000",
    "replica.fetch.backoff.ms": "200",
    "log.flush.policy": "never",  # durability here is by replication, not fsync
    "transaction.state.log.num.partitions": "5",
    "offsets.topic.num.partitions": "5",
    "group.initial.rebalance.delay.ms": "0",
}
INPUT_PARTITIONS = 6
OUTPUT_PARTITIONS = 3
PER_PARTITION = 100
WAIT_S = 180.0
MAX_REPLACED = 3


def produce_inputs(bootstrap: str, topic: str, first: int, end: int) -> None:
    errors: list[Any] = []
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                         "linger.ms": 5, "message.timeout.ms": 120_000, "log_level": 4})
    for i in range(first, end):
        for p in range(INPUT_PARTITIONS):
            producer.produce(topic, value=b"in-%d-%d" % (p, i), partition=p,
                             on_delivery=lambda err, _m: errors.append(err) if err else None)
        producer.poll(0)
    assert producer.flush(WAIT_S) == 0 and not errors, f"inputs not acknowledged: {errors[:5]}"


def test_consume_transform_produce_exactly_once_while_the_group_coordinator_dies(
        ackly_cluster_processes: Any) -> None:
    cluster: ClusterProcesses = ackly_cluster_processes(3, configs=CONFIGS)
    suffix = uuid.uuid4().hex[:8]
    source, sink = f"eos-in-{suffix}", f"eos-out-{suffix}"
    group = f"eos-group-{suffix}"
    create_replicated_topics(cluster, (source, INPUT_PARTITIONS), (sink, OUTPUT_PARTITIONS), timeout_s=WAIT_S)
    half = PER_PARTITION // 2
    produce_inputs(cluster.bootstrap, source, 0, half)
    members = [TxnProcess(f"p{i}", "transform", cluster.bootstrap, group, source, sink, f"eos-p{i}-{suffix}",
                          "--abort-every", "7", "--batch", "20") for i in range(3)]
    started = list(members)  # every instance, replaced ones included
    total = INPUT_PARTITIONS * PER_PARTITION

    def committed_total() -> int:
        replace_stuck()
        return sum(e["n"] for p in started for e in p.of("committed"))

    def replace_stuck() -> None:
        """A member whose client call outlived its own timeout ended itself (librdkafka 2.16
        can wait forever for a group coordinator that left the Metadata response: see
        txn_process.py `watchdog`); start it again, as a supervisor would. Its transaction
        is aborted by the new instance's InitProducerId, so exactly-once must still hold."""
        for i, member in enumerate(members):
            if member.stuck():
                assert len(started) < len(members) + MAX_REPLACED, (
                    f"members stuck too often: {[p.describe() for p in started]}")
                warnings.warn(f"{member.name} ended itself, stuck in {member.of('stuck')[0]['call']}: "
                              "started again", stacklevel=1)
                members[i] = member.again()
                started.append(members[i])

    try:
        wait_until(lambda: committed_total() >= 60, WAIT_S, "the first transactions")
        victim = find_coordinator(cluster.bootstrap, group, COORDINATOR_GROUP)
        cluster.kill(victim)
        produce_inputs(cluster.bootstrap, source, half, PER_PARTITION)
        wait_until(lambda: committed_total() >= total * 3 // 4, WAIT_S, "progress after the kill")
        cluster.start_broker(victim)
        wait_until(lambda: committed_total() >= total, WAIT_S, f"{total} records committed in transactions")
        for proc in members:
            if proc.proc.poll() is None:
                proc.stop()
        assert committed_total() == total, f"{committed_total()} records committed for {total} inputs"

        got = ck_read_committed_to_end(cluster.bootstrap, [(sink, p) for p in range(OUTPUT_PARTITIONS)],
                                       timeout_s=WAIT_S)
        assert_each_input_once(got, INPUT_PARTITIONS, PER_PARTITION)
        coordinator = find_coordinator(cluster.bootstrap, group, COORDINATOR_GROUP)
        offsets = offset_fetch(cluster.address(coordinator), group, source, range(INPUT_PARTITIONS),
                               require_stable=True)
        assert offsets == {p: (PER_PARTITION, ErrorCode.none) for p in range(INPUT_PARTITIONS)}, offsets
    except BaseException:
        for proc in started:
            print(proc.describe())
        raise
    finally:
        for proc in started:
            proc.kill()
