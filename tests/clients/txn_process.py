"""Transactional client programs in their own process, for the transaction tests.

    python txn_process.py transform BOOTSTRAP GROUP INPUT OUTPUT TRANSACTIONAL_ID
                          [--hold-at N] [--abort-every K] [--batch B] [--client kafka-python]
    python txn_process.py hold-open BOOTSTRAP TRANSACTIONAL_ID TOPIC PARTITION COUNT
                          [--timeout-ms MS]

`transform` is an exactly-once consume-transform-produce loop (KIP-98, KIP-447): a group
member of GROUP, reading INPUT with read_committed, writes one OUTPUT record per input record
(value "<input partition>:<input offset>:<input value>") and sends the input positions with
send_offsets_to_transaction and the consumer's group metadata, in one transaction per batch.
- After an abort (its own with --abort-every K: every K-th transaction is aborted on purpose;
  or an abortable error) it rewinds every assigned partition to the group's committed offset
  (KAFKA-17582: the fetch position is past the aborted records, which must be read again).
- With --hold-at N the N-th transaction produces, flushes and sends its offsets, then reports
  "holding" and waits, open, until the process is killed.
"stop" on stdin ends the current transaction, then closes cleanly. `--client kafka-python`
runs the same loop with kafka-python (without --hold-at).

`hold-open` begins a transaction, writes COUNT records to TOPIC/PARTITION, flushes them,
reports "open" and waits until killed (a producer that dies inside its transaction).

Both report on stdout, one JSON object per line:
    {"event": "ready"}                                    after init_transactions
    {"event": "committed", "n": records, "txn": number}   after each transaction commit
    {"event": "aborted", "txn": number, "why": text}      after each abort (and its rewind)
    {"event": "holding", "txn": number} / {"event": "open"}
    {"event": "error", "error": text, "fatal": bool}
    {"event": "stuck", "call": name}                      a client call outlived its timeout: exit 3
    {"event": "closed"}

With TXN_DEBUG_DIR set, librdkafka's debug log (eos, cgrp, protocol, broker) goes to
TXN_DEBUG_DIR/<transactional id>.log, for diagnosis.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

_lock = threading.Lock()
stop = threading.Event()
TIMEOUT_S = 30
WATCHDOG_MARGIN_S = 15
STUCK_EXIT_CODE = 3


def emit(**event: Any) -> None:
    with _lock:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()


def watch_stdin() -> None:
    for line in sys.stdin:
        if line.strip() == "stop":
            break
    stop.set()


def rewind(consumer: Consumer, partitions: list[tuple[str, int]]) -> None:
    """Seek `partitions` (those the aborted transaction read) back to the group's committed
    offset, earliest if none. The others' positions are their committed offsets already: each
    transaction either commits its positions or rewinds them. librdkafka asks OffsetFetch with
    require_stable (read_committed), so this also waits for the abort's markers."""
    if not partitions:
        return
    wanted = [TopicPartition(t, p) for t, p in partitions]
    with watchdog("committed", TIMEOUT_S):
        committed = consumer.committed(wanted, timeout=TIMEOUT_S)
    for tp in committed:
        if tp.error is not None:
            raise KafkaException(tp.error)
        offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
        consumer.seek(TopicPartition(tp.topic, tp.partition, offset))


def _debug() -> dict[str, Any]:
    """librdkafka's debug log (to this program's stderr, see main) when TXN_DEBUG_DIR is set."""
    if not os.environ.get("TXN_DEBUG_DIR"):
        return {}
    return {"debug": "eos,cgrp,protocol,broker,topic", "log_level": 7}


@contextlib.contextmanager
def watchdog(call: str, timeout_s: float) -> Iterator[None]:
    """End the process if `call` outlives its own timeout by WATCHDOG_MARGIN_S.

    librdkafka ends every transactional call by its timeout, except where it has a bug: in
    librdkafka 2.16, send_offsets_to_transaction can wait forever for a group coordinator that
    the client decommissioned when that broker left the Metadata response (librdkafka issue
    5511; a dead broker leaves the Metadata response in Kafka too, once its session expires).
    The call cannot be cancelled from here, so the program reports "stuck" and exits, as a
    supervisor's liveness check would end it; the test starts a new instance with the same
    transactional id, which fences this one and aborts its open transaction."""
    timer = threading.Timer(timeout_s + WATCHDOG_MARGIN_S, _stuck, (call,))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _stuck(call: str) -> None:
    emit(event="stuck", call=call)
    os._exit(STUCK_EXIT_CODE)


