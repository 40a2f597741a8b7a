"""The Kafka clients a verify run drives, behind one small synchronous interface.

confluent-kafka (librdkafka) is the default; kafka-python and aiokafka are selectable. Every
call is bounded by a timeout. A record's value is the decimal text of the workload's integer
`v`; records whose value is not such an integer (someone else's data) are skipped on read.

How a send's outcome is classified (docs/guarantees.md s.8): "ok" when the client reports the write
acknowledged; "fail" only when the write cannot have happened (refused before any request left,
or refused by the broker before the append with no earlier attempt that might have landed:
retries off); "info" otherwise (a timeout, a lost connection, NOT_ENOUGH_REPLICAS_AFTER_APPEND,
any error after retries). acks=0 sends are "ok" once handed to the socket, offset unknown.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from ackly.librdkafka_log import quiet

Outcome = Literal["ok", "fail", "info"]
CLIENTS: tuple[str, ...] = ("confluent", "kafka-python", "aiokafka")
# librdkafka logs every lost connection at level 6; under faults that is the point, not news.
# What it does log goes to the `ackly.librdkafka` logger (ackly.librdkafka_log), not stderr.
LIBRDKAFKA_LOG_LEVEL = 3

# Refusals that happen before the broker appends anything (produce handler order, rules 8, 14).
DEFINITE_BROKER_ERRORS = frozenset(
    {
        "NOT_LEADER_OR_FOLLOWER",
        "NOT_LEADER_FOR_PARTITION",
        "NOT_ENOUGH_REPLICAS",
        "UNKNOWN_TOPIC_OR_PARTITION",
        "MESSAGE_TOO_LARGE",
        "MSG_SIZE_TOO_LARGE",
        "CORRUPT_MESSAGE",
        "INVALID_REQUIRED_ACKS",
        "TOPIC_AUTHORIZATION_FAILED",
        "FENCED_LEADER_EPOCH",
    }
)


@dataclass(frozen=True)
class SendResult:
    outcome: Outcome
    offset: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    value: int


class UnsupportedByClient(Exception):
    """The selected client cannot do what the workload asks (e.g. transactions)."""


Done = Callable[[SendResult], None]


class ProducerClient(Protocol):
    fatal_error: str | None  # set once the client has given up for good

    # Hand the send to the client and return; `done` is called exactly once, on any thread
    # (confluent-kafka: inside `service`), within the client's delivery timeout.
    def send_async(self, topic: str, partition: int, value: int, done: Done) -> None: ...
    def service(self, timeout_s: float) -> None: ...
    def init_transactions(self, timeout_s: float) -> None: ...
    def begin_transaction(self) -> None: ...
    def send_in_transaction(self, topic: str, partition: int, value: int) -> None: ...
    def send_offsets_to_transaction(
        self, offsets: Mapping[tuple[str, int], int], consumer: ConsumerClient, timeout_s: float
    ) -> None: ...
    def commit_transaction(self, timeout_s: float) -> None: ...
    def abort_transaction(self, timeout_s: float) -> None: ...
    def close(self) -> None: ...


class ConsumerClient(Protocol):
    def assign(self, positions: Sequence[tuple[str, int, int]]) -> None: ...
    def subscribe(self, topics: Sequence[str]) -> None: ...
    def poll(self, timeout_s: float) -> list[Record]: ...
    def commit(self, offsets: Mapping[tuple[str, int], int], timeout_s: float) -> None: ...
    def watermarks(self, topic: str, partition: int, timeout_s: float) -> tuple[int, int]: ...
    def close(self) -> None: ...

    # How many times the group has assigned or revoked partitions (a rebalance may move the
    # position back to the last offset commit: the history marks that as a new read segment).
    generation: int


def _value(raw: bytes | None) -> int | None:
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        return None


def _records(batches: Mapping[Any, Iterable[Any]]) -> list[Record]:
    """The records of a kafka-python or aiokafka poll ({TopicPartition: [ConsumerRecord]}),
    leaving out values that are not the workload's integers."""
    out: list[Record] = []
    for tp, msgs in batches.items():
        for m in msgs:
            v = _value(m.value)
            if v is not None:
                out.append(Record(tp.topic, tp.partition, m.offset, v))
    return out


