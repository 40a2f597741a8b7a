"""One consumer-group member in its own process, for the group tests (tests/clients/groupkit.py).

    python group_member.py CLIENT BOOTSTRAP GROUP TOPIC NAME [--instance-id ID] [--session-ms MS]

CLIENT is confluent, kafka-python or aiokafka. The member subscribes to TOPIC in GROUP and
reports on stdout, one JSON object per line, flushed at once:
    {"event": "assigned", "member": member id, "partitions": [...]}   after each assignment
    {"event": "revoked", "partitions": [...]}
    {"event": "record", "p": partition, "o": offset, "v": value}     each record, before its
                                                                      offset is committed
    {"event": "error", "error": text, "fatal": bool}
    {"event": "closed"}                                               after a clean close
It processes records at least once: it reports them, then commits synchronously, so a record
whose offset was committed has always been reported, even if the process is then killed.
"stop" on stdin closes it cleanly (LeaveGroup for dynamic members); SIGKILL is a crash.
With ACKLY_MEMBER_DEBUG=1 in the environment the client library logs at DEBUG on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
from typing import Any

_lock = threading.Lock()
stop = threading.Event()


def emit(**event: Any) -> None:
    with _lock:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()


def watch_stdin() -> None:
    for line in sys.stdin:
        if line.strip() == "stop":
            break
    stop.set()


def text(value: bytes | None) -> str | None:
    return None if value is None else value.decode()


def run_confluent(args: argparse.Namespace) -> None:
    from confluent_kafka import Consumer, KafkaError, KafkaException

    conf: dict[str, Any] = {
        "bootstrap.servers": args.bootstrap, "group.id": args.group, "client.id": args.name,
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
        "session.timeout.ms": args.session_ms, "heartbeat.interval.ms": 500,
        "max.poll.interval.ms": 30_000, "fetch.wait.max.ms": 100,
    }
    if args.instance_id:
        conf["group.instance.id"] = args.instance_id
    consumer = Consumer(conf)

    def on_assign(c: Any, partitions: Any) -> None:
        emit(event="assigned", member=c.memberid(), partitions=sorted(p.partition for p in partitions))

    def on_revoke(c: Any, partitions: Any) -> None:
        emit(event="revoked", partitions=sorted(p.partition for p in partitions))

    consumer.subscribe([args.topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_revoke)
    while not stop.is_set():
        messages = consumer.consume(num_messages=200, timeout=0.1)
        got = False
        for m in messages:
            err = m.error()
            if err is not None:
                # librdkafka raises a fatal error (FENCED_INSTANCE_ID...) as a _FATAL event whose
                # text names the cause.
                fatal = err.fatal() or err.code() == KafkaError._FATAL
                emit(event="error", error=f"{err.name()}: {err.str()}", fatal=fatal)
                if fatal:
                    return
                continue
            emit(event="record", p=m.partition(), o=m.offset(), v=text(m.value()))
            got = True
        if got:
            try:
                consumer.commit(asynchronous=False)
            except KafkaException as exc:  # a rebalance got in the way: redelivered later
                emit(event="error", error=str(exc), fatal=exc.args[0].fatal())
                if exc.args[0].fatal():
                    return
    consumer.close()
    emit(event="closed")


def run_kafka_python(args: argparse.Namespace) -> None:
    from kafka import ConsumerRebalanceListener, KafkaConsumer
    from kafka.errors import KafkaError

    consumer = KafkaConsumer(
        bootstrap_servers=args.bootstrap, group_id=args.group, client_id=args.name,
        auto_offset_reset="earliest", enable_auto_commit=False,
        session_timeout_ms=args.session_ms, heartbeat_interval_ms=500,
        max_poll_interval_ms=30_000, fetch_max_wait_ms=100,
    )

    class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
        def on_partitions_revoked(self, revoked: Any) -> None:
            emit(event="revoked", partitions=sorted(tp.partition for tp in revoked))

        def on_partitions_assigned(self, assigned: Any) -> None:
            member = consumer._coordinator._generation.member_id  # no public accessor
            emit(event="assigned", member=member, partitions=sorted(tp.partition for tp in assigned))

    # kafka-python 3.0.12 bug: a leader that assigned before it had the topic's metadata
    # rejoins when the metadata arrives; if that JoinGroup outlasts one poll() and its own
    # assignment then makes need_rejoin() false, the finished join is never completed (no
    # assignment, heartbeats stay off, the session expires). Knowing the topic's partitions
    # before subscribing keeps the first assignment complete, so that rejoin never happens.
    consumer.partitions_for_topic(args.topic)
    consumer.subscribe([args.topic], listener=Listener())
    while not stop.is_set():
        batches = consumer.poll(timeout_ms=100)
        got = False
        for records in batches.values():
            for m in records:
                emit(event="record", p=m.partition, o=m.offset, v=text(m.value))
                got = True
        if got:
            try:
                consumer.commit()
            except KafkaError as exc:
                emit(event="error", error=repr(exc), fatal=False)
    consumer.close(autocommit=False)
    emit(event="closed")


def run_aiokafka(args: argparse.Namespace) -> None:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.abc import ConsumerRebalanceListener
    from aiokafka.errors import KafkaError

    async def main() -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=args.bootstrap, group_id=args.group, client_id=args.name,
            auto_offset_reset="earliest", enable_auto_commit=False,
            session_timeout_ms=args.session_ms, heartbeat_interval_ms=500,
            max_poll_interval_ms=30_000, fetch_max_wait_ms=100,
        )

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            def on_partitions_revoked(self, revoked: Any) -> None:
                emit(event="revoked", partitions=sorted(tp.partition for tp in revoked))

            def on_partitions_assigned(self, assigned: Any) -> None:
                member = consumer._coordinator.member_id  # no public accessor
                emit(event="assigned", member=member, partitions=sorted(tp.partition for tp in assigned))

        consumer.subscribe([args.topic], listener=Listener())
        await consumer.start()
        try:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=100)
                got = False
                for records in batches.values():
                    for m in records:
                        emit(event="record", p=m.partition, o=m.offset, v=text(m.value))
                        got = True
                if got:
                    try:
                        await consumer.commit()
                    except KafkaError as exc:
                        emit(event="error", error=repr(exc), fatal=False)
        finally:
            await consumer.stop()
        emit(event="closed")

    asyncio.run(main())


RUNNERS = {"confluent": run_confluent, "kafka-python": run_kafka_python, "aiokafka": run_aiokafka}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("client", choices=sorted(RUNNERS))
    parser.add_argument("bootstrap")
    parser.add_argument("group")
    parser.add_argument("topic")
    parser.add_argument("name")
    parser.add_argument("--instance-id")
    parser.add_argument("--session-ms", type=int, default=6_000)
    args = parser.parse_args()
    if os.environ.get("ACKLY_MEMBER_DEBUG"):
        import logging

        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr,
                            format="%(asctime)s %(threadName)s %(name)s %(message)s")
    threading.Thread(target=watch_stdin, daemon=True).start()
    RUNNERS[args.client](args)


if __name__ == "__main__":
    main()
