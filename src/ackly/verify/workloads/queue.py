"""The queue workload (after Jepsen's Kafka queue): unique values per key, sent and polled back.

Producers send one value per operation to a partition drawn from their seeded generator, and
record the outcome the client reports (clients.py says how outcomes are classified). After an
indeterminate outcome the worker takes a fresh process number, as the history requires.

Consumers alternate between the two ways Kafka hands out partitions: even-numbered workers
`subscribe` (a consumer group: offsets committed to the group, positions restored after a
rebalance), odd ones `assign` every partition themselves and start from the beginning. The
offset commit follows the semantics (settings.py): "before" commits the polled positions and
only then records the poll as processed; "after" records the poll, then commits. A consumer
"crashes" now and then (seeded): it is closed without another offset commit between the
commit and the processing ("before": those records are never processed: the at-most-once
loss) or between the processing and the commit ("after": they come again: duplicates).

`final_read` runs after the faults are healed: one fresh consumer per partition reads from
offset 0 to the high watermark, recorded as polls with extra {"final": true}.
"""

from __future__ import annotations

import queue as queue_module
import threading
from typing import Any

from ackly.verify.clients import (
    ConsumerClient,
    ProducerClient,
    Record,
    SendResult,
    keys_of,
    make_consumer,
    make_producer,
    next_offsets,
)
from ackly.verify.history import Op, poll_mop, send_mop, sent_mop
from ackly.verify.workloads.context import WorkloadContext, now_s, run_worker

CRASH_PROBABILITY = 0.03  # per consumer poll
POLL_TIMEOUT_S = 0.5


def producer_worker(ctx: WorkloadContext, index: int) -> None:
    """One client, `ctx.in_flight` logical processes, each with at most one send outstanding:
    a partition that stalls under a fault holds only the processes that sent to it."""
    rng = ctx.rng(f"producer-{index}")
    producer = make_producer(ctx.client, ctx.bootstrap, ctx.settings.producer, ctx.op_timeout_s,
                         security=ctx.security)
    free = [ctx.recorder.new_process() for _ in range(ctx.in_flight)]
    outstanding: dict[int, tuple[Op, str, int]] = {}  # process -> (invocation, key, value)
    done: queue_module.SimpleQueue[tuple[int, SendResult]] = queue_module.SimpleQueue()
    interval_s = 1.0 / ctx.ops_per_s
    next_send_s = now_s()

    def settle() -> None:
        while True:
            try:
                process, result = done.get_nowait()
            except queue_module.Empty:
                return
            op, key, value = outstanding.pop(process)
            ctx.count(f"send {result.outcome}")
            if result.outcome == "ok":
                ctx.recorder.complete(op, "ok", [sent_mop(key, result.offset, value)])
                free.append(process)
            else:
                ctx.recorder.complete(op, result.outcome, error=result.error)
                # After an indeterminate outcome the process is never reused (history format).
                free.append(ctx.recorder.new_process() if result.outcome == "info" else process)

    try:
        while not ctx.stop.is_set():
            while free and now_s() >= next_send_s and not ctx.stop.is_set():
                process = free.pop(0)
                partition = rng.randrange(ctx.partitions)
                key = ctx.key(partition)
                value = ctx.next_value(key)
                op = ctx.recorder.invoke(process, "send", [send_mop(key, value)],
                                         extra={"producer": f"{index}.{ctx.stats['producer restarts']}"})
                outstanding[process] = (op, key, value)
                producer.send_async(ctx.topic, partition, value,
                                    lambda result, process=process: done.put((process, result)))  # type: ignore[misc]
                next_send_s = max(next_send_s + interval_s, now_s() - 1.0)
            try:
                producer.service(0.005)
            except Exception as exc:  # e.g. confluent-kafka raising the fatal error
                producer.fatal_error = producer.fatal_error or repr(exc)
            settle()
            fatal = producer.fatal_error
            if fatal is not None:
                producer = _replace_failed(ctx, index, producer, fatal, outstanding, free)
        deadline_s = now_s() + ctx.op_timeout_s + 2.0
        while outstanding and now_s() < deadline_s:  # let the client report what it has
            producer.service(0.05)
            settle()
    finally:
        for error in getattr(producer, "client_errors", []):
            ctx.note_error(f"producer-{index}: {error}")
        producer.close()