def _generation_listener(base: type, owner: ConsumerClient) -> Any:
    """A ConsumerRebalanceListener (of kafka-python or aiokafka: `base`) that counts every
    revocation and assignment in `owner.generation`."""

    class Listener(base):  # type: ignore[valid-type,misc]
        def on_partitions_revoked(self, revoked: Any) -> None:
            owner.generation += 1

        def on_partitions_assigned(self, assigned: Any) -> None:
            owner.generation += 1

    return Listener()


def _encode(value: int) -> bytes:
    return str(value).encode()


def classify_error(name: str, retries_off: bool) -> Outcome:
    """An error reported for a send: "fail" only when it proves nothing was written."""
    clean = name.upper().lstrip("_")
    if retries_off and clean in DEFINITE_BROKER_ERRORS:
        return "fail"
    if clean in ("UNKNOWN_TOPIC", "UNKNOWN_PARTITION", "QUEUE_FULL", "INVALID_ARG"):
        return "fail"  # librdkafka's local refusals: never sent
    return "info"


# --- confluent-kafka ------------------------------------------------------------------------


class ConfluentProducer:
    def __init__(
        self, bootstrap: str, settings: Mapping[str, str], timeout_s: float, transactional_id: str | None = None
    ) -> None:
        from confluent_kafka import Producer

        conf: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "linger.ms": 0,
            "message.timeout.ms": int(timeout_s * 1000),
            "request.timeout.ms": max(1000, int(timeout_s * 1000) // 2),
            "socket.timeout.ms": max(1000, int(timeout_s * 1000) // 2),
            "topic.metadata.refresh.interval.ms": 1000,
            "retry.backoff.ms": 100,
            "reconnect.backoff.max.ms": 500, "log_level": LIBRDKAFKA_LOG_LEVEL, "log.connection.close": False,
        }
        conf.update(settings)
        if transactional_id is not None:
            conf["transactional.id"] = transactional_id
            conf["transaction.timeout.ms"] = max(10_000, int(timeout_s * 2000))
        self.retries_off = str(conf.get("retries", "1")) == "0"
        self.client_errors: list[str] = []  # what librdkafka reported outside any delivery
        self.fatal_error: str | None = None  # set once the client gave up (it then sends nothing)
        conf["error_cb"] = self._client_error
        self._producer = Producer(quiet(conf))

    def _client_error(self, err: Any) -> None:
        if len(self.client_errors) < 20:
            fatal = " (fatal)" if err.fatal() else ""
            self.client_errors.append(f"{err.name()}{fatal}: {err.str()}")
        if err.fatal() and self.fatal_error is None:
            self.fatal_error = f"{err.name()}: {err.str()}"

    def send_async(self, topic: str, partition: int, value: int, done: Done) -> None:
        from confluent_kafka import KafkaException

        def delivered(err: Any, msg: Any) -> None:
            if err is None:
                offset = msg.offset()
                done(SendResult("ok", offset if offset is not None and offset >= 0 else None))
            else:
                done(SendResult(classify_error(err.name(), self.retries_off), None, err.name()))

        try:
            self._producer.produce(topic, _encode(value), partition=partition, on_delivery=delivered)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if error is not None and hasattr(error, "fatal") and error.fatal():
                self.fatal_error = self.fatal_error or f"{error.name()}: {error.str()}"
            done(SendResult("fail", None, repr(exc)))
        except BufferError as exc:
            done(SendResult("fail", None, repr(exc)))

    def service(self, timeout_s: float) -> None:
        self._producer.poll(timeout_s)

    def init_transactions(self, timeout_s: float) -> None:
        self._producer.init_transactions(timeout_s)

    def begin_transaction(self) -> None:
        self._producer.begin_transaction()

    def send_in_transaction(self, topic: str, partition: int, value: int) -> None:
        self._producer.produce(topic, _encode(value), partition=partition)

    def send_offsets_to_transaction(
        self, offsets: Mapping[tuple[str, int], int], consumer: ConsumerClient, timeout_s: float
    ) -> None:
        from confluent_kafka import TopicPartition

        assert isinstance(consumer, ConfluentConsumer)
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        self._producer.send_offsets_to_transaction(tps, consumer.group_metadata(), timeout_s)

    def commit_transaction(self, timeout_s: float) -> None:
        self._producer.commit_transaction(timeout_s)

    def abort_transaction(self, timeout_s: float) -> None:
        self._producer.abort_transaction(timeout_s)

    def close(self) -> None:
        # Whatever is still queued or in flight is indeterminate to the history already (the
        # runner completes those ops as info); drop it and destroy the client now rather than
        # at garbage collection, so no client of a finished run keeps reconnecting.
        with contextlib.suppress(Exception):
            self._producer.purge()
        with contextlib.suppress(Exception):
            self._producer.flush(1.0)
        with contextlib.suppress(Exception):
            self._producer.close()


class ConfluentConsumer:
    def __init__(self, bootstrap: str, group_id: str, settings: Mapping[str, str]) -> None:
        from confluent_kafka import Consumer

        conf: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "group.id": group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
            "topic.metadata.refresh.interval.ms": 1000,
            "fetch.wait.max.ms": 100,
            "socket.timeout.ms": 5000,
            "reconnect.backoff.max.ms": 500,
            "log_level": LIBRDKAFKA_LOG_LEVEL,
            "log.connection.close": False,
        }
        if settings.get("group.protocol") == "consumer":
            # KIP-848: the broker sets the session and heartbeat timing (group.consumer.*);
            # librdkafka refuses these two in that mode.
            del conf["session.timeout.ms"], conf["heartbeat.interval.ms"]
        conf.update(settings)
        self._consumer = Consumer(quiet(conf))
        self.generation = 0

    def _rebalanced(self, _consumer: Any, _partitions: Any) -> None:
        self.generation += 1

    def group_metadata(self) -> Any:
        return self._consumer.consumer_group_metadata()

    def assign(self, positions: Sequence[tuple[str, int, int]]) -> None:
        from confluent_kafka import TopicPartition

        self._consumer.assign([TopicPartition(t, p, o) for t, p, o in positions])

    def subscribe(self, topics: Sequence[str]) -> None:
        self._consumer.subscribe(list(topics), on_assign=self._rebalanced, on_revoke=self._rebalanced,
                                 on_lost=self._rebalanced)

    def poll(self, timeout_s: float) -> list[Record]:
        out: list[Record] = []
        for msg in self._consumer.consume(num_messages=500, timeout=timeout_s):
            if msg.error():
                continue
            v = _value(msg.value())
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            if v is not None and topic is not None and partition is not None and offset is not None:
                out.append(Record(topic, partition, offset, v))
        return out

    def commit(self, offsets: Mapping[tuple[str, int], int], timeout_s: float) -> None:
        from confluent_kafka import TopicPartition

        if offsets:
            self._consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False
            )

    def watermarks(self, topic: str, partition: int, timeout_s: float) -> tuple[int, int]:
        from confluent_kafka import TopicPartition

        low, high = self._consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
        return int(low), int(high)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._consumer.close()


