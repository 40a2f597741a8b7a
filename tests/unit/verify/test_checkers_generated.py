"""Generated histories of a correct log pass every checker; one planted fault is caught by name."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ackly.verify.check import check, run_checkers
from ackly.verify.history import Op

from .builders import HistoryBuilder

KEYS = ("q/0", "q/1", "q/2")


def correct_history(sends: list[tuple[int, int]], batch: int, drop: int | None = None) -> list[Op]:
    """Producers send in turn; a reader polls in batches while they run; a final reader reads
    everything. `drop` removes one acknowledged record from every read (a lost write)."""
    h = HistoryBuilder()
    log: dict[str, list[tuple[int, int]]] = {k: [] for k in KEYS}
    positions = dict.fromkeys(KEYS, 0)
    h.assign(100, list(KEYS))
    for n, (producer, key_index) in enumerate(sends):
        key = KEYS[key_index]
        value = n + 1
        h.send(producer, key, value, len(log[key]))
        log[key].append((len(log[key]), value))
        if n % batch == batch - 1:
            reads = {k: [r for r in log[k][positions[k] :] if r[1] != drop] for k in KEYS}
            h.poll(100, {k: v for k, v in reads.items() if v})
            positions = {k: len(log[k]) for k in KEYS}
    h.nemesis("heal")
    h.assign(101, list(KEYS), extra={"final": True})
    h.poll(101, {k: [r for r in log[k] if r[1] != drop] for k in KEYS}, extra={"final": True})
    return h.history()


sends_strategy = st.lists(st.tuples(st.integers(0, 3), st.integers(0, len(KEYS) - 1)), min_size=2, max_size=60)


@settings(max_examples=60)
@given(sends=sends_strategy, batch=st.integers(1, 7))
def test_a_correct_history_passes_exactly_once(sends: list[tuple[int, int]], batch: int) -> None:
    result = check(correct_history(sends, batch), "exactly-once")
    assert result.ok, [(j.name, result.findings[j.name].examples) for j in result.violations()]
    assert result.history_problems == ()


@settings(max_examples=60)
@given(sends=sends_strategy, batch=st.integers(1, 7), pick=st.integers(0, 10_000))
def test_a_dropped_record_is_lost_or_unseen(sends: list[tuple[int, int]], batch: int, pick: int) -> None:
    drop = pick % len(sends) + 1  # values are 1..len(sends)
    counts = {name: f.count for name, f in run_checkers(correct_history(sends, batch, drop)).items()}
    on_key = [n + 1 for n, (_, k) in enumerate(sends) if k == sends[drop - 1][1]]
    if drop == on_key[-1]:
        assert counts["unseen"] == 1 and counts["lost-write"] == 0
    else:
        assert counts["lost-write"] == 1 and counts["unseen"] == 0
        # A reader that started after the hole cannot be said to have skipped it.
        assert counts["poll-skip"] >= (1 if drop != on_key[0] else 0)
    assert counts["duplicate"] == 0 and counts["inconsistent-offsets"] == 0
