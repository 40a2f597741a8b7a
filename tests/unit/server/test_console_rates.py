"""Traffic rates from samples of the node's per-topic totals."""

from __future__ import annotations

import pytest

from ackly.server.console.rates import WINDOW_S, TrafficRates


def test_a_rate_spans_the_samples_kept_and_old_ones_leave_the_window() -> None:
    rates = TrafficRates()
    assert rates.rates() == {}
    rates.sample(100.0, {"t": (0, 0, 0)})
    assert rates.rates() == {}, "one sample is no rate"
    rates.sample(105.0, {"t": (5000, 50, 1000)})
    rate = rates.rates()["t"]
    assert (rate.bytes_in_per_s, rate.records_in_per_s, rate.bytes_out_per_s, rate.window_s) == (1000, 10, 200, 5)
    for i in range(2, 30):
        rates.sample(100.0 + 5 * i, {"t": (5000 * i, 50 * i, 1000 * i)})
    rate = rates.rates()["t"]
    assert rate.window_s <= WINDOW_S + 5 and rate.records_in_per_s == pytest.approx(10)


def test_a_topic_whose_totals_went_down_has_no_rate_and_a_new_one_counts_from_zero() -> None:
    rates = TrafficRates()
    rates.sample(0.0, {"old": (100, 1, 0)})
    rates.sample(10.0, {"old": (10, 1, 0), "new": (200, 4, 0)})
    found = rates.rates()
    assert "old" not in found and found["new"].bytes_in_per_s == 20