class _NoTransactions:
    """Producers the transactional workload does not drive."""

    def _refuse(self) -> None:
        raise UnsupportedByClient("the transactional workload runs on confluent-kafka only")

    def init_transactions(self, timeout_s: float) -> None:
        self._refuse()

    def begin_transaction(self) -> None:
        self._refuse()

    def send_in_transaction(self, topic: str, partition: int, value: int) -> None:
        self._refuse()

    def send_offsets_to_transaction(
        self, offsets: Mapping[tuple[str, int], int], consumer: ConsumerClient, timeout_s: float
    ) -> None:
        self._refuse()

    def commit_transaction(self, timeout_s: float) -> None:
        self._refuse()

    def abort_transaction(self, timeout_s: float) -> None:
        self._refuse()


# --- kafka-python -----------------------------------------------------------------------------


def _python_producer_args(settings: Mapping[str, str]) -> dict[str, Any]:
    """librdkafka property names -> kafka-python keyword arguments (those the workloads set)."""
    args: dict[str, Any] = {}
    acks = settings.get("acks", "all")
    args["acks"] = "all" if acks in ("all", "-1") else int(acks)
    if "retries" in settings:
        args["retries"] = int(settings["retries"])
    if "enable.idempotence" in settings:
        args["enable_idempotence"] = settings["enable.idempotence"].lower() == "true"
    if "max.in.flight.requests.per.connection" in settings:
        args["max_in_flight_requests_per_connection"] = int(settings["max.in.flight.requests.per.connection"])
    return args


