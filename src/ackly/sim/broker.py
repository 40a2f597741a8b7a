"""One simulated broker process: a BrokerNode incarnation on its SimDisk, run by the simulator.

Owns: the broker's disk (one `SimDisk` for the broker's whole life), the current node object
(None while the process is dead), its incarnation number, its tick timer, its flush in flight,
and the pause backlog. It is the simulator's version of `server/app.py`: after every input it
drains the node's outputs (peer requests, store commands), starts a group flush if one is due
(the job's `run()` is executed by the simulator after a seeded delay) and re-arms the tick.

Lifecycle: `start` builds a node on the disk (recovery runs in the constructor); `kill` drops
the node object and crashes the disk (unflushed bytes vanish, the last write may tear); `stop`
is a clean stop (leave, close every log, no crash); a later `start` is the restart, on the
same disk. A failed fsync or write (`SimDisk.fail_next`) is
handled as `server/app.py` does: the node takes its log directory offline, the host makes it
leave the cluster (lease revoked) and reports `log_dir_failed` to its sink, which stops the
process a little later (it answers KAFKA_STORAGE_ERROR meanwhile). `pause` freezes the process: inputs queue up, timers
and flushes wait, nothing is answered; `resume` replays the backlog in arrival order.

Invariants:
- An input scheduled for incarnation k never reaches incarnation k+1 (`deliver` checks it),
  so nothing from before a crash touches the restarted node or its new file handles.
- While paused the node is not called at all (no tick, no input, no flush completion), and
  inputs reach it in arrival order across a pause: after `resume`, new inputs wait behind the
  backlog.
- At most one group flush is in flight, as in the shell: appends made while it runs wait for
  the next one (group commit).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from typing import Any, Protocol

from ackly.errors import StorageError
from ackly.log.disk import SimDisk
from ackly.sim.scheduler import Event, Scheduler, Timer
from ackly.types import WallClock

NodeInput = Callable[[Any], None]


class NodeFactory(Protocol):
    def __call__(self, broker_id: int, disk: SimDisk, now_ms: int, rng: random.Random,
                 wall_clock: WallClock) -> Any: ...


class OutputSink(Protocol):
    """Where a host's node outputs go (the cluster routes them to the network and the store)."""

    def peer_requests(self, host: BrokerHost, requests: list[Any]) -> None: ...

    def store_commands(self, host: BrokerHost, commands: list[Any]) -> None: ...

    def log_dir_failed(self, host: BrokerHost) -> None:
        """The host's node took its log directory offline and left: stop the process."""
        ...


