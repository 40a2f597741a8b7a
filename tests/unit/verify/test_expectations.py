"""The s.7 table: which anomalies each semantics (and an unsafe configuration) allows."""

from __future__ import annotations

import pytest

from ackly.verify.expectations import ANOMALIES, allowed_by_config, judge, verdict


def test_at_most_once_may_lose_but_never_duplicate() -> None:
    assert verdict("at-most-once", {"lost-write": 3, "unseen": 2})
    assert not verdict("at-most-once", {"duplicate": 1})


def test_at_least_once_may_duplicate_but_never_lose() -> None:
    assert verdict("at-least-once", {"duplicate": 4})
    assert not verdict("at-least-once", {"lost-write": 1})
    assert not verdict("at-least-once", {"unseen": 1})


@pytest.mark.parametrize("semantics", ["exactly-once", "exactly-once-sink"])
def test_exactly_once_allows_none(semantics: str) -> None:
    for name in ANOMALIES:
        if name in ("int-send-skip", "G0"):
            assert verdict(semantics, {name: 1})
        else:
            assert not verdict(semantics, {name: 1}), name


def test_unsafe_settings_allow_loss_by_configuration() -> None:
    config = {"topic.unclean.leader.election.enable": "true"}
    assert not verdict("at-least-once", {"lost-write": 1})
    assert verdict("at-least-once", {"lost-write": 1, "inconsistent-offsets": 1}, config)
    lost = next(j for j in judge("exactly-once", {"lost-write": 2}, {"acks": "1"}) if j.name == "lost-write")
    assert lost.status == "allowed-by-config" and "acks" in lost.reason
    assert "lost-write" not in allowed_by_config({"acks": "-1", "min.insync.replicas": "2"})
    assert not verdict("exactly-once", {"duplicate": 1}, {"acks": "1"})


def test_judge_lists_every_anomaly_and_refuses_unknown_semantics() -> None:
    judgements = judge("exactly-once", {"checker-error": 1})
    assert [j.name for j in judgements][: len(ANOMALIES)] == list(ANOMALIES)
    assert judgements[-1].name == "checker-error" and judgements[-1].failed
    with pytest.raises(ValueError):
        judge("maybe-once", {})


def test_every_anomaly_has_a_meaning() -> None:
    from ackly.verify.expectations import MEANING

    assert set(MEANING) == set(ANOMALIES)


def test_a_log_that_may_lose_its_tail_allows_the_consumer_rewind_that_follows() -> None:
    # The lost tail's offsets are reused; a consumer past the new end is reset back by
    # auto.offset.reset after OFFSET_OUT_OF_RANGE.
    counts = {"unseen": 5, "inconsistent-offsets": 5, "nonmonotonic-poll": 1}
    assert verdict("at-least-once", counts, {"flush.policy": "never"})
    assert not verdict("at-least-once", counts)
    assert not verdict("at-least-once", {"nonmonotonic-poll": 1}, {"flush.policy": "always"})
    # Kafka's flush.messages=1 is flush.policy=always: no acknowledged tail may go.
    assert not verdict("at-least-once", counts, {"flush.policy": "never", "flush.messages": "1"})