def _python_consumer_args(group_id: str, settings: Mapping[str, str]) -> dict[str, Any]:
    """The keyword arguments kafka-python's and aiokafka's consumers are made with alike (no
    auto commit: the workloads commit; the run's isolation level)."""
    return {
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 500,
        "fetch_max_wait_ms": 100,
        "metadata_max_age_ms": 1000,
        "isolation_level": settings.get("isolation.level", "read_uncommitted"),
    }


class KafkaPythonProducer(_NoTransactions):
    def __init__(self, bootstrap: str, settings: Mapping[str, str], timeout_s: float) -> None:
        from kafka import KafkaProducer

        args = _python_producer_args(settings)
        self.retries_off = args.get("retries", 1) == 0
        self.fatal_error: str | None = None
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap.split(","),
            linger_ms=0,
            request_timeout_ms=max(1000, int(timeout_s * 500)),
            max_block_ms=int(timeout_s * 1000),
            metadata_max_age_ms=1000,
            reconnect_backoff_max_ms=500,
            **args,
        )

    def send_async(self, topic: str, partition: int, value: int, done: Done) -> None:
        from kafka.errors import KafkaError, KafkaTimeoutError

        def ok(meta: Any) -> None:
            offset = int(meta.offset)
            done(SendResult("ok", offset if offset >= 0 else None))

        def failed(exc: Any) -> None:
            if isinstance(exc, KafkaTimeoutError) or not isinstance(exc, KafkaError):
                done(SendResult("info", None, type(exc).__name__))
            else:
                name = str(getattr(exc, "message", type(exc).__name__))
                done(SendResult(classify_error(name, self.retries_off), None, name))

        try:
            future = self._producer.send(topic, value=_encode(value), partition=partition)
        except Exception as exc:
            done(SendResult("fail", None, repr(exc)))
            return
        future.add_callback(ok)
        future.add_errback(failed)

    def service(self, timeout_s: float) -> None:
        threading.Event().wait(timeout_s)  # callbacks come from the client's own I/O thread

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._producer.close(timeout=2)