def transform(args: argparse.Namespace) -> None:
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap, "group.id": args.group, "client.id": args.transactional_id,
        "isolation.level": "read_committed", "enable.auto.commit": False, "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000, "heartbeat.interval.ms": 500, "max.poll.interval.ms": 60_000,
        "fetch.wait.max.ms": 100, "log_level": 4, **_debug(),
    })
    producer = Producer({
        "bootstrap.servers": args.bootstrap, "transactional.id": args.transactional_id,
        "transaction.timeout.ms": 30_000, "linger.ms": 5, "log_level": 4,
        **_debug(),
    })
    with watchdog("init_transactions", TIMEOUT_S):
        producer.init_transactions(TIMEOUT_S)
    emit(event="ready")
    consumer.subscribe([args.input])
    txn = 0
    while not stop.is_set():
        messages = [m for m in consumer.consume(num_messages=args.batch, timeout=0.2) if _usable(m)]
        if not messages:
            continue
        txn += 1
        positions: dict[tuple[str, int], int] = {}
        try:
            producer.begin_transaction()
            for m in messages:
                producer.produce(args.output, key=m.key(),
                                 value=b"%d:%d:" % (m.partition(), m.offset()) + (m.value() or b""))
                positions[(m.topic(), m.partition())] = m.offset() + 1
            offsets = [TopicPartition(t, p, o) for (t, p), o in sorted(positions.items())]
            with watchdog("send_offsets_to_transaction", TIMEOUT_S):
                producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), TIMEOUT_S)
            if txn == args.hold_at:
                if producer.flush(TIMEOUT_S):
                    raise RuntimeError("records not acknowledged before holding")
                emit(event="holding", txn=txn)
                signal.pause()  # open until SIGKILL
            if args.abort_every and txn % args.abort_every == 0:
                with watchdog("abort_transaction", TIMEOUT_S):
                    producer.abort_transaction(TIMEOUT_S)
                rewind(consumer, sorted(positions))
                emit(event="aborted", txn=txn, why="on purpose")
                continue
            with watchdog("commit_transaction", TIMEOUT_S):
                producer.commit_transaction(TIMEOUT_S)
            emit(event="committed", n=len(messages), txn=txn)
        except KafkaException as exc:
            err = exc.args[0]
            emit(event="error", error=f"{err.name()}: {err.str()}", fatal=err.fatal())
            if err.fatal():
                return
            try:  # whatever failed, nothing of this transaction may count: abort it
                with watchdog("abort_transaction", TIMEOUT_S):
                    producer.abort_transaction(TIMEOUT_S)
            except KafkaException as again:
                emit(event="error", error=f"abort: {again.args[0].str()}", fatal=again.args[0].fatal())
                if again.args[0].fatal():
                    return
            rewind(consumer, sorted({(m.topic(), m.partition()) for m in messages}))
            emit(event="aborted", txn=txn, why=err.name())
    consumer.close()
    producer.flush(TIMEOUT_S)
    emit(event="closed")


