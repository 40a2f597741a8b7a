"""What verify reads from the clients' own errors: send outcomes and lost producer state."""

from __future__ import annotations

from ackly.testing.faulty_serve import parse_args
from ackly.verify.client_signals import judge_producer_state, producer_state_lost
from ackly.verify.clients import classify_error
from ackly.verify.history import Recorder, send_mop, sent_mop

UNKNOWN = ('client failed: KafkaError{FATAL,code=UNKNOWN_PRODUCER_ID,str="ProduceRequest for queue [1] '
           'with 1 message(s) failed due to unknown producer id"}')


def test_only_refusals_before_the_append_without_retries_are_definite() -> None:
    assert classify_error("NOT_ENOUGH_REPLICAS", retries_off=True) == "fail"
    assert classify_error("NOT_ENOUGH_REPLICAS", retries_off=False) == "info"  # an earlier try may have landed
    assert classify_error("NOT_ENOUGH_REPLICAS_AFTER_APPEND", retries_off=True) == "info"
    assert classify_error("_MSG_TIMED_OUT", retries_off=True) == "info"
    assert classify_error("_UNKNOWN_PARTITION", retries_off=False) == "fail"  # never sent


def test_a_refusal_after_an_acknowledged_send_is_lost_state_and_before_one_is_not() -> None:
    rec = Recorder()
    ok = rec.invoke(0, "send", [send_mop("queue/1", 0)], extra={"producer": "0.0"})
    rec.complete(ok, "ok", [sent_mop("queue/1", 0, 0)])
    lost = rec.invoke(1, "send", [send_mop("queue/1", 1)], extra={"producer": "0.0"})
    rec.complete(lost, "info", error=UNKNOWN)
    first = rec.invoke(2, "send", [send_mop("queue/1", 2)], extra={"producer": "1.0"})
    rec.complete(first, "info", error=UNKNOWN)
    found_lost, found_first, found_pipelined = producer_state_lost(rec.history())
    assert (found_lost.count, found_first.count, found_pipelined.count) == (1, 1, 0)
    assert found_lost.examples[0].key == "queue/1" and found_lost.examples[0].ops == (2, 3)

    strict = {"enable.idempotence": "true", "acks": "all", "unclean.leader.election.enable": "false"}
    assert judge_producer_state(found_lost, strict).status == "violation"
    assert judge_producer_state(found_lost, {**strict, "acks": "1"}).status == "allowed-by-config"
    assert judge_producer_state(found_lost, {**strict, "enable.idempotence": "false"}).status == "reported"


# What confluent-kafka's commit_transaction raised in a transactional row (repr, as the workload
# records it): librdkafka's two answers to OUT_OF_ORDER_SEQUENCE_NUMBER.
SKIPPED = ('KafkaException(KafkaError{code=OUT_OF_ORDER_SEQUENCE_NUMBER,val=45,'
           'str="skipped sequence numbers"})')
DESYNC = ('KafkaException(KafkaError{FATAL,code=OUT_OF_ORDER_SEQUENCE_NUMBER,val=45,str="ProduceRequest for '
          'queue [1] with 1 message(s) failed due to sequence desynchronization with broker 2 '
          '(PID{Id:1000,Epoch:0}, base seq 4, idemp state change 5012ms ago, last partition error '
          'NOT_ENOUGH_REPLICAS (actions Retry,MsgNotPersisted, base seq 4..4, base msgid 5, 40ms ago)"})')


def transaction(rec: Recorder, process: int, producer: str, values: list[int], outcome: str,
                error: str | None = None) -> None:
    """One op of the transactional workload: sends of `values` to queue/1, then its outcome."""
    extra = {"producer": producer, "isolation": "read_committed"}
    op = rec.invoke(process, "txn", [send_mop("queue/1", v) for v in values], extra=extra)
    if outcome == "ok":
        rec.complete(op, "ok", [sent_mop("queue/1", None, v) for v in values])
    else:
        rec.complete(op, outcome, error=error)


def test_a_refusal_behind_a_retriably_refused_request_is_not_lost_state() -> None:
    # A transaction committed its sends to queue/1, so the partition has the producer's state.
    # The next one sent two requests there with linger.ms=0: the first was refused
    # NOT_ENOUGH_REPLICAS (nothing written), the second came with a sequence gap and was
    # answered OUT_OF_ORDER_SEQUENCE_NUMBER, as Kafka answers it. librdkafka: "skipped sequence
    # numbers", an abortable error, and the transaction fails; nothing the broker kept is lost.
    rec = Recorder()
    transaction(rec, 0, "txn-0.0", [0, 1], "ok")
    transaction(rec, 0, "txn-0.0", [2, 3], "info", SKIPPED)
    lost, first, pipelined = producer_state_lost(rec.history())
    assert (lost.count, first.count, pipelined.count) == (0, 0, 1)
    assert pipelined.examples[0].key == "queue/1" and pipelined.examples[0].values == (2, 3)
    strict = {"enable.idempotence": "true", "acks": "all", "unclean.leader.election.enable": "false"}
    assert judge_producer_state(lost, strict).status == "none"

    # The head of line refused instead: librdkafka's fatal desynchronisation, the broker's state
    # is behind what it acknowledged.
    rec = Recorder()
    transaction(rec, 0, "txn-0.0", [0, 1], "ok")
    transaction(rec, 0, "txn-0.0", [2], "info", DESYNC)
    lost, first, pipelined = producer_state_lost(rec.history())
    assert (lost.count, first.count, pipelined.count) == (1, 0, 0)
    assert judge_producer_state(lost, strict).status == "violation"


def test_faulty_serve_takes_fault_names_then_the_ackly_command_line() -> None:
    faults, _record, rest = parse_args(["--fault", "serve-above-hw", "--fault=forget-producer-state", "--",
                                        "serve", "--port", "0"])
    assert faults == ["serve-above-hw", "forget-producer-state"]
    assert rest == ["serve", "--port", "0"]


def test_fault_points_stay_out_of_the_user_facing_commands() -> None:
    from click.testing import CliRunner

    from ackly.cli.main import cli

    serve_help = CliRunner().invoke(cli, ["serve", "--help"]).output
    verify_help = CliRunner().invoke(cli, ["verify", "--help"]).output
    assert "--fault" not in serve_help and "fault point" not in serve_help.lower()
    assert "--semantics" in verify_help and "--planted-fault" not in verify_help


def test_faulty_serve_takes_a_flush_record_path() -> None:
    faults, record, rest = parse_args(["--record-flushes", "d/flushed-lengths", "--", "serve", "--port", "1"])
    assert (faults, record, rest) == ([], "d/flushed-lengths", ["serve", "--port", "1"])