class BrokerHost:
    def __init__(
        self, broker_id: int, scheduler: Scheduler, rng: random.Random, factory: NodeFactory,
        outputs: OutputSink, flush_delay_max_ms: int, compaction: bool = False,
    ) -> None:
        self.broker_id = broker_id
        self.scheduler = scheduler
        self.rng = rng
        self.factory = factory
        self.outputs = outputs
        self.flush_delay_max_ms = flush_delay_max_ms
        # Directory changes without an fsync survive a crash as a seeded prefix, in order (a
        # journaling file system): the swap of a clean and the other unsynced renames rely on it.
        self.disk = SimDisk(random.Random(rng.getrandbits(64)), ordered_dir_ops=True)
        # No fsync on the event loop: every sync the node makes outside the flush jobs, the
        # cleaner's job and start-up is recorded, and the cluster's checks refuse it.
        self.disk.loop_guard = True
        self.node: Any = None
        self.incarnation = 0
        self.paused = False
        self.kills = 0
        self._backlog: list[NodeInput] = []
        self._flush: Event | None = None
        self.leaving = False  # the node's log directory failed: it left, the process will stop
        self.log_dir_failures = 0
        # The log cleaner, only when the simulation asks for it (it changes the schedule).
        self.compaction = compaction
        self._clean: Event | None = None
        self.cleans = 0
        self._tick = Timer(scheduler, f"tick b{broker_id}", self._on_tick)
        # This machine's wall clock is the virtual (monotonic) one plus this offset, which the
        # "wall-step" fault moves as an NTP step would; it survives restarts, as a clock does.
        self.wall_offset_ms = 0

    def wall_clock(self, now_ms: int) -> int:
        return now_ms + self.wall_offset_ms

    @property
    def running(self) -> bool:
        return self.node is not None

    @property
    def endpoint(self) -> str:
        return f"b{self.broker_id}"

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        assert self.node is None
        self.incarnation += 1
        self.paused = False
        self.leaving = False
        self._backlog.clear()
        with self.disk.off_loop():  # start-up: recovery runs before the broker serves
            self.node = self.factory(
                self.broker_id, self.disk, self.scheduler.now_ms,
                random.Random(self.rng.getrandbits(64)), self.wall_clock,
            )
        self.after_input()

    def stop(self) -> None:
        """A clean stop (SIGTERM without the controlled shutdown): the broker leaves (its lease
        revoked), then closes every log, flushed, with the data directory's clean-shutdown
        marker, as `server/app.py` does; nothing is lost, and the next start is clean."""
        node = self.node
        assert node is not None
        node.leave(self.scheduler.now_ms)
        self.after_input()  # the revocation goes out
        with self.disk.off_loop():  # the shell closes the logs in its worker threads
            node.close()
        self._drop_process()

    def kill(self) -> None:
        """kill -9 plus power loss: the process and everything unflushed are gone."""
        assert self.node is not None
        self._drop_process()
        self.kills += 1
        self.disk.crash()

    def _drop_process(self) -> None:
        self.node = None
        self.incarnation += 1  # nothing scheduled for the dead process may reach the next one
        self.paused = False
        self._backlog.clear()
        self._tick.cancel()
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if self._clean is not None:
            self._clean.cancel()  # its .cleaned files are dropped by the restart's recovery
            self._clean = None

    def pause(self) -> None:
        assert self.node is not None
        self.paused = True
        self._tick.cancel()

    def resume(self) -> None:
        if not self.paused:
            return
        self.paused = False
        self.after_input()
        self._drain_backlog()

    def _drain_backlog(self) -> None:
        """Replay the backlog one input per event, oldest first. Until it is empty, new inputs
        queue behind it: an input that arrives just after the resume must not overtake one
        that arrived during the pause (watch events would apply out of order)."""
        if not self._backlog or self.paused or self.node is None:
            return
        incarnation = self.incarnation

        def replay_one() -> None:
            if incarnation != self.incarnation or self.node is None or self.paused or not self._backlog:
                return
            fn = self._backlog.pop(0)
            with self._syncs_allowed_until_joined():
                fn(self.node)
            self.after_input()
            self._drain_backlog()

        self.scheduler.after(0, f"backlog b{self.broker_id}", replay_one)

    # --- inputs ------------------------------------------------------------------------------

    def deliver(self, incarnation: int, fn: NodeInput) -> None:
        """Run `fn(node)` if incarnation `incarnation` is still the live one (queued while paused)."""
        if incarnation != self.incarnation or self.node is None:
            return
        if self.paused or self._backlog:
            self._backlog.append(fn)
            return
        with self._syncs_allowed_until_joined():
            fn(self.node)
        self.after_input()

    def _syncs_allowed_until_joined(self) -> contextlib.AbstractContextManager[None]:
        """Until the node has joined, its inputs are start-up (the shell serves no client
        before: server/app.py), and the logs it opens may sync what recovery cut."""
        # (A stand-in node of the machinery tests has no `joined`: it always serves.)
        if self.node is not None and not getattr(self.node, "joined", True):
            return self.disk.off_loop()
        return contextlib.nullcontext()

    def _on_tick(self) -> None:
        if self.node is None or self.paused:
            return
        with self._syncs_allowed_until_joined():
            self.node.tick(self.scheduler.now_ms)
        self.after_input(after_tick=True)

    def after_input(self, after_tick: bool = False) -> None:
        """What the shell does after any input: carry outputs, start a flush, re-arm the timer."""
        node = self.node
        if node is None or self.paused:
            return
        peers, commands = node.take_outputs()
        if commands:
            self.outputs.store_commands(self, list(commands))
        if peers:
            self.outputs.peer_requests(self, list(peers))
        if node.log_dir_failure is not None and not self.leaving:
            # What the shell does (server/app.py): leave at once (the revocation goes out with
            # the next outputs), then the process exits.
            self.leaving = True
            self.log_dir_failures += 1
            node.leave(self.scheduler.now_ms)
            self.after_input(after_tick)
            self.outputs.log_dir_failed(self)
            return
        if self._flush is None and node.has_flush_work:
            self._start_flush(node)
        if self.compaction and self._clean is None:
            self._start_clean(node)
        due = node.next_deadline_ms()
        if due is not None:
            now = self.scheduler.now_ms
            # A deadline the tick just ran must not spin the clock: at least 1 ms later.
            due = max(due, now + 1) if after_tick else max(due, now)
        self._tick.set(due)

    def _start_clean(self, node: Any) -> None:
        """The cleaner worker's part runs now (reading the log as it is), and its completion,
        the swap, comes after the flush delay: appends, truncations and crashes in between
        are what the core must cope with."""
        taken = node.take_clean_job(self.scheduler.now_ms)
        if taken is None:
            return
        tp, job = taken
        error: BaseException | None = None
        try:
            with self.disk.off_loop():  # the cleaner thread
                job.run()
        except Exception as exc:  # a failed clean is discarded by the core; the log is kept
            error = exc
        incarnation = self.incarnation

        def done() -> None:
            self.deliver(incarnation, lambda n: self._complete_clean(n, tp, job, error))

        self._clean = self.scheduler.after(self.flush_delay_max_ms, f"clean b{self.broker_id}", done)

    def _complete_clean(self, node: Any, tp: Any, job: Any, error: BaseException | None) -> None:
        self._clean = None
        node.complete_clean(tp, job, error, self.scheduler.now_ms)  # on the loop: no fsync
        if error is None and job.stats is not None:
            self.cleans += 1

    def _start_flush(self, node: Any) -> None:
        jobs = node.take_flush_jobs()
        if not jobs:
            return
        incarnation = self.incarnation
        delay = self.rng.randint(0, self.flush_delay_max_ms) if self.flush_delay_max_ms > 0 else 0

        def done() -> None:
            self.deliver(incarnation, lambda n: self._complete_flush(n, jobs))

        self._flush = self.scheduler.after(delay, f"flush b{self.broker_id}", done)

    def _complete_flush(self, node: Any, jobs: list[Any]) -> None:
        self._flush = None
        try:
            with self.disk.off_loop():  # the shell's sync pool
                for _, job in jobs:
                    job.run()  # fsync: every byte appended to these files so far becomes durable
        except StorageError as exc:
            node.flush_failed(exc, self.scheduler.now_ms)
            return
        node.complete_flush(jobs, self.scheduler.now_ms)
