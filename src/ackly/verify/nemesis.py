"""The nemesis: a seeded fault schedule, and the faults it injects into a running cluster.

`plan(seed, faults, duration_s, brokers, partitions)` is a pure function: the same arguments
give the same schedule (a list of `FaultEvent`s), so `--seed` replays the schedule even though
the outcome of a real run is not replayable. A schedule alternates a fault window and a quiet
window; a fault window injects one fault and undoes it at its end. It ends early enough to
leave the final healing phase (`Nemesis.heal`) its share of the run.

Faults (`FAULT_KINDS`), each on one broker:
- kill: SIGKILL, restarted (same port and data) when the window ends;
- lose-unflushed: a power loss: SIGKILL, then every log file of the broker is cut back to the
  length its last completed fsync covered (recorded by the test launcher,
  testing/flushed_lengths.py), restarted when the window ends; recovery must cope, and with
  flush.policy=always no acknowledged record may go;
- disk-error: the broker's next fsync of a log file fails with EIO (the test launcher's
  disk fault, testing/disk_faults.py; the pages of the failed fsync are lost when the process
  exits). The broker must take its log directory offline, acknowledge nothing more, leave the
  cluster and exit; it is started again when the window ends (if it never fsynced meanwhile,
  the armed failure is withdrawn instead);
- pause: SIGSTOP, SIGCONT when the window ends (alive but silent, like a long GC pause);
- partition: the broker is cut off from the other brokers and from etcd: no replica fetch
  reaches it (every connection through the inter-broker fault proxy is reset) and its etcd
  connection (a TCP relay) is cut. Its own fetches from the others still pass (an asymmetric
  cut), and clients still reach it: a deposed leader keeps taking writes (split brain);
- client-partition: clients cannot reach the broker (every request through the client fault
  proxy is reset); the brokers still can;
- reset: every client connection is reset once, then requests to the broker are reset after
  the broker handled them with probability 0.1 (the client cannot tell whether they happened);
- drop: Produce and Fetch responses from the broker are swallowed with probability 0.2 (the
  connection then closes).
A kind may carry the suffix `-leader` (e.g. `kill-leader`): the target is then the leader of
one of the workload's partitions when the fault starts; otherwise the schedule draws either
a broker id or "leader". Faults on processes (kill, lose-unflushed, disk-error, pause, partition) need a cluster that
verify started itself; against `--bootstrap` only the proxy faults apply.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ackly.verify.history import NEMESIS, Recorder

log = logging.getLogger("ackly.verify.nemesis")

PROCESS_FAULTS = ("kill", "lose-unflushed", "disk-error", "pause", "partition")
PROXY_FAULTS = ("client-partition", "reset", "drop")
BASE_KINDS = PROCESS_FAULTS + PROXY_FAULTS
FAULT_KINDS: tuple[str, ...] = BASE_KINDS + tuple(f"{k}-leader" for k in BASE_KINDS)
# What each fault is undone by, as recorded in the history.
UNDO = {
    "kill": "restart",
    "lose-unflushed": "restart",
    "disk-error": "restart",
    "pause": "resume",
    "partition": "heal",
    "client-partition": "heal",
    "reset": "heal",
    "drop": "heal",
}
RESET_PROBABILITY = 0.1
DROP_PROBABILITY = 0.2
DROP_APIS = (0, 1)  # Produce, Fetch
# A partition shorter than a broker session (3 s in verify's own cluster) plus an election
# changes nothing but latency: it must outlast them to depose a leader.
MIN_WINDOW_S = {"partition": 5.0}
DEFAULT_MIN_WINDOW_S = 1.5


@dataclass(frozen=True)
class FaultEvent:
    """One fault window: `kind` on `target` from `start_s` (since the workload began) for
    `duration_s`. target: "broker:N", or "leader:P" (the leader of partition P at start)."""

    start_s: float
    kind: str
    target: str
    duration_s: float
    seed: int  # for the fault's own random draws (probabilistic proxy rules)

    def to_json(self) -> dict[str, Any]:
        return {
            "start_s": round(self.start_s, 3),
            "kind": self.kind,
            "target": self.target,
            "duration_s": round(self.duration_s, 3),
            "seed": self.seed,
        }


def parse_faults(text: str) -> tuple[str, ...]:
    """`kill,partition,pause` -> kinds; "" or "none" -> no faults; ValueError for unknown ones."""
    if text.strip() in ("", "none"):
        return ()
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown:
        raise ValueError(f"unknown fault {', '.join(unknown)}; known: {', '.join(FAULT_KINDS)}")
    return kinds


def base_kind(kind: str) -> str:
    return kind.removesuffix("-leader")


def plan(
    seed: int, faults: Sequence[str], duration_s: float, brokers: int, partitions: int, *, heal_share: float = 0.25
) -> list[FaultEvent]:
    """The fault schedule of a run (pure: same arguments, same schedule).

    A fault lasts 2-8 s (at most 30% of the run, at least `MIN_WINDOW_S` of its kind), a quiet
    window 1-4 s (at most 10% of the run, at least 0.5 s). Nothing starts after `(1 - heal_share) * duration_s`.
    """
    assert brokers >= 1 and partitions >= 1
    if not faults:
        return []
    rng = random.Random(seed)
    end_s = duration_s * (1.0 - heal_share)
    events: list[FaultEvent] = []
    t = min(rng.uniform(0.5, 2.0), 0.1 * duration_s)
    while len(events) < 1000:
        kind = rng.choice(list(faults))
        shortest_s = MIN_WINDOW_S.get(base_kind(kind), DEFAULT_MIN_WINDOW_S)
        length = max(shortest_s, min(rng.uniform(2.0, 8.0), 0.3 * duration_s))
        if t + length > end_s and events:
            break
        length = min(length, max(0.5, end_s - t))
        if kind.endswith("-leader") or rng.random() < 0.5:
            target = f"leader:{rng.randrange(partitions)}"
        else:
            target = f"broker:{rng.randrange(brokers)}"
        events.append(FaultEvent(t, kind, target, length, rng.getrandbits(32)))
        t += length + min(rng.uniform(1.0, 4.0), max(0.5, 0.1 * duration_s))
        if t >= end_s:
            break
    return events


class FaultTarget(Protocol):
    """What the nemesis acts on: verify's own cluster, or a cluster it only reaches by proxy."""

    processes: bool  # can it kill, pause and partition brokers?

    def broker_ids(self) -> list[int]: ...
    def leader_of(self, partition: int) -> int | None: ...
    def kill(self, broker_id: int) -> None: ...
    def lose_unflushed(self, broker_id: int) -> int:
        """Kill the broker and drop its unflushed bytes; returns how many bytes went."""
        ...
    def restart(self, broker_id: int) -> None: ...
    def fail_disk(self, broker_id: int) -> None:
        """Make the broker's next fsync of a log file fail (EIO)."""
        ...
    def end_disk_error(self, broker_id: int) -> None:
        """Start the broker again if its disk error stopped it; else withdraw the failure."""
        ...
    def pause(self, broker_id: int) -> None: ...
    def resume(self, broker_id: int) -> None: ...
    def isolate(self, broker_id: int) -> None: ...
    def reconnect(self, broker_id: int) -> None: ...
    def client_rule(self, broker_id: int, action: str, **kwargs: Any) -> object: ...
    def remove_client_rules(self, rules: Sequence[object]) -> None: ...
    def reset_clients(self) -> None: ...
    def wait_healthy(self, timeout_s: float) -> bool: ...


