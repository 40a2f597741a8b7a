"""Simulated transactional clients: a transactional producer and read_committed consumers, and
the history of every transaction and every read_committed read.

Owns: `TransactionalProducer` (KIP-98 as a client runs it: FindCoordinator key type 1,
InitProducerId with a transactional id, then transactions of AddPartitionsToTxn, transactional
Produce and EndTxn), `IsolatedConsumer` (Fetch with isolation_level read_committed, dropping
aborted transactions' batches as Kafka's consumer does, CompletedFetch with its aborted-producer
set), and `TxnHistory`: each transaction's batches and its outcome.

A transaction's outcome is what the producer learnt:
  "committed"  EndTxn(commit) was answered NONE;
  "aborted"    EndTxn(abort) was answered NONE, or the transaction can no longer commit: its
               producer never sent EndTxn(commit) (it crashed, was fenced, or hit an abortable
               error), or a commit was refused with every earlier attempt answered;
  "unknown"    EndTxn(commit) was sent, an answer was lost, and the retries never settled it;
  "open"       still in progress (only while the run goes on).

The producer's error handling follows Kafka's TransactionManager: retriable codes
(NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE, COORDINATOR_LOAD_IN_PROGRESS, a lost answer) look
the coordinator up again and resend; CONCURRENT_TRANSACTIONS resends after a short backoff;
PRODUCER_FENCED (or INVALID_PRODUCER_EPOCH) ends the instance: a new one re-initialises with
no producer id (which fences and aborts whatever the old one left open); an abortable produce
error aborts the transaction and then bumps the epoch (KIP-360: InitProducerId with the current
id and epoch). A producer may also crash in the middle of a transaction: it sends nothing more,
and either a new instance takes its transactional id later or the coordinator's transaction
timeout has to abort what it left open.

INVALID_TXN_STATE to a produce or an EndTxn of a transaction whose partitions were
acknowledged, in an epoch nobody fenced, means the coordinator lost committed state: a
`ClientViolation` at once. Any other code the producer has no rule for is kept in
`TxnHistory.surprises` (a problem at the end) and recovered from by re-initialising.

Transaction version 2 (`transaction_version=2`, KIP-890 part 2, as Kafka 4's producer runs
it): no AddPartitionsToTxn (Produce v12 adds each partition), EndTxn v5, whose answer gives
the producer id and epoch of the next transaction (the epoch is bumped at every end, so
sequences start again at 0). With `delayed_end_rate`, after a transaction ends its EndTxn is
sometimes kept and sent once more after the next transaction's first batch was acknowledged:
a delayed copy of the network's. The coordinator must fence it (PRODUCER_FENCED); any other
answer but a coordinator move is a `ClientViolation` at once, and the final logs show whether
it ended the next transaction (txn_invariants.py: one producer epoch per transaction, outcomes
as told).

Invariants: a transaction's values are unique in the run and sent under one (producer id,
epoch) only; a producer has at most one request in flight; read_committed reads are checked
as they arrive (no record at or above the response's LSO, none of a transaction whose commit
was not yet sent or that is known aborted).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from ackly.errors import ErrorCode
from ackly.protocol.record_codec import ControlType, Record, decode_batches, decode_control_record, encode_batch
from ackly.sim import frames
from ackly.sim.clients import PRODUCE, PRODUCE_VERSION, ClientEnv, ClientViolation, Consumer, _Client
from ackly.types import TopicPartition

FIND_COORDINATOR, INIT_PRODUCER_ID, ADD_PARTITIONS_TO_TXN, END_TXN = 10, 22, 24, 26
FIND_COORDINATOR_VERSION, INIT_PRODUCER_ID_VERSION, ADD_PARTITIONS_VERSION, END_TXN_VERSION = 3, 4, 3, 3
# Transaction version 2: the versions that say so (KIP-890 part 2).
TV2_PRODUCE_VERSION, TV2_END_TXN_VERSION = 12, 5
TRANSACTION_KEY_TYPE = 1
READ_COMMITTED = 1
# Kafka's producer retries AddPartitionsToTxn after CONCURRENT_TRANSACTIONS quickly (20 ms).
CONCURRENT_BACKOFF_MS = 20

OPEN, COMMITTED, ABORTED, UNKNOWN = "open", "committed", "aborted", "unknown"

# Look the coordinator up again and resend.
COORDINATOR_MOVED = frozenset({
    ErrorCode.not_coordinator, ErrorCode.coordinator_not_available, ErrorCode.coordinator_load_in_progress,
})
FENCED = frozenset({ErrorCode.producer_fenced, ErrorCode.invalid_producer_epoch})
# A transactional batch that may go again with the same sequence (the partition's producer
# state recognises a duplicate).
PRODUCE_RETRIABLE = frozenset({
    ErrorCode.not_leader_or_follower, ErrorCode.unknown_topic_or_partition, ErrorCode.not_enough_replicas,
    ErrorCode.not_enough_replicas_after_append, ErrorCode.request_timed_out, ErrorCode.kafka_storage_error,
    ErrorCode.fenced_leader_epoch, ErrorCode.unknown_leader_epoch, ErrorCode.concurrent_transactions,
    *COORDINATOR_MOVED,
})


def code_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return str(code)


@dataclass
class TxnBatch:
    tp: TopicPartition
    values: tuple[bytes, ...]
    sequence: int
    attempts: list[str] = field(default_factory=list)
    offset: int | None = None


@dataclass
class Txn:
    txn_id: int
    producer: str
    transactional_id: str
    producer_id: int
    producer_epoch: int
    partitions: tuple[int, ...]
    commit: bool  # the outcome the producer means to ask for
    batches: list[TxnBatch] = field(default_factory=list)
    outcome: str = OPEN
    how: str = ""  # how the outcome was reached
    commit_sent_ms: int | None = None  # first EndTxn(commit) sent
    abort_sent_ms: int | None = None  # first EndTxn(abort) sent
    end_attempts: list[str] = field(default_factory=list)

    def values(self) -> list[tuple[TopicPartition, bytes]]:
        return [(b.tp, v) for b in self.batches for v in b.values]


@dataclass
class TxnHistory:
    txns: list[Txn] = field(default_factory=list)
    by_value: dict[bytes, Txn] = field(default_factory=dict)
    # (consumer, tp, offset, value, virtual ms)
    committed_reads: list[tuple[str, TopicPartition, int, bytes | None, int]] = field(default_factory=list)
    surprises: list[str] = field(default_factory=list)
    crashes: int = 0
    fenced: int = 0
    delayed_ends: int = 0  # delayed EndTxn copies sent (transaction version 2)
    delayed_ends_fenced: int = 0  # ... answered PRODUCER_FENCED

    def new_txn(self, **kwargs: Any) -> Txn:
        txn = Txn(txn_id=len(self.txns), **kwargs)
        self.txns.append(txn)
        return txn

    def settle(self) -> None:
        """At the end of a run: a transaction never asked to commit can never commit."""
        for txn in self.txns:
            if txn.outcome == OPEN:
                if txn.commit_sent_ms is None:
                    txn.outcome, txn.how = ABORTED, txn.how or "never committed"
                else:
                    txn.outcome, txn.how = UNKNOWN, "EndTxn(commit) unanswered at the end"

    def counts(self) -> dict[str, int]:
        out = {OPEN: 0, COMMITTED: 0, ABORTED: 0, UNKNOWN: 0}
        for txn in self.txns:
            out[txn.outcome] += 1
        return out


class TransactionalProducer(_Client):
    def __init__(self, name: str, env: ClientEnv, rng: random.Random, txns: TxnHistory, *,
                 timeout_ms: int, commit_rate: float, crash_rate: float, max_txns: int, think_ms: int,
                 transactional_id: str | None = None, transaction_version: int = 0,
                 delayed_end_rate: float = 0.0) -> None:
        super().__init__(name, env, rng)
        self.txns = txns
        # Two live instances may share one transactional id (a zombie and its replacement):
        # each InitProducerId fences the other, whose transaction is then aborted.
        self.transactional_id = transactional_id or f"txn-{name}"
        self.timeout_ms = timeout_ms
        self.commit_rate = commit_rate
        self.crash_rate = crash_rate
        self.max_txns = max_txns
        self.think_ms = think_ms
        self.producing = True  # new transactions allowed (off in the liveness phase)
        self.dead = False  # crashed, no new instance (yet)
        self.coordinator: int | None = None
        self.producer_id = -1
        self.producer_epoch = -1
        self.bump = False  # the next InitProducerId carries the current id and epoch (KIP-360)
        self.sequences: dict[int, int] = {}
        self.txn: Txn | None = None
        self.stage = ""  # add, produce, end
        self._next_batch = 0
        self._end_lost = False  # an EndTxn of this transaction went unanswered
        self._inflight = False
        self._started = 0
        self._value_seq = 0
        self.transaction_version = transaction_version
        self.delayed_end_rate = delayed_end_rate
        # Transaction version 2: an EndTxn kept to be sent again once the next transaction has
        # an acknowledged batch (the coordinator then holds it Ongoing in a newer epoch).
        self._delayed_end: Any = None

    @property
    def idle(self) -> bool:
        return self.txn is None and not self._inflight

    # --- the state machine ---------------------------------------------------------------------

    def step(self) -> None:
        if self._inflight or self.dead:
            return
        if self.partitions == 0:
            self.refresh_metadata()
            return
        if self.coordinator is None:
            self._find_coordinator()
            return
        if self.txn is None and (self.producer_id < 0 or self.bump):
            self._init()
            return
        if self.txn is None:
            if not self.producing or self._started >= self.max_txns:
                return
            self._begin()
        txn = self.txn
        assert txn is not None
        if self.stage != "end" and self.rng.random() < self.crash_rate:
            self._crash()
            return
        if self.stage == "add":
            self._add_partitions(txn)
        elif self.stage == "produce":
            self._produce(txn)
        else:
            self._end(txn)

    def _request(self, broker: int, request: Any, on_response: Any, on_failure: Any) -> None:
        self._inflight = True
        self.send(broker, request, on_response, on_failure)

    def _lost(self, reason: str) -> None:
        """No answer: the coordinator may have moved (Kafka looks it up again on a disconnect)."""
        self._inflight = False
        self.coordinator = None
        self.wake(self.env.backoff_ms)

    def _retry(self, delay_ms: int | None = None) -> None:
        self._inflight = False
        self.wake(self.env.backoff_ms if delay_ms is None else delay_ms)

    def _surprise(self, what: str, code: int) -> None:
        self.txns.surprises.append(f"{self.name}: {what} answered {code_name(code)}")

    # --- the coordinator and the producer id ---------------------------------------------------

    def _find_coordinator(self) -> None:
        request = frames.request(FIND_COORDINATOR, FIND_COORDINATOR_VERSION,
                                 {"key": self.transactional_id, "key_type": TRANSACTION_KEY_TYPE})
        self._request(self.rng.choice(self.env.brokers), request, self._on_find, self._lost)

    def _on_find(self, response: Any) -> None:
        self._inflight = False
        if response.error_code == ErrorCode.none and int(response.node_id) in self.env.brokers:
            self.coordinator = int(response.node_id)
            self.wake(0)
        else:
            self.wake(self.env.backoff_ms)

    def _init(self) -> None:
        assert self.coordinator is not None
        pid, epoch = (self.producer_id, self.producer_epoch) if self.bump else (-1, -1)
        request = frames.request(INIT_PRODUCER_ID, INIT_PRODUCER_ID_VERSION, {
            "transactional_id": self.transactional_id, "transaction_timeout": self.timeout_ms,
            "producer_id": pid, "producer_epoch": epoch,
        })
        self._request(self.coordinator, request, self._on_init, self._lost)

    def _on_init(self, response: Any) -> None:
        code = response.error_code
        if code == ErrorCode.none:
            self._inflight = False
            self.producer_id, self.producer_epoch = int(response.producer_id), int(response.producer_epoch)
            self.bump = False
            self.sequences.clear()
            self.wake(0)
        elif code in COORDINATOR_MOVED:
            self._lost(ErrorCode(code).name)
        elif code == ErrorCode.concurrent_transactions:
            self._retry(CONCURRENT_BACKOFF_MS)
        elif code in FENCED and self.bump:
            # Our bump lost to another instance's (or a lost answer's): start afresh.
            self._forget_identity()
            self._retry()
        else:
            self._surprise("InitProducerId", code)
            self._forget_identity()
            self._retry()

    # --- one transaction -----------------------------------------------------------------------

    def _begin(self) -> None:
        self._started += 1
        count = self.rng.randint(1, min(3, self.partitions))
        parts = tuple(sorted(self.rng.sample(range(self.partitions), count)))
        self.txn = self.txns.new_txn(
            producer=self.name, transactional_id=self.transactional_id, producer_id=self.producer_id,
            producer_epoch=self.producer_epoch, partitions=parts, commit=self.rng.random() < self.commit_rate,
        )
        for _ in range(self.rng.randint(1, 3)):
            partition = self.rng.choice(parts)
            values = []
            for _ in range(self.rng.randint(1, 3)):
                self._value_seq += 1
                values.append(f"{self.name}-t{self.txn.txn_id}-{self._value_seq}".encode())
            batch = TxnBatch(TopicPartition(self.env.topic, partition), tuple(values), sequence=-1)
            self.txn.batches.append(batch)
            for v in values:
                self.txns.by_value[v] = self.txn
        # Version 2 sends no AddPartitionsToTxn: the first Produce to a partition adds it.
        self.stage = "produce" if self.transaction_version >= 2 else "add"
        self._next_batch = 0
        self._end_lost = False

    def _finish(self, outcome: str, how: str) -> None:
        txn = self.txn
        assert txn is not None
        txn.outcome, txn.how = outcome, how
        self.txn = None
        self.stage = ""

    def _crash(self) -> None:
        """The process dies mid-transaction: nothing more is sent for it."""
        self.txns.crashes += 1
        self._finish(ABORTED, "producer crashed")
        self.coordinator = None
        self._forget_identity()
        self.leaders.clear()
        if self.rng.random() < 0.5:
            self.wake(self.rng.randint(100, 3_000))  # a new instance with the same transactional id
        else:
            self.dead = True  # the coordinator's timeout must abort what it left open

    def _fenced(self) -> None:
        """PRODUCER_FENCED: this instance is done; a new one re-initialises from scratch."""
        self.txns.fenced += 1
        self._forget_identity()

    def _forget_identity(self) -> None:
        """No producer id: the next InitProducerId asks for a new one (fencing older instances)."""
        self.producer_id = self.producer_epoch = -1
        self.bump = False
        self.sequences.clear()

    def _add_partitions(self, txn: Txn) -> None:
        assert self.coordinator is not None
        request = frames.request(ADD_PARTITIONS_TO_TXN, ADD_PARTITIONS_VERSION, {
            "v3_and_below_transactional_id": self.transactional_id,
            "v3_and_below_producer_id": self.producer_id, "v3_and_below_producer_epoch": self.producer_epoch,
            "v3_and_below_topics": [{"name": self.env.topic, "partitions": list(txn.partitions)}],
        })
        self._request(self.coordinator, request, lambda r: self._on_add(txn, r), self._lost)

    def _on_add(self, txn: Txn, response: Any) -> None:
        codes = [int(p.partition_error_code) for t in response.results_by_topic_v3_and_below
                 for p in t.results_by_partition]
        failed = sorted({c for c in codes if c != ErrorCode.none})
        if not failed:
            self._inflight = False
            self.stage = "produce"
            self.wake(0)
            return
        code = failed[0]
        if any(c in COORDINATOR_MOVED for c in failed):
            self._lost(ErrorCode(code).name)
        elif ErrorCode.concurrent_transactions in failed:
            self._retry(CONCURRENT_BACKOFF_MS)
        elif set(failed) <= {ErrorCode.unknown_topic_or_partition, ErrorCode.operation_not_attempted}:
            # The coordinator's metadata does not know a partition yet: Kafka's
            # AddPartitionsToTxnHandler sends the request again.
            self._retry()
        elif any(c in FENCED for c in failed):
            # Timed out and aborted by the coordinator, or fenced by a newer instance.
            self._finish(ABORTED, "fenced before EndTxn")
            self._fenced()
            self._retry()
        else:
            self._surprise("AddPartitionsToTxn", code)
            self._finish(ABORTED, f"AddPartitionsToTxn {code}")
            self._fenced()
            self._retry()

    def _produce(self, txn: Txn) -> None:
        if self._next_batch >= len(txn.batches):
            self.stage = "end"
            self._end(txn)
            return
        batch = txn.batches[self._next_batch]
        partition = batch.tp.partition
        if batch.sequence < 0:
            batch.sequence = self.sequences.get(partition, 0)
        known = self.leaders.get(partition)
        if known is None:
            self.refresh_metadata()
            return
        records = encode_batch(
            [Record(key=None, value=v) for v in batch.values], producer_id=self.producer_id,
            producer_epoch=self.producer_epoch, base_sequence=batch.sequence, transactional=True,
            now_ms=self.scheduler.now_ms,
        )
        version = TV2_PRODUCE_VERSION if self.transaction_version >= 2 else PRODUCE_VERSION
        request = frames.request(PRODUCE, version, {
            "transactional_id": self.transactional_id, "acks": -1, "timeout": self.env.request_timeout_ms - 500,
            "topic_data": [{"name": batch.tp.topic, "partition_data": [{"index": partition, "records": records}]}],
        })
        self._request(known[0], request, lambda r: self._on_produce(txn, batch, r),
                      lambda why: self._on_produce_lost(batch))

    def _on_produce(self, txn: Txn, batch: TxnBatch, response: Any) -> None:
        self._inflight = False
        result = response.responses[0].partition_responses[0]
        code = int(result.error_code)
        if code == ErrorCode.none:
            batch.attempts.append("ok")
            batch.offset = int(result.base_offset)
            self.sequences[batch.tp.partition] = batch.sequence + len(batch.values)
            self._next_batch += 1
            self._send_delayed_end()
            self.wake(self.rng.randint(0, self.think_ms))
            return
        batch.attempts.append(code_name(code))
        if code == ErrorCode.invalid_txn_state and self.transaction_version < 2:
            # KIP-890 verification: the coordinator says the partition is not in this epoch's
            # ongoing transaction, though it acknowledged AddPartitionsToTxn for it (answered
            # only once committed) and has not fenced the epoch (that is PRODUCER_FENCED or
            # INVALID_PRODUCER_EPOCH): it lost a committed transaction state.
            raise ClientViolation(
                f"{self.name}: Produce of transaction {txn.txn_id} (pid {self.producer_id} epoch "
                f"{self.producer_epoch}) to {batch.tp} refused INVALID_TXN_STATE after AddPartitionsToTxn "
                f"acknowledged the partition: the coordinator forgot an acknowledged partition"
            )
        if code in PRODUCE_RETRIABLE:
            if code not in (ErrorCode.not_enough_replicas, ErrorCode.not_enough_replicas_after_append):
                self.forget_leader(batch.tp.partition)
            self.wake(self.env.backoff_ms)
            return
        # Abortable (Kafka's TransactionManager): abort, then bump the epoch since the
        # partition's sequence may be unknowable now.
        if code not in FENCED and code not in (ErrorCode.out_of_order_sequence_number,
                                               ErrorCode.unknown_producer_id):
            self._surprise("Produce", code)
        txn.commit = False
        self.stage = "end"
        self.wake(0)

    def _on_produce_lost(self, batch: TxnBatch) -> None:
        self._inflight = False
        batch.attempts.append("lost")
        self.forget_leader(batch.tp.partition)
        self.wake(self.env.backoff_ms)

    def _end(self, txn: Txn) -> None:
        assert self.coordinator is not None
        if txn.commit and txn.commit_sent_ms is None:
            txn.commit_sent_ms = self.scheduler.now_ms
        if not txn.commit and txn.abort_sent_ms is None:
            txn.abort_sent_ms = self.scheduler.now_ms
        version = TV2_END_TXN_VERSION if self.transaction_version >= 2 else END_TXN_VERSION
        request = frames.request(END_TXN, version, {
            "transactional_id": self.transactional_id, "producer_id": self.producer_id,
            "producer_epoch": self.producer_epoch, "committed": txn.commit,
        })
        self._request(self.coordinator, request, lambda r: self._on_end(txn, r, request),
                      lambda why: self._on_end_lost(txn))

    def _send_delayed_end(self) -> None:
        """The kept EndTxn of the transaction before, now that this one has an acknowledged
        batch: its answer must be PRODUCER_FENCED (or a coordinator move, or lost)."""
        if self._delayed_end is None or self.coordinator is None:
            return
        request, txn_id = self._delayed_end
        self._delayed_end = None
        self.txns.delayed_ends += 1
        what = (f"{self.name}: delayed EndTxn of transaction {txn_id} (pid {int(request.producer_id)} epoch "
                f"{int(request.producer_epoch)}) sent while transaction {self.txn.txn_id if self.txn else '?'} "
                f"(epoch {self.producer_epoch}) is open")

        def answered(response: Any) -> None:
            code = int(response.error_code)
            if code == ErrorCode.producer_fenced:
                self.txns.delayed_ends_fenced += 1
            elif code not in COORDINATOR_MOVED:
                raise ClientViolation(f"{what} answered {code_name(code)}, not PRODUCER_FENCED")

        self.send(self.coordinator, request, answered, lambda why: None)

    def _on_end_lost(self, txn: Txn) -> None:
        txn.end_attempts.append("lost")
        self._end_lost = True
        self._lost("EndTxn")

    def _on_end(self, txn: Txn, response: Any, request: Any) -> None:
        code = int(response.error_code)
        txn.end_attempts.append(code_name(code))
        if code == ErrorCode.none:
            self._finish(COMMITTED if txn.commit else ABORTED, "EndTxn answered")
            if self.transaction_version >= 2:
                # The epoch (maybe the producer id) of the next transaction: sequences restart.
                self.producer_id, self.producer_epoch = int(response.producer_id), int(response.producer_epoch)
                self.sequences.clear()
                if self.rng.random() < self.delayed_end_rate:
                    self._delayed_end = (request, txn.txn_id)
            elif any(a != "ok" for b in txn.batches for a in b.attempts[-1:]):
                self.bump = True  # an abortable produce error: KIP-360 bump before the next one
            self._retry(self.rng.randint(0, self.think_ms))
        elif code in COORDINATOR_MOVED:
            self._lost(ErrorCode(code).name)
        elif code == ErrorCode.concurrent_transactions:
            self._retry(CONCURRENT_BACKOFF_MS)
        elif code in FENCED or code == ErrorCode.invalid_txn_state:
            if code == ErrorCode.invalid_txn_state and not self._end_lost:
                # Every EndTxn of this transaction was answered, its partitions were
                # acknowledged and its epoch is not fenced: the transaction must be Ongoing,
                # Prepare or Complete with this outcome. Anything else is lost coordinator state.
                raise ClientViolation(
                    f"{self.name}: EndTxn({'commit' if txn.commit else 'abort'}) of transaction {txn.txn_id} "
                    f"(pid {self.producer_id} epoch {self.producer_epoch}) refused INVALID_TXN_STATE "
                    f"(attempts {txn.end_attempts}) after AddPartitionsToTxn acknowledged its partitions: "
                    f"the coordinator forgot the transaction"
                )
            if txn.commit and self._end_lost:
                self._finish(UNKNOWN, f"EndTxn(commit) lost, then {ErrorCode(code).name}")
            else:
                self._finish(ABORTED, f"EndTxn refused {ErrorCode(code).name}")
            self._fenced()
            self._retry()
        else:
            self._surprise("EndTxn", code)
            self._finish(UNKNOWN if txn.commit else ABORTED, f"EndTxn {code}")
            self._fenced()
            self._retry()


class IsolatedConsumer(Consumer):
    """A read_committed consumer: it stops at the LSO and drops aborted transactions' batches
    the way Kafka's CompletedFetch does (the response's aborted list, ordered by first offset,
    adds a producer to the aborted set once a batch with a producer id, marker or data, reaches
    its first offset; that producer's ABORT marker takes it out again; control batches are
    skipped)."""

    # Deliberate consumer bugs for the tests that prove the checks are not vacuous.
    apply_aborted_list = True
    fetch_isolation_level = READ_COMMITTED

    def __init__(self, name: str, env: ClientEnv, rng: random.Random, max_wait_ms: int,
                 txns: TxnHistory) -> None:
        super().__init__(name, env, rng, max_wait_ms)
        self.txns = txns
        self.read_values: dict[int, set[bytes]] = {}

    def _on_fetch(self, partition: int, leader: int, response: Any) -> None:
        self._inflight = False
        data = response.responses[0].partitions[0]
        if data.error_code != ErrorCode.none:
            self.forget_leader(partition)
            self.wake(self.env.backoff_ms)
            return
        hw = int(data.high_watermark)
        lso = int(data.last_stable_offset) if self.fetch_isolation_level == READ_COMMITTED else hw
        tp = TopicPartition(self.env.topic, partition)
        where = f"{self.name}: b{leader} {tp}"
        if lso > hw:
            raise ClientViolation(f"{where}: LSO {lso} above HW {hw} in one response (rule 2)")
        self.high_watermarks[partition] = hw
        position = self.positions.get(partition, 0)
        pending = sorted((int(a.first_offset), int(a.producer_id)) for a in (data.aborted_transactions or ()))
        aborted: set[int] = set()
        if data.records:
            try:
                batches = decode_batches(bytes(data.records))
            except Exception as exc:
                raise ClientViolation(f"{where}: undecodable records: {exc}") from exc
            for header, records in batches:
                if header.last_offset < position:
                    continue
                if header.base_offset >= lso:
                    raise ClientViolation(
                        f"{where}: read_committed fetch served a batch at {header.base_offset}, at or "
                        f"above the LSO {lso} of the same response (early read)"
                    )
                if header.producer_id >= 0:
                    # Every batch with a producer id, a marker too, first takes in the aborted
                    # transactions that began at or before its last offset.
                    while pending and pending[0][0] <= header.last_offset:
                        aborted.add(pending.pop(0)[1])
                if header.is_control:
                    marker = decode_control_record(records[0])
                    if marker.kind == ControlType.ABORT:
                        aborted.discard(header.producer_id)
                    position = header.last_offset + 1
                    continue
                if header.is_transactional and header.producer_id in aborted and self.apply_aborted_list:
                    position = header.last_offset + 1
                    continue
                for record in records:
                    if record.offset < position:
                        continue
                    self._check_read(where, record.offset, record.value)
                    self.env.history.reads.append((tp, record.offset, record.value, self.name))
                    self.txns.committed_reads.append(
                        (self.name, tp, record.offset, record.value, self.scheduler.now_ms))
                    if record.value is not None:
                        self.read_values.setdefault(partition, set()).add(record.value)
                    position = record.offset + 1
        self.positions[partition] = position
        self.wake(0 if data.records else self.rng.randint(0, 50))

    def _check_read(self, where: str, offset: int, value: bytes | None) -> None:
        txn = self.txns.by_value.get(value) if value is not None else None
        if txn is None:
            return
        if txn.outcome == ABORTED or (txn.abort_sent_ms is not None and txn.commit_sent_ms is None):
            raise ClientViolation(
                f"{where}: read_committed read offset {offset} ({value!r}) of aborted transaction "
                f"{txn.txn_id} of {txn.producer} ({txn.how or 'EndTxn(abort) sent'}; aborted read)"
            )
        if txn.commit_sent_ms is None:
            raise ClientViolation(
                f"{where}: read_committed read offset {offset} ({value!r}) of transaction {txn.txn_id} "
                f"of {txn.producer} before its EndTxn(commit) was ever sent (early read; {txn.outcome}, "
                f"{txn.how or 'in progress'})"
            )
