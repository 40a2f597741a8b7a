"""The transactional workload (exactly-once, KIP-98 / KIP-447): one "txn" op per transaction.

Each worker owns a transactional producer (`transactional.id` verify-<run>-txn-<i>) and a
read_committed consumer in the run's group. One operation:
1. poll the topic (consume),
2. begin a transaction, send 1-3 new values to partitions drawn from the worker's generator
   (multi-partition sends: transform-and-produce),
3. send the consumed positions with the transaction (send_offsets_to_transaction),
4. commit the transaction; now and then (seeded) abort it instead.
The op's value lists the polled records and the sends: "ok" once the transaction commit
returns, "fail" when the transaction was aborted, "info" when the commit's outcome is unknown
(then the producer is rebuilt, which fences the old epoch, and the process is renewed).

`probe` checks, before the run, that the broker takes a transactional InitProducerId at all.
"""

from __future__ import annotations

import threading
from typing import Any

from ackly.verify.clients import ProducerClient, keys_of, make_consumer, make_producer, next_offsets
from ackly.verify.history import poll_mop, send_mop, sent_mop
from ackly.verify.workloads.context import WorkloadContext, run_worker

ABORT_PROBABILITY = 0.1
POLL_TIMEOUT_S = 0.05  # the consume step must not pace the transactions


def probe(ctx: WorkloadContext) -> str | None:
    """None if a transactional producer can start against the cluster, else why not."""
    try:
        producer = make_producer(ctx.client, ctx.bootstrap, ctx.settings.producer, ctx.op_timeout_s,
                                 transactional_id=f"verify-{ctx.run_id}-probe", security=ctx.security)
    except Exception as exc:
        return f"cannot build a transactional producer: {exc}"
    try:
        producer.init_transactions(min(10.0, ctx.op_timeout_s * 2))
    except Exception as exc:
        return f"InitProducerId with a transactional id failed: {exc}"
    finally:
        producer.close()
    return None


def _new_producer(ctx: WorkloadContext, index: int) -> ProducerClient:
    producer = make_producer(ctx.client, ctx.bootstrap, ctx.settings.producer, ctx.op_timeout_s,
                             transactional_id=f"verify-{ctx.run_id}-txn-{index}", security=ctx.security)
    try:
        producer.init_transactions(ctx.op_timeout_s * 2)
    except BaseException:
        producer.close()  # a client left behind would keep reconnecting, and logging it
        raise
    return producer


def txn_worker(ctx: WorkloadContext, index: int) -> None:
    rng = ctx.rng(f"txn-{index}")
    process = ctx.recorder.new_process()
    consumer = make_consumer(ctx.client, ctx.bootstrap, f"verify-{ctx.run_id}", ctx.settings.consumer,
                             security=ctx.security)
    consumer.subscribe([ctx.topic])
    op = ctx.recorder.invoke(process, "subscribe", {"topics": [ctx.topic]})
    ctx.recorder.complete(op, "ok")
    try:
        producer = _new_producer(ctx, index)
    except BaseException:
        consumer.close()
        raise
    instance = 0  # rises with every new producer for this transactional id (it fences the last)
    interval_s = 1.0 / ctx.ops_per_s
    try:
        while not ctx.stop.is_set():
            records = consumer.poll(POLL_TIMEOUT_S)
            # The generation after the poll: a rebalance inside it (its callbacks run there)
            # is what positioned these records, so the checker must see it with them.
            extra: dict[str, Any] = {"isolation": "read_committed", "generation": consumer.generation,
                                     "transactional_id": f"verify-{ctx.run_id}-txn-{index}",
                                     "instance": instance, "producer": f"txn-{index}.{instance}"}
            sends = []
            for _ in range(rng.randint(1, 3)):
                partition = rng.randrange(ctx.partitions)
                key = ctx.key(partition)
                sends.append((partition, key, ctx.next_value(key)))
            mops: list[Any] = [poll_mop(keys_of(records))] if records else []
            op = ctx.recorder.invoke(process, "txn", mops + [send_mop(k, v) for _, k, v in sends], extra=extra)
            abort = rng.random() < ABORT_PROBABILITY
            try:
                producer.begin_transaction()
                for partition, _, value in sends:
                    producer.send_in_transaction(ctx.topic, partition, value)
                offsets = next_offsets(records)
                if offsets:
                    producer.send_offsets_to_transaction(offsets, consumer, ctx.op_timeout_s)
                if abort:
                    producer.abort_transaction(ctx.op_timeout_s)
                    ctx.recorder.complete(op, "fail", error="aborted by the workload")
                    ctx.count("txn aborted")
                else:
                    commit_invoke_ms = ctx.recorder.now_ms()
                    producer.commit_transaction(ctx.op_timeout_s)
                    done = mops + [sent_mop(k, None, v) for _, k, v in sends]
                    ctx.recorder.complete(op, "ok", done, extra={**extra, "commit_invoke_ms": commit_invoke_ms})
                    ctx.count("txn ok")
            except Exception as exc:
                ctx.recorder.complete(op, "info", error=repr(exc))
                ctx.count("txn info")
                process = ctx.recorder.new_process()
                producer.close()
                instance += 1
                try:
                    producer = _new_producer(ctx, index)
                except Exception as again:
                    ctx.note_error(f"txn worker {index}: {again!r}")
                    ctx.stop.wait(1.0)
                    producer = _new_producer(ctx, index)
            ctx.stop.wait(interval_s)
    finally:
        producer.close()
        consumer.close()


def start(ctx: WorkloadContext, workers: int, readers: int) -> list[threading.Thread]:
    """`workers` transactional workers, plus `readers` read_committed queue consumers."""
    from ackly.verify.workloads.queue import consumer_worker

    threads = [run_worker(f"txn-{i}", lambda i=i: txn_worker(ctx, i), ctx)  # type: ignore[misc]
               for i in range(workers)]
    threads += [run_worker(f"consumer-{i}", lambda i=i: consumer_worker(ctx, i), ctx)  # type: ignore[misc]
                for i in range(1, 1 + 2 * readers, 2)]  # odd: assign mode (the group is the workers')
    return threads
