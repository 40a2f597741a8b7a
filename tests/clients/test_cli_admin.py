"""`ackly topic|group|produce|consume` against one session broker, and their error paths.

The commands run in this process through click's CliRunner (their confluent-kafka clients are
real clients on real sockets); two checks run `python -m ackly` as a user would, to see the
exit status and that nothing from librdkafka reaches the terminal.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from ackly.cli.main import cli
from ackly.librdkafka_log import LOGGER_NAME, quiet, written_to
from ackly.server.etcd_process import free_port

pytestmark = [pytest.mark.slow, pytest.mark.clients]


@pytest.fixture
def run(ackly_session_broker: Any) -> Any:
    bootstrap = ackly_session_broker.bootstrap

    def invoke(*args: str, input: bytes | str | None = None, bootstrap_arg: bool = True) -> Result:
        argv = [*args, "--bootstrap", bootstrap, "--timeout", "10"] if bootstrap_arg else list(args)
        return CliRunner().invoke(cli, argv, input=input)

    invoke.bootstrap = bootstrap  # type: ignore[attr-defined]
    return invoke


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.output, result.stderr, result.exception)
    return result


def refused(result: Result, *words: str) -> str:
    assert result.exit_code == 1, (result.output, result.stderr, result.exception)
    for word in words:
        assert word in result.stderr, result.stderr
    assert result.stderr.startswith("ackly: "), result.stderr
    return result.stderr


def described(run: Any, topic: str) -> dict[str, Any]:
    [entry] = json.loads(ok(run("topic", "describe", topic, "--format", "json")).stdout)
    return entry  # type: ignore[no-any-return]


def unique(prefix: str) -> str:
    return f"{prefix}-{time.monotonic_ns()}"


def test_topic_commands_from_create_to_delete(run: Any) -> None:
    topic = unique("cli-topic")
    created = ok(run("topic", "create", topic, "-p", "2", "-c", "retention.ms=3600000", "--format", "json"))
    assert json.loads(created.stdout) == {"topic": topic, "partitions": 2, "created": True}
    listed = json.loads(ok(run("topic", "list", "--format", "json")).stdout)
    assert {"topic": topic, "partitions": 2, "replication_factor": 1} in listed
    assert topic in ok(run("topic", "list")).stdout
    entry = described(run, topic)
    assert [p["partition"] for p in entry["partitions"]] == [0, 1]
    assert entry["configs"] == {"retention.ms": "3600000"}

    ok(run("topic", "alter-config", topic, "--set", "retention.ms=60000", "--set", "cleanup.policy=compact"))
    assert described(run, topic)["configs"] == {"retention.ms": "60000", "cleanup.policy": "compact"}
    ok(run("topic", "alter-config", topic, "--delete", "cleanup.policy"))
    assert described(run, topic)["configs"] == {"retention.ms": "60000"}
    refused(run("topic", "alter-config", topic, "--set", "retention.ms=soon"), "INVALID_CONFIG", "retention.ms")
    assert run("topic", "alter-config", topic).exit_code == 2  # nothing to change: a usage error

    ok(run("topic", "add-partitions", topic, "--total", "3"))
    assert len(described(run, topic)["partitions"]) == 3
    refused(run("topic", "add-partitions", topic, "--total", "2"), "INVALID_PARTITIONS")

    ok(run("produce", topic, "-p", "0", input="a\nb\nc\nd\n"))
    trimmed = json.loads(ok(run("topic", "trim", topic, "--partition", "0", "--before", "3",
                                "--format", "json")).stdout)
    assert trimmed == [{"topic": topic, "partition": 0, "log_start_offset": 3}]
    part0 = described(run, topic)["partitions"][0]
    assert (part0["log_start_offset"], part0["high_watermark"]) == (3, 4)
    assert ok(run("consume", topic, "-p", "0", "-e")).stdout == "d\n"
    ok(run("topic", "trim", topic, "--before", "end"))
    assert described(run, topic)["partitions"][0]["log_start_offset"] == 4
    refused(run("topic", "trim", topic, "--partition", "7", "--before", "1"), "no partition 7")
    assert run("topic", "trim", topic, "--before", "soon").exit_code == 2

    ok(run("topic", "delete", topic))
    refused(run("topic", "describe", topic), f"unknown topic '{topic}'")


def test_topic_refusals_name_the_kafka_error(run: Any) -> None:
    topic = unique("cli-refusals")
    ok(run("topic", "create", topic))
    refused(run("topic", "create", topic), "TOPIC_ALREADY_EXISTS")
    refused(run("topic", "create", unique("cli-bad"), "-c", "cleanup.policy=sometimes"),
            "INVALID_CONFIG", "cleanup.policy")
    missing = unique("cli-missing")
    for args in (("topic", "describe", missing), ("topic", "alter-config", missing, "--set", "retention.ms=1"),
                 ("topic", "add-partitions", missing, "--total", "2"), ("topic", "trim", missing, "--before", "1"),
                 ("consume", missing, "-e")):
        refused(run(*args), f"unknown topic '{missing}'")
    refused(run("produce", missing, input="x\n"), f"unknown topic '{missing}'")
    refused(run("topic", "delete", missing), "UNKNOWN_TOPIC_OR_PART")
    # Asking about a topic never creates it.
    assert missing not in ok(run("topic", "list")).stdout


def test_produce_and_consume_like_kcat(run: Any) -> None:
    topic = unique("cli-records")
    ok(run("topic", "create", topic))
    produced = ok(run("produce", topic, "-K", ":", "-H", "source=cli", "--format", "json",
                      input="k1:v1\nk2:v2\nno-key\nk4:\n"))
    assert [json.loads(line)["offset"] for line in produced.stdout.splitlines()] == [0, 1, 2, 3]
    assert ok(run("consume", topic, "-e", "-K", "=")).stdout == "k1=v1\nk2=v2\n=no-key\nk4=\n"
    records = [json.loads(line) for line in ok(run("consume", topic, "-e", "--format", "json")).stdout.splitlines()]
    assert [(r["key"], r["value"], r["headers"]) for r in records] == [
        ("k1", "v1", [["source", "cli"]]), ("k2", "v2", [["source", "cli"]]),
        (None, "no-key", [["source", "cli"]]), ("k4", "", [["source", "cli"]])]
    assert ok(run("consume", topic, "-c", "2")).stdout == "v1\nv2\n"  # --count ends it without --exit
    assert ok(run("consume", topic, "-o", "-2", "-e")).stdout == "no-key\n\n"
    assert ok(run("consume", topic, "-o", "1", "--to", "3")).stdout == "v2\nno-key\n"
    line = ok(run("consume", topic, "-o", "3", "-e", "--line", "%t/%p/%o %K %S [%k] %h\\n")).stdout
    assert line == f"{topic}/0/3 2 0 [k4] source=cli\n"
    first_ts = records[0]["timestamp_ms"]
    assert ok(run("consume", topic, "-o", f"@{first_ts}", "-c", "1")).stdout == "v1\n"
    assert ok(run("consume", topic, "-o", f"@{int(time.time() * 1000) + 3_600_000}", "-e")).stdout == ""
    assert ok(run("consume", topic, "--to", f"@{first_ts}", "-e")).stdout == ""

    # What `consume --format json` writes, `produce --input json` reads; binary goes as base64.
    copy = unique("cli-copy")
    ok(run("topic", "create", copy))
    ok(run("produce", copy, "--input", "json", input="\n".join(json.dumps(r) for r in records) + "\n"))
    ok(run("produce", copy, "--input", "json", input='{"value_base64": "AP8=", "key": null}\n'))
    copied = [json.loads(x) for x in ok(run("consume", copy, "-e", "--format", "json")).stdout.splitlines()]
    assert [(r["key"], r.get("value"), r["headers"]) for r in copied[:4]] == \
        [(r["key"], r["value"], r["headers"]) for r in records]
    assert copied[4]["value_base64"] == "AP8="
    refused(run("produce", copy, "--input", "json", input='{"value": 3}\n'), "record 1", "value must be")
    refused(run("produce", copy, "-p", "5", input="x\n"), "no partition 5")
    ok(run("produce", copy, "-D", ";", "-Z", input="a;;b"))
    last = ok(run("consume", copy, "-o", "-3", "-e", "--format", "json")).stdout.splitlines()
    tail = [json.loads(x)["value"] for x in last]
    assert tail == ["a", None, "b"]


def test_consume_read_committed_leaves_out_aborted_records(run: Any) -> None:
    from confluent_kafka import Producer

    topic = unique("cli-txn")
    ok(run("topic", "create", topic))
    producer = Producer(quiet({"bootstrap.servers": run.bootstrap, "transactional.id": unique("cli-txn")}))
    try:
        producer.init_transactions(10)
        for value, commit in ((b"kept", True), (b"dropped", False)):
            producer.begin_transaction()
            producer.produce(topic, value)
            assert producer.flush(10) == 0  # written before the abort, which would drop it unsent
            (producer.commit_transaction if commit else producer.abort_transaction)(10)
    finally:
        producer.close()
    assert ok(run("consume", topic, "-e", "--isolation", "read_committed")).stdout == "kept\n"
    assert ok(run("consume", topic, "-e")).stdout == "kept\ndropped\n"


def test_group_commands(run: Any) -> None:
    from confluent_kafka import Consumer, Producer

    topic, group = unique("cli-group"), unique("cli-g")
    ok(run("topic", "create", topic))
    producer = Producer(quiet({"bootstrap.servers": run.bootstrap}))
    for i in range(10):
        producer.produce(topic, b"%d" % i, partition=0, timestamp=1_000_000 + 1000 * i)
    assert producer.flush(10) == 0
    producer.close()

    assert ok(run("consume", topic, "-g", group, "-c", "4")).stdout == "0\n1\n2\n3\n"
    assert {"group": group, "state": "EMPTY"} in json.loads(ok(run("group", "list", "--format", "json")).stdout)
    report = json.loads(ok(run("group", "describe", group, "--format", "json")).stdout)
    assert report["state"] == "EMPTY" and report["total_lag"] == 6
    assert report["partitions"] == [{"topic": topic, "partition": 0, "committed_offset": 4,
                                     "high_watermark": 10, "lag": 6, "member_id": None}]
    assert "LAG" in ok(run("group", "describe", group)).stdout

    def committed_after(*seek: str) -> int:
        out = json.loads(ok(run("group", "seek", group, "--topic", topic, *seek, "--format", "json")).stdout)
        return int(out["partitions"][0]["new_offset"])

    assert committed_after("--to-earliest") == 0
    assert committed_after("--to-offset", "7") == 7
    assert committed_after("--to-offset", "99") == 10  # kept within the partition
    assert committed_after("--to-timestamp", "1003000") == 3
    assert committed_after("--to-timestamp", "9000000") == 10  # later than every record: the end
    assert committed_after("--to-latest", "--dry-run") == 10
    assert json.loads(ok(run("group", "describe", group, "--format", "json")).stdout)["total_lag"] == 0
    ok(run("group", "seek", group, "--topic", topic, "--to-offset", "8"))
    assert ok(run("consume", topic, "-g", group, "-o", "stored", "-e")).stdout == "8\n9\n"
    assert run("group", "seek", group, "--topic", topic).exit_code == 2  # no target
    refused(run("group", "seek", group, "--topic", unique("nope"), "--to-earliest"), "unknown topic")

    member = Consumer(quiet({"bootstrap.servers": run.bootstrap, "group.id": group,
                             "enable.auto.commit": False, "session.timeout.ms": 6000}))
    try:
        member.subscribe([topic])
        deadline = time.monotonic() + 20
        while not member.assignment() and time.monotonic() < deadline:
            member.poll(0.1)
        assert member.assignment(), "the member joined"
        refused(run("group", "seek", group, "--topic", topic, "--to-earliest"), "1 members", "stop its consumers")
        refused(run("group", "delete", group), "NON_EMPTY_GROUP")
        assert json.loads(ok(run("group", "describe", group, "--format", "json")).stdout)["members"]
    finally:
        member.close()
    ok(run("group", "delete", group))
    refused(run("group", "describe", group), f"unknown group '{group}'")
    refused(run("group", "delete", group), "GROUP_ID_NOT_FOUND")


def test_client_settings_from_a_file_and_from_x(run: Any, tmp_path: Path) -> None:
    props = tmp_path / "client.properties"
    props.write_text("# a client properties file\nclient.id = from-file\nsocket.timeout.ms: 5000\n")
    ok(run("topic", "list", "--client-config", str(props)))
    ok(run("cluster", "info", "--client-config", str(props), "-X", "client.id=from-x"))
    refused(run("topic", "list", "-X", "no.such.setting=1"), "bad client setting", "no.such.setting")
    refused(run("consume", "t", "-X", "no.such.setting=1"), "bad client setting")
    assert run("topic", "list", "-X", "no-equals").exit_code == 2
    missing = run("topic", "list", "--client-config", str(tmp_path / "absent.properties"))
    assert missing.exit_code == 2 and "absent.properties" in missing.stderr


def test_unreachable_bootstrap_ends_with_a_clear_message(run: Any) -> None:
    nobody = f"127.0.0.1:{free_port()}"
    for args in (("topic", "list"), ("group", "list"), ("consume", "t", "-e")):
        result = run(*args, "--bootstrap", nobody, "--timeout", "1", bootstrap_arg=False)
        refused(result, f"cannot reach the cluster at {nobody} within 1 s")


def test_end_to_end_as_a_process_without_librdkafka_noise(run: Any) -> None:
    topic = unique("cli-process")
    base = [sys.executable, "-m", "ackly"]
    boot = ["--bootstrap", run.bootstrap]
    ok(run("topic", "create", topic))
    produce = subprocess.run([*base, "produce", topic, *boot], input=b"one\ntwo\n", capture_output=True,
                             timeout=60)
    assert produce.returncode == 0 and b"produced 2 records" in produce.stderr
    assert ok(run("consume", topic, "-e")).stdout == "one\ntwo\n"
    unreachable = subprocess.run([*base, "produce", topic, "--bootstrap", f"127.0.0.1:{free_port()}",
                                  "--timeout", "1"], input=b"x\n", capture_output=True, timeout=60)
    assert unreachable.returncode == 1
    assert unreachable.stderr.startswith(b"ackly: cannot reach the cluster"), unreachable.stderr
    assert b"%3|" not in unreachable.stderr and b"Connection refused" not in unreachable.stderr


def test_librdkafka_lines_go_to_the_log_file_not_the_terminal(tmp_path: Path,
                                                             capfd: pytest.CaptureFixture[str]) -> None:
    from confluent_kafka import Producer

    path = tmp_path / "librdkafka.log"
    with written_to(str(path)):
        producer = Producer(quiet({"bootstrap.servers": f"127.0.0.1:{free_port()}",
                                   "reconnect.backoff.max.ms": 100}))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (path.exists() and "Connection refused" in path.read_text()):
            producer.poll(0.1)
        producer.close()
    assert "librdkafka ERROR: FAIL" in path.read_text()
    assert "Connection refused" not in capfd.readouterr().err
    assert logging.getLogger(LOGGER_NAME).level == logging.NOTSET  # restored after the block
