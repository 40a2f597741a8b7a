"""`ackly verify` end to end: its own 3-broker cluster (etcd + processes), real clients, real
faults, and the verdict it reaches (docs/guarantees.md s.7-8).

- the matrix: at-most-once loses records and never duplicates them under leader kills,
  at-least-once loses nothing, exactly-once neither (or is marked unfinished while the broker
  refuses transactions), nor the exactly-once sink into SQLite; every row runs the same seeded
  fault schedule;
- acks=1 with unclean leader election, under a partition of the leader: acknowledged writes are
  lost and the report says the configuration allows it;
- a power loss on a single broker (lose-unflushed: its log files cut back to what fsync made
  durable): with flush.policy=always nothing acknowledged goes; with flush.policy=never and acks=1
  acknowledged writes go, and the report says the configuration allows it;
- a failed fsync (disk-error: EIO on the leader's next fsync of its log) on one broker and
  on three: the broker stops, nothing acknowledged is lost;
- each planted bug (broker/faults.py, switched on only through ackly.testing.faulty_serve) makes
  verify fail the run.
- at-least-once with consumers on the KIP-848 group protocol under broker kills.

Each run is bounded: a few seconds of workload, then healing, final reads and the check.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ackly.broker.faults import FORGET_PRODUCER_STATE
from ackly.cli.main import cli
from ackly.server.etcd_process import etcd_binary
from ackly.testing.flushed_lengths import RECORD_FILE
from ackly.verify.nemesis import plan

pytestmark = [
    pytest.mark.slow,
    pytest.mark.clients,
    pytest.mark.timeout(240),
    pytest.mark.skipif(etcd_binary() is None, reason="etcd is not installed (Debian: etcd-server)"),
]

LOSS = ("lost-write", "unseen")


def verify(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["verify", *args], catch_exceptions=False)
    return result.exit_code, result.output


def summary(report_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((report_dir / "summary.json").read_text())
    return data


def counts(data: dict[str, Any]) -> dict[str, int]:
    return {a["name"]: a["count"] for a in data["check"]["anomalies"]}


def status(data: dict[str, Any], name: str) -> str:
    return next(str(a["status"]) for a in data["check"]["anomalies"] if a["name"] == name)


def test_matrix_rows_show_what_their_semantics_allow(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    # Seed 2 gives a leader kill, then a leader partition (checked against plan() below). acks=0
    # records caught in a leader kill vanish only if they were in flight at that instant (timing);
    # those sent to a leader cut off from its followers vanish in every run (its tail is truncated
    # when it rejoins), so the at-most-once loss shows every time.
    seed = 2
    code, output = verify("--matrix", "--duration", "16", "--faults", "kill-leader,partition-leader",
                          "--seed", str(seed), "--rate", "100", "--out", str(tmp_path))
    rows = {row: summary(tmp_path / row) for row in ("at-most-once", "at-least-once", "exactly-once")}

    at_most = counts(rows["at-most-once"])
    assert sum(at_most[n] for n in LOSS) > 0, f"at-most-once lost nothing under leader kills:\n{output}"
    assert at_most["duplicate"] == 0
    assert rows["at-most-once"]["ok"], output

    at_least = counts(rows["at-least-once"])
    assert all(at_least[n] == 0 for n in LOSS), f"at-least-once lost acknowledged writes:\n{output}"
    assert rows["at-least-once"]["ok"], output

    exactly = rows["exactly-once"]
    assert exactly["check"] is not None and exactly["ok"], output
    assert all(counts(exactly)[n] == 0 for n in (*LOSS, "duplicate"))
    sink = summary(tmp_path / "exactly-once-sink")  # ackly.eos into SQLite
    assert sink["ok"], output
    assert all(counts(sink)[n] == 0 for n in (*LOSS, "duplicate", "consume-count"))
    assert code == (0 if all(r["ok"] is not False for r in rows.values()) else 1)

    # Same seed, same schedule, in every row and as nemesis.plan computes it.
    schedules = {row: data["run"]["schedule"] for row, data in rows.items()}
    assert len({json.dumps(s) for s in schedules.values()}) == 1
    expected = [e.to_json() for e in plan(seed, ("kill-leader", "partition-leader"), 16.0, 3, 3)]
    assert schedules["at-least-once"] == expected
    assert [e["kind"] for e in expected] == ["kill-leader", "partition-leader"]
    assert "matrix:" in output and "anomaly" in output
    # librdkafka's lines go to librdkafka.log in the report directory: none reached the
    # terminal, from a client of this row or one left over from an earlier row.
    terminal = capfd.readouterr().err
    assert "%3|" not in terminal and "Connection refused" not in terminal, terminal[-2000:]


def test_acks1_with_unclean_election_loses_writes_that_the_config_allows(tmp_path: Path) -> None:
    code, output = verify("--semantics", "at-least-once", "--set", "acks=1",
                          "--set", "unclean.leader.election.enable=true", "--duration", "10",
                          "--faults", "partition-leader", "--seed", "3", "--out", str(tmp_path))
    data = summary(tmp_path)
    assert counts(data)["lost-write"] > 0, f"no acknowledged write was lost:\n{output}"
    assert status(data, "lost-write") == "allowed-by-config"
    assert code == 0 and data["ok"], output
    assert "allowed-by-config" in output


def dropped_bytes(output: str) -> list[int]:
    return [int(n) for n in re.findall(r"(\d+) unflushed bytes dropped", output)]


def test_power_loss_with_flush_always_loses_nothing_acknowledged(tmp_path: Path) -> None:
    code, output = verify("--semantics", "at-least-once", "--brokers", "1", "--partitions", "1",
                          "--duration", "8", "--faults", "lose-unflushed", "--seed", "1",
                          "--keep-data", "--out", str(tmp_path))
    data = summary(tmp_path)
    assert dropped_bytes(output), f"no power loss was injected:\n{output}"
    assert data["run"]["stats"]["faults injected"] >= 1, output
    # The broker recorded what its fsyncs covered: the workload's log is in the record.
    record = (tmp_path / "data" / "cluster" / "broker-0" / RECORD_FILE).read_text()
    lengths = [int(line.rsplit(" ", 1)[1]) for line in record.splitlines()
               if line.startswith("verify-queue-0") and not line.endswith(" -")]
    assert max(lengths, default=0) > 0, record
    assert all(counts(data)[n] == 0 for n in LOSS), f"flush.policy=always lost acknowledged writes:\n{output}"
    assert code == 0 and data["ok"], output


@pytest.mark.parametrize("brokers", [1, 3])
def test_a_failed_fsync_on_the_leader_loses_nothing_acknowledged(tmp_path: Path, brokers: int) -> None:
    code, output = verify("--semantics", "at-least-once", "--brokers", str(brokers),
                          "--partitions", "1", "--duration", "10", "--faults", "disk-error-leader",
                          "--seed", "1", "--out", str(tmp_path))
    data = summary(tmp_path)
    assert data["run"]["stats"]["faults injected"] >= 1, output
    logs = "".join(path.read_text() for path in sorted(tmp_path.glob("broker-*.log")))
    # The fault fired: a broker took its log directory offline, and the pages of the failed
    # fsync were lost when it exited.
    assert "log dir failed: fsync " in logs and "lost pages of " in logs, logs[-3000:]
    assert all(counts(data)[n] == 0 for n in LOSS), f"a disk error lost acknowledged writes:\n{output}"
    assert code == 0 and data["ok"], output


def test_power_loss_with_flush_never_loses_writes_that_the_config_allows(tmp_path: Path) -> None:
    code, output = verify("--semantics", "at-least-once", "--brokers", "1", "--partitions", "1",
                          "--set", "acks=1", "--set", "flush.policy=never", "--duration", "8",
                          "--faults", "lose-unflushed", "--seed", "1", "--out", str(tmp_path))
    data = summary(tmp_path)
    assert sum(dropped_bytes(output)) > 0, f"nothing unflushed was dropped:\n{output}"
    lost = {n: counts(data)[n] for n in LOSS}
    assert sum(lost.values()) > 0, f"no acknowledged write was lost:\n{output}"
    assert all(status(data, n) == "allowed-by-config" for n, count in lost.items() if count), output
    assert code == 0 and data["ok"], output


@pytest.mark.parametrize(("fault", "extra", "caught_as"), [
    ("ack-before-replication", ["--semantics", "at-least-once", "--faults", "partition-leader"],
     {"lost-write", "unseen", "inconsistent-offsets"}),
    ("serve-above-hw", ["--semantics", "at-least-once", "--faults", "partition-leader", "--producers", "4"],
     {"inconsistent-offsets", "nonmonotonic-poll", "poll-skip", "lost-write"}),
    ("forget-producer-state", ["--semantics", "exactly-once", "--set", "workload=queue",
                               "--set", "max.in.flight.requests.per.connection=5",
                               "--faults", "kill-leader", "--producers", "4", "--rate", "200"],
     # A leader that forgot the producer takes a retry of a written batch as new (duplicate), or
     # refuses the next sequence after the one it took first (librdkafka: "unable to retry
     # without risking duplication").
     {"producer-state-lost", "duplicate", "nonmonotonic-send", "inconsistent-offsets"}),
])
def test_each_planted_bug_is_caught(tmp_path: Path, fault: str, extra: list[str], caught_as: set[str]) -> None:
    # forget-producer-state shows only if a batch is written but not yet answered when the leader
    # dies (its retry then reaches a leader that forgot it); that depends on timing, so up to
    # three seeds get a chance, and the first run that catches it ends the test. The other
    # faults show in every run.
    seeds = ("1", "2", "4") if fault == FORGET_PRODUCER_STATE else ("3",)
    for seed in seeds:
        out = tmp_path / f"seed-{seed}"
        code, output = verify("--planted-fault", fault, "--duration", "10", "--seed", seed,
                              "--out", str(out), *extra)
        data = summary(out)
        if code == 1:
            break
    violations = {a["name"] for a in data["check"]["anomalies"] if a["status"] == "violation"}
    assert code == 1 and not data["ok"], f"{fault} went unnoticed:\n{output}"
    assert violations & caught_as, f"{fault} caught only as {violations}:\n{output}"
    assert data["run"]["planted_faults"] == [fault]


@pytest.mark.parametrize("client", ["aiokafka", "kafka-python"])
def test_other_clients_run_the_queue_workload(tmp_path: Path, client: str) -> None:
    code, output = verify("--client", client, "--semantics", "at-least-once", "--duration", "5",
                          "--faults", "reset", "--seed", "2", "--rate", "40", "--out", str(tmp_path))
    data = summary(tmp_path)
    throughput = data["stats"]["throughput"]
    assert throughput["send"]["ok"] > 0 and throughput["poll"]["ok"] > 0, output
    assert all(counts(data)[n] == 0 for n in LOSS), output
    assert code == 0 and data["ok"], output


def test_at_least_once_with_consumers_on_the_kip848_group_protocol(tmp_path: Path) -> None:
    # Consumers 0 and 2 share the group (ConsumerGroupHeartbeat; the broker assigns the
    # partitions), consumer 1 reads by assignment; brokers are killed under them.
    code, output = verify("--semantics", "at-least-once", "--group-protocol", "consumer",
                          "--consumers", "3", "--duration", "8", "--faults", "kill", "--seed", "3",
                          "--out", str(tmp_path))
    data = summary(tmp_path)
    assert data["run"]["settings"]["consumer"]["group.protocol"] == "consumer"
    assert data["stats"]["throughput"]["poll"]["ok"] > 0, output
    assert all(counts(data)[n] == 0 for n in LOSS), output
    assert code == 0 and data["ok"], output


def test_the_kip848_group_protocol_needs_confluent_and_the_queue_workload() -> None:
    code, output = verify("--client", "kafka-python", "--group-protocol", "consumer")
    assert code == 2 and "classic group protocol" in output
    code, output = verify("--semantics", "exactly-once", "--group-protocol", "consumer")
    assert code == 2 and "queue workload" in output
