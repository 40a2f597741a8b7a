"""The entry point: every checker over one history, judged against a semantics."""

from __future__ import annotations

import pytest

from ackly.verify import check as check_module
from ackly.verify.check import CHECKERS, check
from ackly.verify.expectations import ANOMALIES
from ackly.verify.findings import Finding

from .builders import HistoryBuilder


def lossy_history() -> HistoryBuilder:
    h = HistoryBuilder()
    h.send(0, "q/0", 1, 0)
    h.nemesis("kill", [1])
    h.send(0, "q/0", 2, 1)  # acknowledged, then lost
    h.send(1, "q/0", 3, 2, outcome="info")
    h.nemesis("restart", [1])
    h.send(2, "q/0", 4, 1)  # the offset reused
    h.assign(5, ["q/0"])
    h.poll(5, {"q/0": [(0, 1), (1, 4)]})
    return h


def test_every_named_anomaly_has_a_checker() -> None:
    assert set(CHECKERS) == set(ANOMALIES)


def test_clean_history_passes_every_semantics() -> None:
    h = HistoryBuilder()
    h.send(0, "q/0", 1, 0)
    h.send(0, "q/0", 2, 1)
    h.poll(1, {"q/0": [(0, 1), (1, 2)]})
    for semantics in ("at-most-once", "at-least-once", "exactly-once", "exactly-once-sink"):
        result = check(h.history(), semantics)
        assert result.ok, (semantics, result.violations())
        assert result.history_problems == ()


def test_loss_fails_at_least_once_unless_configured_unsafe() -> None:
    history = lossy_history().history()
    result = check(history, "at-least-once")
    assert not result.ok
    assert {j.name for j in result.violations()} == {"lost-write", "inconsistent-offsets"}
    assert result.findings["lost-write"].examples[0].values == (2,)
    assert check(history, "at-most-once").violations()[0].name == "inconsistent-offsets"
    unsafe = check(history, "at-least-once", {"acks": "1"})
    assert unsafe.ok
    statuses = {a["name"]: a["status"] for a in unsafe.to_json()["anomalies"]}
    assert statuses["lost-write"] == "allowed-by-config"
    assert statuses["duplicate"] == "none"


def test_a_checker_that_raises_fails_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(model: object) -> Finding:
        raise RuntimeError("boom")

    monkeypatch.setitem(check_module.CHECKERS, "duplicate", broken)
    result = check(lossy_history().history(), "at-most-once", {"acks": "1"})
    assert not result.ok
    assert "checker-error" in {j.name for j in result.violations()}
    assert "boom" in result.findings["duplicate"].note
