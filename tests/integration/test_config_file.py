"""`ackly serve --config-file`: a real broker takes its listeners and keys from a properties
file, ACKLY_* variables override the file and --config overrides both; a bad value is refused
at start-up naming where it was."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from ackly.server.etcd_process import etcd_binary
from ackly.testing.broker_process import BrokerProcess
from ackly.testing.cluster_processes import wait_until
from tests.integration.test_cli_cluster import ClusterCommand, free_base_port

pytestmark = [pytest.mark.slow, pytest.mark.clients]

TIMEOUT_S = 30

SERVER_PROPERTIES = """\
# ackly test broker
listeners = CLIENTS://127.0.0.1:0
listener.security.protocol.map : CLIENTS:PLAINTEXT
num.partitions=3
log.retention.ms=1000
log.segment.bytes=\\
    2000000
"""


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    path = tmp_path / "server.properties"
    path.write_text(SERVER_PROPERTIES)
    proc = BrokerProcess(
        str(tmp_path / "data"), config_file=str(path), configs={"log.segment.bytes": "4000000"},
        env={"ACKLY_LOG_RETENTION_MS": "2000", "ACKLY_LOG_SEGMENT_BYTES": "3000000"},
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.kill()


def test_a_broker_serves_the_files_listener_with_precedence(broker: BrokerProcess) -> None:
    bootstrap = broker.listener_bootstrap("CLIENTS")
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce("from-file", b"v")  # auto-created with the file's num.partitions
    assert producer.flush(TIMEOUT_S) == 0
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = admin.list_topics("from-file", timeout=TIMEOUT_S).topics["from-file"]
    assert len(topic.partitions) == 3
    resource = ConfigResource(ResourceType.TOPIC, "from-file")
    configs = admin.describe_configs([resource])[resource].result(TIMEOUT_S)
    assert configs["retention.ms"].value == "2000"  # the environment over the file
    assert configs["segment.bytes"].value == "4000000"  # the command line over both


def _serve(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "server.properties"
    path.write_text(text)
    command = [sys.executable, "-m", "ackly", "serve", "--data-dir", str(tmp_path / "data"),
               "--port", "0", "--config-file", str(path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S,
                          env={**os.environ, **(env or {})})


def test_a_bad_value_in_the_file_is_refused_naming_its_line(tmp_path: Path) -> None:
    done = _serve(tmp_path, "num.partitions=2\n\nlog.retention.ms = soon\n")
    assert done.returncode == 2
    assert "log.retention.ms" in done.stderr and "'soon'" in done.stderr
    assert "server.properties line 3" in done.stderr
    assert not (tmp_path / "data").exists()  # refused before touching the disk


def test_a_bad_environment_variable_is_refused_naming_it(tmp_path: Path) -> None:
    done = _serve(tmp_path, "num.partitions=2\n", env={"ACKLY_NUM_PARTITONS": "2"})
    assert done.returncode == 2
    assert "num.partitons" in done.stderr and "ACKLY_NUM_PARTITONS" in done.stderr


def test_json_logs_are_one_object_a_line_with_the_leadership_change(tmp_path: Path) -> None:
    proc = BrokerProcess(str(tmp_path / "data"), log_level="INFO", log_format="json")
    proc.start()
    try:
        producer = Producer({"bootstrap.servers": proc.bootstrap})
        producer.produce("logged", b"v")
        assert producer.flush(TIMEOUT_S) == 0
    finally:
        proc.stop()
    lines = [line for line in proc.output if line.strip()]
    # Everything but the start-up line (printed for scripts, not logged) is a JSON object.
    logged = [json.loads(line) for line in lines if "listening on" not in line]
    assert logged and all({"time", "level", "logger", "message"} <= set(entry) for entry in logged)
    leading = [e for e in logged if e.get("event") == "leader_change" and e.get("topic") == "logged"]
    assert len(leading) == 1
    assert leading[0]["partition"] == 0 and leading[0]["leader"] == 0
    assert leading[0]["leader_epoch"] == 0 and leading[0]["isr"] == [0]


def test_ackly_cluster_refuses_a_bad_file_before_starting_anything(tmp_path: Path) -> None:
    path = tmp_path / "cluster.properties"
    path.write_text("num.partitions=3\nmin.insync.replicas=0\n")
    done = subprocess.run(
        [sys.executable, "-m", "ackly", "cluster", "--data-dir", str(tmp_path / "cluster"),
         "--no-etcd", "--config-file", str(path)],
        capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 2
    assert "min.insync.replicas" in done.stderr and "cluster.properties line 2" in done.stderr
    assert not (tmp_path / "cluster").exists()


def test_ackly_cluster_hands_the_file_to_every_broker_and_logs_json(tmp_path: Path) -> None:
    if etcd_binary() is None:
        pytest.skip("etcd is not installed")
    path = tmp_path / "cluster.properties"
    path.write_text("num.partitions=2\ndefault.replication.factor=3\n")
    base = free_base_port(3)
    command = ClusterCommand(["--brokers", "3", "--data-dir", str(tmp_path / "c"), "--base-port",
                              str(base), "--etcd", "--config-file", str(path)],
                             ["--log-level", "INFO", "--log-format", "json"])
    try:
        assert command.ready.wait(60) and command.bootstrap, command.output()
        producer = Producer({"bootstrap.servers": command.bootstrap})
        producer.produce("spread", b"v", partition=1)
        assert producer.flush(TIMEOUT_S) == 0
        admin = AdminClient({"bootstrap.servers": command.bootstrap})
        topic = admin.list_topics("spread", timeout=TIMEOUT_S).topics["spread"]
        assert len(topic.partitions) == 2 and all(len(p.replicas) == 3 for p in topic.partitions.values())

        def logged() -> list[dict[str, object]]:
            # Each broker's lines come prefixed "[broker N] "; its log lines are JSON objects.
            return [json.loads(line.split("] ", 1)[1]) for line in list(command.lines)
                    if line.startswith("[broker ") and "] {" in line]

        def spread_events(event: str) -> list[dict[str, object]]:
            return [e for e in logged() if e.get("event") == event and e.get("topic") == "spread"]

        # Each partition: its leader leads and the two others follow, a line each.
        wait_until(lambda: len(spread_events("leader_change")) >= 6, TIMEOUT_S,
                   "a leadership line from every replica")
        events = spread_events("leader_change")
        assert {e["partition"] for e in events} == {0, 1}
        for partition in (0, 1):
            mine = [e for e in events if e["partition"] == partition]
            last = max(int(str(e["leader_epoch"])) for e in mine)
            assert len({e["leader"] for e in mine if e["leader_epoch"] == last}) == 1
            assert all(e["level"] == "INFO" and e["logger"] == "ackly.replicas" for e in mine)
        assert command.stop(signal.SIGINT) == 0, command.output()
    finally:
        if command.proc.poll() is None:
            command.proc.kill()
            command.proc.wait(10)


# Kafka 4's config/server.properties (combined broker and controller), as Kafka documents its
# defaults; the ports are 0 (any free one) and the directory the test's own.
KAFKA_4_SERVER_PROPERTIES = """\
############################# Server Basics #############################
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=localhost:9093