def _replace_failed(ctx: WorkloadContext, index: int, producer: ProducerClient, fatal: str,
                    outstanding: dict[int, tuple[Op, str, int]], free: list[int]) -> ProducerClient:
    """A client that gave up (librdkafka's fatal errors) reports nothing more: its sends in
    flight are indeterminate, and the worker goes on with a new client and new processes."""
    for op, _key, _value in outstanding.values():
        ctx.recorder.complete(op, "info", error=f"client failed: {fatal}", extra={"client_fatal": True})
        ctx.count("send info")
    # Every process of the failed client is retired: the new client gets fresh ones.
    free[:] = [ctx.recorder.new_process() for _ in range(len(free) + len(outstanding))]
    outstanding.clear()
    ctx.note_error(f"producer-{index}: client failed: {fatal}")
    ctx.count("producer restarts")
    producer.close()
    return make_producer(ctx.client, ctx.bootstrap, ctx.settings.producer, ctx.op_timeout_s,
                         security=ctx.security)


class _Consumer:
    """One consumer worker's client and its process number, recreated after a crash."""

    def __init__(self, ctx: WorkloadContext, index: int) -> None:
        self.ctx = ctx
        self.index = index
        self.subscribe = index % 2 == 0
        self.group = f"verify-{ctx.run_id}" if self.subscribe else f"verify-{ctx.run_id}-assign-{index}"
        self.isolation = ctx.settings.consumer.get("isolation.level", "read_uncommitted")
        self.process = ctx.recorder.new_process()
        self.client: ConsumerClient | None = None

    def open(self) -> ConsumerClient:
        ctx = self.ctx
        client = make_consumer(ctx.client, ctx.bootstrap, self.group, ctx.settings.consumer,
                               security=ctx.security)
        if self.subscribe:
            op = ctx.recorder.invoke(self.process, "subscribe", {"topics": [ctx.topic]})
            client.subscribe([ctx.topic])
        else:
            keys = [ctx.key(p) for p in range(ctx.partitions)]
            op = ctx.recorder.invoke(self.process, "assign", {"keys": keys})
            client.assign([(ctx.topic, p, 0) for p in range(ctx.partitions)])
        ctx.recorder.complete(op, "ok")
        self.client = client
        return client

    def crash(self) -> None:
        if self.client is not None:
            self.client.close()
        self.client = None
        self.process = self.ctx.recorder.new_process()
        self.ctx.count("consumer crash")

    def extra(self, client: ConsumerClient) -> dict[str, Any]:
        return {"isolation": self.isolation, "generation": client.generation,
                "mode": "subscribe" if self.subscribe else "assign"}


def consumer_worker(ctx: WorkloadContext, index: int) -> None:
    rng = ctx.rng(f"consumer-{index}")
    me = _Consumer(ctx, index)
    commit_first = ctx.settings.offset_commit == "before"
    try:
        while not ctx.stop.is_set():
            client = me.client or me.open()
            op = ctx.recorder.invoke(me.process, "poll", [["poll", {}]], extra=me.extra(client))
            try:
                records = client.poll(POLL_TIMEOUT_S)
            except Exception as exc:
                _complete_indeterminate(ctx, me, op, repr(exc))
                continue
            offsets = next_offsets(records)
            crash = bool(records) and rng.random() < CRASH_PROBABILITY
            if commit_first:
                try:
                    client.commit(offsets, ctx.op_timeout_s)
                except Exception as exc:
                    # Not processed: the application saw the commit fail and dropped them.
                    ctx.recorder.complete(op, "fail", error=f"offset commit: {exc!r}")
                    continue
                if crash:  # committed, never processed
                    _complete_indeterminate(ctx, me, op, "crashed after the offset commit")
                    continue
            ctx.recorder.complete(op, "ok", [poll_mop(keys_of(records))], extra=me.extra(client))
            ctx.count("poll ok")
            ctx.count("polled", len(records))
            if not commit_first:
                if crash:  # processed, never committed: they will come again
                    me.crash()
                    continue
                try:
                    client.commit(offsets, ctx.op_timeout_s)
                except Exception as exc:
                    ctx.count("offset commit failed")
                    ctx.note_error(f"offset commit: {exc!r}")
    finally:
        if me.client is not None:
            me.client.close()