def transform_kafka_python(args: argparse.Namespace) -> None:
    """The same loop with kafka-python (TxnOffsetCommit v3 with its group metadata)."""
    from kafka import KafkaConsumer, KafkaProducer, OffsetAndMetadata
    from kafka import TopicPartition as KpTopicPartition
    from kafka.errors import KafkaError as KpKafkaError

    consumer = KafkaConsumer(
        args.input, bootstrap_servers=args.bootstrap, group_id=args.group, client_id=args.transactional_id,
        isolation_level="read_committed", enable_auto_commit=False, auto_offset_reset="earliest",
        session_timeout_ms=6000, heartbeat_interval_ms=500, max_poll_interval_ms=60_000,
        fetch_max_wait_ms=100, max_poll_records=args.batch,
    )
    producer = KafkaProducer(bootstrap_servers=args.bootstrap, transactional_id=args.transactional_id,
                             transaction_timeout_ms=30_000, linger_ms=5, max_block_ms=TIMEOUT_S * 1000)
    producer.init_transactions()
    emit(event="ready")

    def rewind_kp(partitions: list[tuple[str, int]]) -> None:
        for t, p in partitions:
            tp = KpTopicPartition(t, p)
            committed = consumer.committed(tp, timeout_ms=TIMEOUT_S * 1000)
            if committed is None:
                consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, committed)

    txn = 0
    while not stop.is_set():
        messages = [m for batch in consumer.poll(timeout_ms=200).values() for m in batch]
        if not messages:
            continue
        txn += 1
        positions: dict[tuple[str, int], int] = {}
        try:
            producer.begin_transaction()
            for m in messages:
                producer.send(args.output, key=m.key, value=b"%d:%d:" % (m.partition, m.offset) + (m.value or b""))
                positions[(m.topic, m.partition)] = m.offset + 1
            offsets = {KpTopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in positions.items()}
            producer.send_offsets_to_transaction(offsets, consumer.group_metadata())
            if args.abort_every and txn % args.abort_every == 0:
                producer.abort_transaction()
                rewind_kp(sorted(positions))
                emit(event="aborted", txn=txn, why="on purpose")
                continue
            producer.commit_transaction()
            emit(event="committed", n=len(messages), txn=txn)
        except KpKafkaError as exc:
            fatal = "Fenced" in type(exc).__name__
            emit(event="error", error=repr(exc), fatal=fatal)
            if fatal:
                return
            try:
                producer.abort_transaction()
            except KpKafkaError as again:
                emit(event="error", error=f"abort: {again!r}", fatal=True)
                return
            rewind_kp(sorted({(m.topic, m.partition) for m in messages}))
            emit(event="aborted", txn=txn, why=type(exc).__name__)
    consumer.close()
    producer.close(timeout=TIMEOUT_S)
    emit(event="closed")


def _usable(m: Any) -> bool:
    err = m.error()
    if err is None:
        return True
    if err.code() != KafkaError._PARTITION_EOF:
        emit(event="error", error=f"{err.name()}: {err.str()}", fatal=err.fatal())
    return False


def hold_open(args: argparse.Namespace) -> None:
    producer = Producer({
        "bootstrap.servers": args.bootstrap, "transactional.id": args.transactional_id,
        "transaction.timeout.ms": args.timeout_ms, "linger.ms": 0, "log_level": 4,
    })
    producer.init_transactions(TIMEOUT_S)
    emit(event="ready")
    producer.begin_transaction()
    for i in range(args.count):
        producer.produce(args.topic, value=b"open-%d" % i, partition=args.partition)
    if producer.flush(TIMEOUT_S):
        raise RuntimeError("records not acknowledged")
    emit(event="open")
    signal.pause()  # open until SIGKILL


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("transform")
    for name in ("bootstrap", "group", "input", "output", "transactional_id"):
        t.add_argument(name)
    t.add_argument("--hold-at", type=int, default=0)
    t.add_argument("--abort-every", type=int, default=0)
    t.add_argument("--batch", type=int, default=50)
    t.add_argument("--client", choices=("confluent", "kafka-python"), default="confluent")
    h = sub.add_parser("hold-open")
    for name in ("bootstrap", "transactional_id", "topic"):
        h.add_argument(name)
    h.add_argument("partition", type=int)
    h.add_argument("count", type=int)
    h.add_argument("--timeout-ms", type=int, default=3000)
    args = ap.parse_args()
    if os.environ.get("TXN_DEBUG_DIR"):  # librdkafka writes its log to fd 2: keep it whole
        fd = os.open(os.path.join(os.environ["TXN_DEBUG_DIR"], f"{args.transactional_id}.log"),
                     os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(fd, 2)
    threading.Thread(target=watch_stdin, daemon=True).start()
    try:
        if args.command == "hold-open":
            hold_open(args)
        elif args.client == "kafka-python":
            transform_kafka_python(args)
        else:
            transform(args)
    except Exception as exc:
        emit(event="error", error=repr(exc), fatal=True)
        raise


if __name__ == "__main__":
    main()
