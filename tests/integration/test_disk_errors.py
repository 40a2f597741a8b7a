"""A broker whose fsync fails (EIO) stops: no acknowledgement rests on the failed range.

Brokers run through the test-only launcher with the "disk-error" fault
(testing/disk_faults.py): SIGUSR1 makes the next fsync of a `.log` file fail with EIO, and when
the process exits the file is cut back to what its last good fsync covered, as Linux's lost
write-back leaves it. An acknowledgement that leaned on a later fsync would therefore show up
as a lost record after the restart.

- One broker, flush.policy=always, an idempotent acks=all confluent-kafka producer: the broker
  exits non-zero naming the file and EIO, the records in flight fail at the client (errors,
  not acks), and after a restart every acknowledged record is there, once, in order.
- Three brokers (etcd), RF 3, min ISR 2: the leader whose fsync fails leaves the cluster at
  once, an in-sync replica takes over, the producer's stream goes on, and after the failed
  broker returns every acknowledged record is there exactly once.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from ackly.testing.broker_process import BrokerProcess
from ackly.testing.cluster_processes import ClusterProcesses, wait_until

from .test_cluster_processes import (
    FAST_FAILOVER,
    TOPIC,
    WAIT_S,
    StreamingProducer,
    check_exactly_once_in_order,
    consume_all,
    create_topic,
    fully_replicated,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

EXIT_LOG_DIR_FAILURE = 4


def exit_status(proc: BrokerProcess, timeout_s: float = WAIT_S) -> int:
    assert proc.proc is not None
    return proc.proc.wait(timeout=timeout_s)


def check_failure_report(read_output: Callable[[], str]) -> None:
    # The lines are read from the process's pipe by a thread: the last ones may arrive just
    # after the exit status. "lost pages" is printed last, as the process exits.
    wait_until(lambda: "lost pages of " in read_output(), 10.0, "the broker's last output lines")
    output = read_output()
    assert "log dir failed: fsync " in output, output[-3000:]
    assert ".log: Input/output error (EIO)" in output, output[-3000:]
    # The pages of the failed fsync were really lost (cut at exit): the test has teeth.
    assert "lost pages of " in output, output[-3000:]


def test_one_broker_a_failed_fsync_stops_acknowledgements_and_restart_keeps_every_ack(
    ackly_process: Callable[..., BrokerProcess],
) -> None:
    broker = ackly_process(configs={"log.flush.policy": "always"}, faults=("disk-error",))
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(TOPIC, 1, 1)])[TOPIC].result(timeout=30)

    acked: list[int] = []
    failed: dict[int, str] = {}
    lock = threading.Lock()

    def on_delivery(err: Any, msg: Any) -> None:
        with lock:
            if err is None:
                acked.append(int(msg.value()))
            else:
                failed[int(msg.value())] = str(err)

    producer = Producer({
        "bootstrap.servers": broker.bootstrap, "acks": "all", "enable.idempotence": True,
        "linger.ms": 1, "message.timeout.ms": 5000, "request.timeout.ms": 3000,
        "retry.backoff.ms": 100, "reconnect.backoff.max.ms": 500,
    })
    sent = 0
    signalled_at: int | None = None
    deadline = time.monotonic() + WAIT_S
    assert broker.proc is not None
    while broker.proc.poll() is None and time.monotonic() < deadline and sent < 500_000:
        try:
            producer.produce(TOPIC, str(sent).encode(), partition=0, on_delivery=on_delivery)
            sent += 1
        except BufferError:
            producer.poll(0.01)
        producer.poll(0)
        with lock:
            count = len(acked)
        if signalled_at is None and count >= 1000:
            signalled_at = count
            broker.proc.send_signal(signal.SIGUSR1)  # the next fsync of the log fails
    assert signalled_at is not None, "the producer never got going"
    assert exit_status(broker) == EXIT_LOG_DIR_FAILURE, "".join(broker.output)[-3000:]
    check_failure_report(lambda: "".join(broker.output))
    producer.flush(30)  # with the broker gone, what was in flight times out
    with lock:
        acknowledged, refused = list(acked), dict(failed)
    assert refused, "nothing failed at the client: the failure did not stop the stream"
    assert not set(acknowledged) & set(refused)

    broker.faults = ()  # the disk works again
    broker.start()
    values = consume_all(broker.bootstrap, len(acknowledged))
    check_exactly_once_in_order(values, acknowledged, sent)


def test_three_brokers_the_leader_with_a_failed_fsync_leaves_and_the_isr_takes_over(
    ackly_cluster_processes: Callable[..., ClusterProcesses],
) -> None:
    cluster = ackly_cluster_processes(
        3, configs={**FAST_FAILOVER, "log.flush.policy": "always"}, faults=("disk-error",),
    )
    create_topic(cluster.bootstrap)
    before = wait_until(lambda: fully_replicated(cluster), WAIT_S, "a leader and an ISR of 3")

    sent = 6000
    producer = StreamingProducer(cluster.bootstrap, sent).start()
    wait_until(lambda: producer.acked_count() >= 1500, WAIT_S, "1500 acknowledged records")
    victim = before.leader
    proc = cluster.brokers[victim]
    assert proc.proc is not None
    proc.proc.send_signal(signal.SIGUSR1)
    assert exit_status(proc) == EXIT_LOG_DIR_FAILURE, cluster.output(victim)[-3000:]
    check_failure_report(lambda: cluster.output(victim))

    after = wait_until(
        lambda: (v := cluster.partition(TOPIC)) and v.leader not in (-1, victim)
        and victim not in v.isr and v,
        WAIT_S, "an in-sync replica leading, the failed broker out of the ISR",
    )
    assert after.leader_epoch > before.leader_epoch
    assert producer.done.wait(180), "the producer did not finish"
    assert producer.acked_count() > 1500, "nothing was acknowledged after the failover"

    proc.faults = ()  # the disk works again
    cluster.start_broker(victim)
    wait_until(
        lambda: (v := fully_replicated(cluster)) and victim in v.isr and v, WAIT_S,
        f"broker {victim} back in the ISR",
    )
    values = consume_all(cluster.bootstrap, at_least=len(producer.acked))
    check_exactly_once_in_order(values, producer.acked, sent)
    assert not producer.failed, f"deliveries failed: {list(producer.failed.items())[:5]}"