def _complete_indeterminate(ctx: WorkloadContext, me: _Consumer, op: Op, error: str) -> None:
    ctx.recorder.complete(op, "info", error=error)
    ctx.count("poll info")
    me.crash()


def start(ctx: WorkloadContext, producers: int, consumers: int) -> list[threading.Thread]:
    threads = [run_worker(f"producer-{i}", lambda i=i: producer_worker(ctx, i), ctx)  # type: ignore[misc]
               for i in range(producers)]
    threads += [run_worker(f"consumer-{i}", lambda i=i: consumer_worker(ctx, i), ctx)  # type: ignore[misc]
                for i in range(consumers)]
    return threads


def final_read(ctx: WorkloadContext, timeout_s: float) -> dict[int, tuple[int, int]]:
    """Read every partition from offset 0 to its high watermark; returns partition ->
    (records read, high watermark).

    Each partition is one poll op of a fresh process (extra {"final": true}); a read that does
    not reach the high watermark in `timeout_s` is completed "info" with what it got in extra.
    """
    got: dict[int, tuple[int, int]] = {}
    for partition in range(ctx.partitions):
        key = ctx.key(partition)
        process = ctx.recorder.new_process()
        client = make_consumer(ctx.client, ctx.bootstrap, f"verify-{ctx.run_id}-final",
                               ctx.settings.consumer, security=ctx.security)
        try:
            op = ctx.recorder.invoke(process, "assign", {"keys": [key]}, extra={"final": True})
            client.assign([(ctx.topic, partition, 0)])
            ctx.recorder.complete(op, "ok")
            extra: dict[str, Any] = {"final": True, "isolation": ctx.settings.consumer.get(
                "isolation.level", "read_uncommitted")}
            op = ctx.recorder.invoke(process, "poll", [["poll", {}]], extra=extra)
            deadline_s = now_s() + timeout_s
            try:
                _, high = client.watermarks(ctx.topic, partition, min(10.0, timeout_s))
            except Exception as exc:
                ctx.recorder.complete(op, "info", error=f"high watermark: {exc!r}")
                continue
            records: list[Record] = []
            position, empty_polls = 0, 0
            committed_only = extra["isolation"] == "read_committed"
            while position < high and now_s() < deadline_s:
                batch = [r for r in client.poll(POLL_TIMEOUT_S) if r.partition == partition and r.offset >= position]
                records += batch
                position = batch[-1].offset + 1 if batch else position
                empty_polls = 0 if batch else empty_polls + 1
                # read_committed never returns the control batches (or aborted records) that
                # may fill the offsets up to the high watermark: quiet for a while means done.
                if committed_only and empty_polls >= 4:
                    break
            got[partition] = (len(records), high)
            done = {**extra, "high_watermark": high, "position": position}
            if position >= high or (committed_only and empty_polls >= 4):
                ctx.recorder.complete(op, "ok", [poll_mop(keys_of(records))], extra=done)
            else:
                ctx.recorder.complete(op, "info", error="final read did not reach the high watermark",
                                      extra=done)
        finally:
            client.close()
    return got