class KafkaPythonConsumer:
    def __init__(self, bootstrap: str, group_id: str, settings: Mapping[str, str]) -> None:
        from kafka import KafkaConsumer

        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap.split(","),
            request_timeout_ms=10_000,
            **_python_consumer_args(group_id, settings),
        )
        self.generation = 0

    def assign(self, positions: Sequence[tuple[str, int, int]]) -> None:
        from kafka import TopicPartition

        self._consumer.assign([TopicPartition(t, p) for t, p, _ in positions])
        for t, p, o in positions:
            self._consumer.seek(TopicPartition(t, p), o)

    def subscribe(self, topics: Sequence[str]) -> None:
        from kafka import ConsumerRebalanceListener

        self._consumer.subscribe(list(topics), listener=_generation_listener(ConsumerRebalanceListener, self))

    def poll(self, timeout_s: float) -> list[Record]:
        return _records(self._consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=500))

    def commit(self, offsets: Mapping[tuple[str, int], int], timeout_s: float) -> None:
        from kafka import OffsetAndMetadata, TopicPartition

        if offsets:
            self._consumer.commit({TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()})

    def watermarks(self, topic: str, partition: int, timeout_s: float) -> tuple[int, int]:
        from kafka import TopicPartition

        tp = TopicPartition(topic, partition)
        low = self._consumer.beginning_offsets([tp], timeout_ms=int(timeout_s * 1000))[tp]
        high = self._consumer.end_offsets([tp], timeout_ms=int(timeout_s * 1000))[tp]
        return int(low), int(high)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._consumer.close(autocommit=False)


# --- aiokafka (each client owns a private event loop, driven from its worker thread) -------------


class _LoopOwner:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def run(self, coro: Any, timeout_s: float) -> Any:
        try:
            return self.loop.run_until_complete(asyncio.wait_for(coro, timeout_s))
        except asyncio.CancelledError as exc:  # aiokafka cancels its own tasks on errors and stop
            raise RuntimeError(f"aiokafka call cancelled: {exc!r}") from None

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run a synchronous client method on the loop (aiokafka wants a running loop)."""

        async def inside() -> Any:
            return fn()

        return self.run(inside(), 30)

    def close_loop(self) -> None:
        with contextlib.suppress(Exception):
            self.loop.close()


class AioProducer(_LoopOwner, _NoTransactions):
    def __init__(self, bootstrap: str, settings: Mapping[str, str], timeout_s: float) -> None:
        from aiokafka import AIOKafkaProducer

        super().__init__()
        self.timeout_s = timeout_s
        self.fatal_error: str | None = None
        args = _python_producer_args(settings)
        self.retries_off = args.pop("retries", 1) == 0
        args.pop("max_in_flight_requests_per_connection", None)

        async def make() -> Any:
            producer = AIOKafkaProducer(
                bootstrap_servers=bootstrap,
                linger_ms=0,
                request_timeout_ms=max(1000, int(timeout_s * 1000)),
                metadata_max_age_ms=1000,
                **args,
            )
            await producer.start()
            return producer

        self._producer = self.run(make(), 30)

    def send(self, topic: str, partition: int, value: int, timeout_s: float) -> SendResult:
        from aiokafka.errors import KafkaError

        try:
            meta = self.run(self._producer.send_and_wait(topic, _encode(value), partition=partition), timeout_s)
        except TimeoutError:
            return SendResult("info", None, "TimeoutError")
        except KafkaError as exc:
            name = str(getattr(exc, "message", None) or type(exc).__name__)
            return SendResult(classify_error(name, self.retries_off), None, name)
        offset = int(meta.offset)
        return SendResult("ok", offset if offset >= 0 else None)

    def send_async(self, topic: str, partition: int, value: int, done: Done) -> None:
        # One loop per client, driven from its worker thread: one send at a time.
        done(self.send(topic, partition, value, self.timeout_s))

    def service(self, timeout_s: float) -> None:
        return None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.run(self._producer.stop(), 5)
        self.close_loop()


class AioConsumer(_LoopOwner):
    def __init__(self, bootstrap: str, group_id: str, settings: Mapping[str, str]) -> None:
        from aiokafka import AIOKafkaConsumer

        super().__init__()

        async def make() -> Any:
            consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, **_python_consumer_args(group_id, settings))
            await consumer.start()
            return consumer

        self._consumer = self.run(make(), 30)
        self.generation = 0

    def assign(self, positions: Sequence[tuple[str, int, int]]) -> None:
        from aiokafka import TopicPartition

        def assign() -> None:
            self._consumer.assign([TopicPartition(t, p) for t, p, _ in positions])
            for t, p, o in positions:
                self._consumer.seek(TopicPartition(t, p), o)

        self.call(assign)

    def subscribe(self, topics: Sequence[str]) -> None:
        from aiokafka import ConsumerRebalanceListener

        listener = _generation_listener(ConsumerRebalanceListener, self)
        self.call(lambda: self._consumer.subscribe(list(topics), listener=listener))

    def poll(self, timeout_s: float) -> list[Record]:
        batches = self.run(self._consumer.getmany(timeout_ms=int(timeout_s * 1000), max_records=500), timeout_s + 10)
        return _records(batches)

    def commit(self, offsets: Mapping[tuple[str, int], int], timeout_s: float) -> None:
        from aiokafka import TopicPartition

        if offsets:
            self.run(self._consumer.commit({TopicPartition(t, p): o for (t, p), o in offsets.items()}), timeout_s)

    def watermarks(self, topic: str, partition: int, timeout_s: float) -> tuple[int, int]:
        from aiokafka import TopicPartition

        tp = TopicPartition(topic, partition)
        low = self.run(self._consumer.beginning_offsets([tp]), timeout_s)[tp]
        high = self.run(self._consumer.end_offsets([tp]), timeout_s)[tp]
        return int(low), int(high)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.run(self._consumer.stop(), 5)
        self.close_loop()


# --- factories ------------------------------------------------------------------------------------


def _refuse_security(client: str, security: Mapping[str, str] | None) -> None:
    if security:
        raise UnsupportedByClient(f"a secured cluster is driven with confluent-kafka only, not {client}")


def make_producer(
    client: str, bootstrap: str, settings: Mapping[str, str], timeout_s: float, transactional_id: str | None = None,
    *, security: Mapping[str, str] | None = None,
) -> ProducerClient:
    """`security`: librdkafka's security.protocol, sasl.* and ssl.* settings (verify/security.py)."""
    if client == "confluent":
        return ConfluentProducer(bootstrap, {**(security or {}), **settings}, timeout_s, transactional_id)
    _refuse_security(client, security)
    if transactional_id is not None:
        raise UnsupportedByClient(f"transactions are driven with confluent-kafka only, not {client}")
    if client == "kafka-python":
        return KafkaPythonProducer(bootstrap, settings, timeout_s)
    if client == "aiokafka":
        return AioProducer(bootstrap, settings, timeout_s)
    raise ValueError(f"unknown client {client!r}; one of {', '.join(CLIENTS)}")