class Nemesis:
    """Runs a schedule against a `FaultTarget` on its own thread, recording every action."""

    def __init__(
        self,
        recorder: Recorder,
        target: FaultTarget,
        schedule: Sequence[FaultEvent],
        *,
        clock_s: Callable[[], float],
        on_action: Callable[[str], None] | None = None,
    ) -> None:
        self.recorder = recorder
        self.target = target
        self.schedule = list(schedule)
        self.clock_s = clock_s
        self.on_action = on_action or (lambda _line: None)
        self.stop_event = threading.Event()
        self.injected = 0
        self.errors: list[str] = []
        self._active: list[tuple[str, int, list[object]]] = []  # (kind, broker, proxy rules)
        self._thread: threading.Thread | None = None

    def start(self, start_s: float) -> None:
        self._thread = threading.Thread(target=self._run, args=(start_s,), name="verify-nemesis", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(60)

    def _wait_until(self, at_s: float) -> bool:
        """Sleep until `at_s` on the run's clock; False if stopped first."""
        delay = at_s - self.clock_s()
        return not self.stop_event.wait(delay) if delay > 0 else not self.stop_event.is_set()

    def _run(self, start_s: float) -> None:
        for event in self.schedule:
            if not self._wait_until(start_s + event.start_s):
                return
            try:
                self._inject(event)
            except Exception as exc:  # a fault that cannot be injected is reported, not fatal
                self.errors.append(f"{event.kind} {event.target}: {exc!r}")
                log.warning("fault %s on %s failed: %r", event.kind, event.target, exc)
            if not self._wait_until(start_s + event.start_s + event.duration_s):
                return
            self._undo_all()

    def _resolve(self, target: str) -> int:
        what, _, number = target.partition(":")
        if what == "leader":
            leader = self.target.leader_of(int(number))
            if leader is not None and leader >= 0:
                return leader
        ids = self.target.broker_ids()  # a broker by number, or when the partition has no leader
        return ids[int(number) % len(ids)]

    def _inject(self, event: FaultEvent) -> None:
        kind = base_kind(event.kind)
        broker = self._resolve(event.target)
        if kind in PROCESS_FAULTS and not self.target.processes:
            raise RuntimeError(f"{kind} needs a cluster that verify started (not --bootstrap)")
        value = {"targets": [broker], "target": event.target, "duration_s": round(event.duration_s, 3)}
        op = self.recorder.invoke(NEMESIS, kind, value)
        rules: list[object] = []
        try:
            detail = ""
            if kind == "kill":
                self.target.kill(broker)
            elif kind == "lose-unflushed":
                detail = f", {self.target.lose_unflushed(broker)} unflushed bytes dropped"
            elif kind == "disk-error":
                self.target.fail_disk(broker)
            elif kind == "pause":
                self.target.pause(broker)
            elif kind == "partition":
                self.target.isolate(broker)
            elif kind == "client-partition":
                rules.append(self.target.client_rule(broker, "reset"))
                self.target.reset_clients()
            elif kind == "reset":
                self.target.reset_clients()
                rules.append(
                    self.target.client_rule(
                        broker,
                        "reset",
                        when="after_request",
                        probability=RESET_PROBABILITY,
                        rng=random.Random(event.seed),
                    )
                )
            elif kind == "drop":
                rng = random.Random(event.seed)
                for api_key in DROP_APIS:
                    rules.append(
                        self.target.client_rule(
                            broker, "drop_response", api_key=api_key, probability=DROP_PROBABILITY, rng=rng
                        )
                    )
            else:
                raise AssertionError(kind)
        except Exception as exc:
            self.recorder.complete(op, "info", error=repr(exc))
            raise
        self._active.append((kind, broker, rules))
        self.injected += 1
        self.recorder.complete(op, "ok")
        self.on_action(f"{kind} broker {broker} ({event.target}) for {event.duration_s:.1f} s{detail}")

    def _undo_all(self) -> None:
        while self._active:
            kind, broker, rules = self._active.pop()
            undo = UNDO[kind]
            op = self.recorder.invoke(NEMESIS, undo, {"targets": [broker], "undoes": kind})
            try:
                if kind in ("kill", "lose-unflushed"):
                    self.target.restart(broker)
                elif kind == "disk-error":
                    self.target.end_disk_error(broker)
                elif kind == "pause":
                    self.target.resume(broker)
                elif kind == "partition":
                    self.target.reconnect(broker)
                else:
                    self.target.remove_client_rules(rules)
            except Exception as exc:
                self.recorder.complete(op, "info", error=repr(exc))
                self.errors.append(f"{undo} broker {broker}: {exc!r}")
                continue
            self.recorder.complete(op, "ok")
            self.on_action(f"{undo} broker {broker}")

    def heal(self, timeout_s: float) -> bool:
        """The final healing phase: stop the schedule, undo every fault, and wait (bounded) for
        the cluster to be whole again. True if it is."""
        self.stop()
        self._undo_all()
        op = self.recorder.invoke(NEMESIS, "heal", {"targets": self.target.broker_ids(), "final": True})
        healthy = False
        with contextlib.suppress(Exception):
            healthy = self.target.wait_healthy(timeout_s)
        self.recorder.complete(
            op, "ok" if healthy else "info", error=None if healthy else "cluster not whole after healing"
        )
        return healthy