############################# Socket Server Settings #############################
listeners=PLAINTEXT://127.0.0.1:0,CONTROLLER://127.0.0.1:0
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SSL:SSL,\\
SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL
num.network.threads=3
num.io.threads=8
socket.send.buffer.bytes=102400
socket.receive.buffer.bytes=102400
socket.request.max.bytes=104857600

############################# Log Basics #############################
log.dirs={log_dirs}
num.partitions=1
num.recovery.threads.per.data.dir=1

############################# Internal Topic Settings  #############################
offsets.topic.replication.factor=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1

############################# Log Flush Policy #############################
log.flush.interval.messages=10000
log.flush.interval.ms=1000

############################# Log Retention Policy #############################
log.retention.hours=168
log.segment.bytes=1073741824
log.retention.check.interval.ms=300000
"""
KAFKA_4_IGNORED = ["controller.quorum.bootstrap.servers",
                   "num.io.threads", "num.network.threads", "num.recovery.threads.per.data.dir",
                   "process.roles", "share.coordinator.state.topic.min.isr",
                   "share.coordinator.state.topic.replication.factor",
                   "socket.receive.buffer.bytes", "socket.send.buffer.bytes"]


def test_a_kafka_4_server_properties_starts_a_broker_naming_the_ignored_keys_once(
        tmp_path: Path) -> None:
    data = tmp_path / "kraft-combined-logs"
    path = tmp_path / "server.properties"
    path.write_text(KAFKA_4_SERVER_PROPERTIES.format(log_dirs=data))
    proc = BrokerProcess(str(data), broker_id=1, config_file=str(path), log_level="INFO")
    proc.start()
    try:
        # The controller's listener is the KRaft quorum's: not opened.
        assert set(proc.listener_ports) == {"PLAINTEXT"}
        producer = Producer({"bootstrap.servers": proc.bootstrap})
        producer.produce("kafka-file", b"v")
        assert producer.flush(TIMEOUT_S) == 0
        admin = AdminClient({"bootstrap.servers": proc.bootstrap})
        broker = ConfigResource(ResourceType.BROKER, "1")
        configs = admin.describe_configs([broker])[broker].result(TIMEOUT_S)
        assert configs["node.id"].value == "1" and configs["broker.id"].value == "1"
        assert configs["log.retention.ms"].value == str(168 * 3_600_000)  # from the hours
        assert configs["log.flush.interval.messages"].value == "10000"
        topic = ConfigResource(ResourceType.TOPIC, "kafka-file")
        configs = admin.describe_configs([topic])[topic].result(TIMEOUT_S)
        assert configs["flush.ms"].value == "1000"
        assert configs["flush.ms"].source == 4  # STATIC_BROKER_CONFIG: log.flush.interval.ms
    finally:
        proc.stop()
    assert any(p.name.startswith("kafka-file-") for p in data.iterdir()), "log.dirs holds the logs"
    warnings = [line for line in proc.output if "ignoring Kafka broker configs" in line]
    assert len(warnings) == 1, proc.output
    assert warnings[0].rstrip().endswith(", ".join(KAFKA_4_IGNORED)), warnings[0]


def test_log_dirs_and_a_different_data_dir_are_refused(tmp_path: Path) -> None:
    done = _serve(tmp_path, f"log.dirs={tmp_path / 'elsewhere'}\nnum.io.threads=8\n")
    assert done.returncode == 2
    assert "log.dirs" in done.stderr and "--data-dir" in done.stderr