def make_consumer(client: str, bootstrap: str, group_id: str, settings: Mapping[str, str],
                  *, security: Mapping[str, str] | None = None) -> ConsumerClient:
    if client == "confluent":
        return ConfluentConsumer(bootstrap, group_id, {**(security or {}), **settings})
    _refuse_security(client, security)
    if client == "kafka-python":
        return KafkaPythonConsumer(bootstrap, group_id, settings)
    if client == "aiokafka":
        return AioConsumer(bootstrap, group_id, settings)
    raise ValueError(f"unknown client {client!r}; one of {', '.join(CLIENTS)}")


def keys_of(records: Iterable[Record]) -> dict[str, list[tuple[int, int]]]:
    """Records as the history's poll micro-operation wants them: key -> [(offset, v), ...]."""
    out: dict[str, list[tuple[int, int]]] = {}
    for r in records:
        out.setdefault(f"{r.topic}/{r.partition}", []).append((r.offset, r.value))
    return out


def next_offsets(records: Iterable[Record]) -> dict[tuple[str, int], int]:
    """The offsets to commit after `records`: (topic, partition) -> one past the last read."""
    out: dict[tuple[str, int], int] = {}
    for r in records:
        out[(r.topic, r.partition)] = max(out.get((r.topic, r.partition), 0), r.offset + 1)
    return out
