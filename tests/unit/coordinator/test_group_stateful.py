"""Random consumers against the group coordinator, with a virtual clock (hypothesis).

Four simulated consumers (two dynamic, two static; JoinGroup versions with and without
KIP-394 and KIP-814) join, sync, heartbeat, commit, leave, crash and come back while time
jumps, commits to the log are held back and released, the log refuses a write (the shard
goes back to what its log holds: runtime.py), and the coordinator restarts from its log.
After every step:
- the groups' own invariants hold (ClassicGroup.check_invariants);
- within one generation no partition is delivered to two members (a static member that
  replaced its old id is the same member: the same instance), and what a member is given
  is exactly what the record of its generation says it has;
- the live generation never goes down while the coordinator runs (except to what the log
  holds, when a refused write reverts the shard), and the generations in the log never go
  down;
- an offset commit is accepted only from a member of the current generation (or group-less
  while the group has no members): a stale generation's commit is refused;
- rebuilding the coordinator from the log gives the same groups and offsets (replay
  equivalence);
- no request is answered twice; at the end, after every timeout has passed, every request
  made since the last restart has been answered.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ackly.coordinator.group import COMPLETING, EMPTY, ClassicGroup, JoinResult, SyncResult
from ackly.coordinator.records import GroupMetadataKey, decode_group_metadata_value, decode_key
from ackly.errors import ErrorCode
from ackly.protocol.record_codec import decode_batch

from .helpers import GROUP, Box, Harness, durable_view
from .txn_helpers import FailingLog

E = ErrorCode
PARTITIONS = 6
SESSION_MS = 10_000
REBALANCE_MS = 20_000


@dataclass
class Client:
    name: str
    instance_id: str | None
    version: int
    member_id: str = ""
    generation: int = -1
    join_box: Box | None = None
    sync_box: Box | None = None
    joined: JoinResult | None = None
    assignment: frozenset[int] | None = None
    fenced: bool = False
    rejoin_now: bool = False
    sync_sent_as: tuple[str, int] = ("", -1)  # (member id, generation) of the SyncGroup in flight

    def reset(self) -> None:
        self.member_id, self.generation = "", -1
        self.joined = None
        self.assignment = None


@dataclass
class Delivered:
    """generation -> owner -> partitions delivered by SyncGroup."""

    by_generation: dict[int, dict[str, frozenset[int]]] = field(default_factory=dict)

    def add(self, generation: int, owner: str, partitions: frozenset[int]) -> None:
        owners = self.by_generation.setdefault(generation, {})
        for other, theirs in owners.items():
            assert other == owner or not (theirs & partitions), (
                f"generation {generation}: {sorted(theirs & partitions)} delivered to both "
                f"{other} and {owner}")
        owners[owner] = partitions


def encode_assignment(partitions: list[int]) -> bytes:
    return bytes(sorted(partitions))


class GroupMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        logs = [FailingLog(i) for i in range(2)]
        for log in logs:
            log.code = E.not_enough_replicas
        self.h = Harness(logs=list(logs))
        self.clients = [
            Client("d1", None, 9), Client("d2", None, 3),
            Client("s1", "i1", 9), Client("s2", "i2", 5),
        ]
        self.delivered = Delivered()
        self.boxes: list[Box] = []  # every request of this coordinator's lifetime
        self.max_generation = 0

    # --- helpers -------------------------------------------------------------------------------

    def group(self) -> ClassicGroup | None:
        group: ClassicGroup | None = self.h.shard().groups.get(GROUP)
        return group

    def recorded_assignments(self) -> dict[tuple[int, str], bytes]:
        """(generation, member id) -> assignment, from every group record in the log."""
        out: dict[tuple[int, str], bytes] = {}
        for log in self.h.logs:
            for batch in log.batches:
                for record in decode_batch(batch)[1]:
                    assert record.key is not None
                    if isinstance(decode_key(record.key), GroupMetadataKey) and record.value:
                        value = decode_group_metadata_value(record.value)
                        for m in value.members:
                            out[(value.generation, m.member_id)] = m.assignment
        return out

    def box(self, box: Box) -> Box:
        self.boxes.append(box)
        return box

    def absorb(self) -> None:
        """Clients read whatever answers arrived."""
        for c in self.clients:
            if c.join_box is not None and c.join_box.done:
                self.on_join(c, c.join_box.value)
                c.join_box = None
            if c.sync_box is not None and c.sync_box.done:
                self.on_sync(c, c.sync_box.value)
                c.sync_box = None

    def on_join(self, c: Client, result: JoinResult | tuple[str, ErrorCode]) -> None:
        if isinstance(result, tuple):  # the write timed out: find the coordinator, rejoin
            return
        if result.error is E.none:
            c.member_id, c.generation, c.joined = result.member_id, result.generation, result
            c.assignment = None
        elif result.error is E.member_id_required:
            c.member_id = result.member_id
            c.rejoin_now = True  # clients send the second JoinGroup at once (KIP-394)
        elif result.error is E.fenced_instance_id:
            c.fenced = True  # a fenced static member stops (as real clients do)
        elif result.error in (E.unknown_member_id, E.illegal_generation):
            c.reset()

    def on_sync(self, c: Client, result: SyncResult | tuple[str, ErrorCode]) -> None:
        if isinstance(result, tuple):
            return
        if result.error is E.none:
            member_id, generation = c.sync_sent_as
            partitions = frozenset(result.assignment)
            self.delivered.add(generation, c.instance_id or member_id, partitions)
            # What a member is given is what its generation's record says it has.
            recorded = self.recorded_assignments().get((generation, member_id))
            assert recorded == result.assignment, (
                f"{c.name} got {result.assignment!r} for generation {generation}; "
                f"the record says {recorded!r}")
            if (member_id, generation) == (c.member_id, c.generation):
                c.assignment = partitions
        elif result.error is E.fenced_instance_id:
            c.fenced = True
        elif result.error in (E.unknown_member_id, E.illegal_generation):
            c.reset()

    def on_heartbeat(self, c: Client, error: ErrorCode) -> None:
        if error is E.fenced_instance_id:
            c.fenced = True
        elif error in (E.unknown_member_id, E.illegal_generation):
            c.reset()
        elif error is E.rebalance_in_progress:
            c.joined = None

    # --- rules ---------------------------------------------------------------------------------

    clients_idx = st.integers(0, 3)

    def _act(self, i: int) -> None:
        """What a live consumer does next: join, sync, or heartbeat."""
        c = self.clients[i]
        if c.join_box is not None or c.sync_box is not None:
            self.h.advance(0)
            self.absorb()
        elif c.joined is None:
            self.join(i)
        elif c.assignment is None:
            self.sync(i)
        else:
            self.heartbeat(i)

    # Progress is likely only if consumers mostly behave: two rules for it.
    @rule(i=clients_idx)
    def act(self, i: int) -> None:
        self._act(i)

    @rule(i=clients_idx)
    def act_again(self, i: int) -> None:
        self._act(i)

    @rule(rounds=st.integers(1, 4))
    def everyone_acts(self, rounds: int) -> None:
        for _ in range(rounds):
            for i in range(len(self.clients)):
                self._act(i)

    @rule(i=clients_idx)
    def join(self, i: int) -> None:
        c = self.clients[i]
        if c.fenced or c.join_box is not None or c.sync_box is not None:
            return
        c.join_box = self.box(self.h.join(
            c.member_id, instance_id=c.instance_id, client_id=c.name, version=c.version,
            session_ms=SESSION_MS, rebalance_ms=REBALANCE_MS))
        self.absorb()
        if c.rejoin_now:
            c.rejoin_now = False
            self.join(i)

    @rule(i=clients_idx)
    def sync(self, i: int) -> None:
        c = self.clients[i]
        joined = c.joined
        if c.fenced or joined is None or c.sync_box is not None or c.join_box is not None:
            return
        assignments = {}
        if joined.leader == c.member_id and not joined.skip_assignment:
            # Round robin, rotated by generation: what a member holds differs from one
            # generation to the next, so an assignment served under the wrong one shows.
            members = [m.member_id for m in joined.members]
            for k, m in enumerate(members):
                assignments[m] = encode_assignment(
                    [p for p in range(PARTITIONS) if (p + c.generation) % len(members) == k])
        c.sync_sent_as = (c.member_id, c.generation)
        c.sync_box = self.box(self.h.sync(c.member_id, c.generation, assignments,
                                          instance_id=c.instance_id))
        self.absorb()

    @rule(i=clients_idx, delta=st.sampled_from([-1, 1]))
    def sync_with_wrong_generation(self, i: int, delta: int) -> None:
        """A confused or delayed client: SyncGroup for a generation that is not the group's
        must never get an assignment."""
        c = self.clients[i]
        if not c.member_id or c.generation < 0:
            return
        group = self.group()
        generation = c.generation + delta
        box = self.box(self.h.sync(c.member_id, generation, {}, instance_id=c.instance_id))
        answered = box.done and not isinstance(box.value, tuple)
        if group is not None and generation != group.generation and answered:
            assert box.value.error is not E.none, (
                f"sync for generation {generation} answered in generation {group.generation}")
        self.absorb()

    @rule(i=clients_idx)
    def heartbeat(self, i: int) -> None:
        c = self.clients[i]
        if c.fenced or not c.member_id or c.generation < 0:
            return
        box = self.box(Box())
        self.h.coordinator.heartbeat(GROUP, c.member_id, c.instance_id, c.generation, box,
                                     self.h.now_ms)
        if box.done and not isinstance(box.value, tuple):
            self.on_heartbeat(c, box.value)
        self.absorb()

    @rule(i=clients_idx, offset=st.integers(0, 1000), groupless=st.booleans())
    def commit(self, i: int, offset: int, groupless: bool) -> None:
        c = self.clients[i]
        member_id, generation = ("", -1) if groupless else (c.member_id, c.generation)
        instance_id = None if groupless else c.instance_id
        group = self.group()
        before = None if group is None else (group.state, group.generation,
                                             member_id in group.members)
        box = self.box(self.h.commit(member_id, generation, {("t", offset % PARTITIONS): offset},
                                     instance_id=instance_id))
        if not box.done or isinstance(box.value, tuple):
            return
        (error,) = box.value
        if error is E.none:
            # docs/guarantees.md rule 24: only the current generation's members (or nobody, while
            # the group is empty) may commit.
            if generation < 0:
                assert before is None or before[0] is EMPTY, f"group-less commit accepted in {before}"
            else:
                assert before is not None and before[1] == generation and before[2], (
                    f"commit of {member_id} generation {generation} accepted in {before}")
                assert before[0] is not COMPLETING
        elif before is not None and generation >= 0 and generation != before[1] and before[2]:
            assert error is E.illegal_generation, error

    @rule(i=clients_idx)
    def leave(self, i: int) -> None:
        c = self.clients[i]
        if c.fenced or not c.member_id:
            return
        box = self.box(Box())
        self.h.coordinator.leave_group(GROUP, [(c.member_id, c.instance_id)], box, self.h.now_ms)
        c.reset()
        c.join_box = c.sync_box = None  # it stops reading the answers to what it sent before
        self.absorb()

    @rule(i=clients_idx)
    def crash(self, i: int) -> None:
        """The process dies: no LeaveGroup; its requests in flight go unread."""
        c = self.clients[i]
        c.reset()
        c.join_box = c.sync_box = None
        c.fenced = False

    @rule(ms=st.sampled_from([0, 1, 500, 3_000, 9_999, 10_001, 20_000]))
    def advance(self, ms: int) -> None:
        self.h.advance(ms)
        self.absorb()

    @rule()
    def hold_log_commits(self) -> None:
        for log in self.h.logs:
            log.auto_commit = False

    @rule()
    def refuse_the_next_write(self) -> None:
        """`__consumer_offsets` falls below min ISR for one append: whichever op writes next
        is refused and the shard reverts to its log."""
        for log in self._failing_logs():
            log.failures = 1

    def _failing_logs(self) -> list[FailingLog]:
        return [log for log in self.h.logs if isinstance(log, FailingLog)]

    @rule()
    def release_log_commits(self) -> None:
        for log in self.h.logs:
            log.auto_commit = True
            log.commit()
        self.h.settle()
        self.absorb()

    @precondition(lambda self: len(self.h.logs[0].batches) + len(self.h.logs[1].batches) < 400)
    @rule()
    def restart(self) -> None:
        """The broker restarts: connections drop (clients forget what they were waiting for)
        and the coordinator reloads from the log."""
        self.release_log_commits()
        self.h = self.h.reopened()
        self.boxes = []
        self.max_generation = 0
        for c in self.clients:
            c.join_box = c.sync_box = None

    # --- invariants ----------------------------------------------------------------------------

    @invariant()
    def groups_are_consistent(self) -> None:
        self.h.check()
        for box in self.boxes:
            assert len(box.answers) <= 1, f"answered twice: {box.answers}"

    @invariant()
    def generations_never_go_down(self) -> None:
        group = self.group()
        if any(log.failures == 0 and log.refused for log in self._failing_logs()):
            # A refused write reverted the shard: the generation is the log's again.
            self.max_generation = 0
            for log in self._failing_logs():
                log.refused = False
        if group is not None:
            assert group.generation >= self.max_generation
            self.max_generation = group.generation
        generations = []
        for log in self.h.logs:
            for batch in log.batches:
                for record in decode_batch(batch)[1]:
                    assert record.key is not None
                    if isinstance(decode_key(record.key), GroupMetadataKey) and record.value:
                        generations.append(decode_group_metadata_value(record.value).generation)
        assert generations == sorted(generations), generations

    @invariant()
    def replay_gives_the_same_state(self) -> None:
        assert durable_view(self.h.reopened()) == durable_view(self.h)

    def teardown(self) -> None:
        """Let every timeout pass: every request of this lifetime gets its one answer."""
        self.release_log_commits()
        for _ in range(4):
            self.h.advance(REBALANCE_MS + SESSION_MS)
        unanswered = [b for b in self.boxes if len(b.answers) != 1]
        assert not unanswered, f"{len(unanswered)} requests without exactly one answer"
        self.h.check()


GroupMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
test_group_state_machine = GroupMachine.TestCase
