"""The simulator's own machinery, against a fake node: clock order, FIFO links, faults, the store.

A checker that is wrong about time or order would pass histories it should fail, so the parts
the invariants rely on are tested here on their own: events run in (time, sequence) order,
answers leave a connection in request order and arrive in it, a reset or a partition fails
what is in flight, a paused broker answers nothing until it resumes, watch events keep their
order per watch, and a broker cut from the store loses its watch and then its lease.
"""

from __future__ import annotations

import random
from typing import Any

from ackly.cluster.store import CommandResult, GrantLease, KeepAlive, Put, StoreInput, Watch, WatchCanceled, WatchEvent
from ackly.log.disk import SimDisk
from ackly.protocol.messages import build
from ackly.sim import frames
from ackly.sim.broker import BrokerHost
from ackly.sim.network import Network, NetworkFaults
from ackly.sim.scheduler import Scheduler, Timer
from ackly.sim.store import StoreBridge, StoreFaults
from ackly.types import WallClock

METADATA = 3


class FakeNode:
    """Answers Metadata requests when told to (in any order); records store inputs."""

    def __init__(self, broker_id: int) -> None:
        self.broker_id = broker_id
        self.waiting: list[Any] = []
        self.store_inputs: list[StoreInput] = []
        self.commands: list[Any] = []
        self.has_flush_work = False
        self.log_dir_failure = None

    def handle_frame(self, ctx: Any, frame: bytes) -> None:
        self.waiting.append(ctx)

    def answer(self, order: list[int] | None = None) -> None:
        contexts = self.waiting if order is None else [self.waiting[i] for i in order]
        self.waiting = []
        for ctx in contexts:
            ctx.respond(build(METADATA, ctx.api_version, {"throttle_time": 0, "brokers": [], "topics": [],
                                                          "controller_id": ctx.header.correlation_id}))

    def take_outputs(self) -> tuple[list[Any], list[Any]]:
        commands, self.commands = self.commands, []
        return [], commands

    def on_store_inputs(self, items: list[StoreInput], now_ms: int) -> None:
        self.store_inputs.extend(items)

    def next_deadline_ms(self) -> int | None:
        return None

    def tick(self, now_ms: int) -> None:
        pass

    def take_flush_jobs(self) -> list[Any]:
        return []


class Sink:
    def __init__(self) -> None:
        self.store: StoreBridge | None = None

    def peer_requests(self, host: BrokerHost, requests: list[Any]) -> None:
        raise AssertionError("fake nodes send no peer requests")

    def store_commands(self, host: BrokerHost, commands: list[Any]) -> None:
        assert self.store is not None
        self.store.send(host, commands)

    def log_dir_failed(self, host: BrokerHost) -> None:
        raise AssertionError("fake nodes have no log directory")


def make_world(seed: int = 1, delay_rate: float = 0.5) -> tuple[Scheduler, dict[int, BrokerHost], Network, Sink]:
    scheduler = Scheduler(seed)
    sink = Sink()
    hosts = {
        b: BrokerHost(b, scheduler, random.Random(b), lambda b, disk, now, rng, wall: FakeNode(b), sink, 0)
        for b in (1, 2)
    }
    for host in hosts.values():
        host.start()
    faults = NetworkFaults(latency_ms=1, delay_rate=delay_rate, delay_max_ms=50)
    network = Network(scheduler, random.Random(seed), hosts.get, faults)
    return scheduler, hosts, network, sink


def metadata_request() -> Any:
    return frames.request(METADATA, 12, {"topics": [], "allow_auto_topic_creation": False,
                                         "include_topic_authorized_operations": False})


def run(scheduler: Scheduler, until_ms: int | None = None) -> None:
    while True:
        t = scheduler.next_time_ms()
        if t is None or (until_ms is not None and t > until_ms):
            return
        scheduler.step()


def test_events_run_in_time_then_schedule_order() -> None:
    scheduler = Scheduler(0)
    seen: list[str] = []
    scheduler.at(5, "b", lambda: seen.append("b"))
    scheduler.at(3, "a", lambda: seen.append("a"))
    scheduler.at(5, "c", lambda: seen.append("c"))
    cancelled = scheduler.at(4, "x", lambda: seen.append("x"))
    cancelled.cancel()
    run(scheduler)
    assert seen == ["a", "b", "c"]
    assert scheduler.now_ms == 5 and scheduler.events_run == 3


def test_timer_keeps_one_pending_event() -> None:
    scheduler = Scheduler(0)
    fired: list[int] = []
    timer = Timer(scheduler, "t", lambda: fired.append(scheduler.now_ms))
    timer.set(10)
    timer.set(4)
    timer.set(7)
    run(scheduler)
    assert fired == [7]


def test_answers_arrive_in_request_order_whatever_order_the_node_gives() -> None:
    scheduler, hosts, network, _ = make_world()
    got: list[int] = []
    for _ in range(20):
        network.request("client", 1, metadata_request(), client_id="client", timeout_ms=10_000,
                        on_response=lambda r: got.append(int(r.controller_id)),
                        on_failure=lambda why: got.append(-1))
    run(scheduler, scheduler.now_ms + 200)
    node = hosts[1].node
    assert len(node.waiting) == 20
    node.answer(order=list(reversed(range(20))))
    run(scheduler)
    assert got == list(range(1, 21))


def test_a_partition_fails_requests_by_timeout_and_resets_the_connection() -> None:
    scheduler, hosts, network, _ = make_world(delay_rate=0.0)
    failures: list[str] = []
    network.cut("client", "b1")
    network.request("client", 1, metadata_request(), client_id="client", timeout_ms=500,
                    on_response=lambda r: failures.append("answered?"), on_failure=failures.append)
    run(scheduler)
    assert failures == ["request timed out"]
    assert scheduler.now_ms == 500
    assert hosts[1].node.waiting == []
    assert network.connections() == []


def test_a_killed_broker_fails_what_is_in_flight_and_nothing_reaches_its_successor() -> None:
    scheduler, hosts, network, _ = make_world(delay_rate=0.0)
    outcomes: list[str] = []
    network.request("client", 1, metadata_request(), client_id="client", timeout_ms=5_000,
                    on_response=lambda r: outcomes.append("answered"), on_failure=outcomes.append)
    run(scheduler, scheduler.now_ms + 10)
    old = hosts[1].node
    assert len(old.waiting) == 1
    hosts[1].kill()
    network.drop_endpoint("b1", 1)
    hosts[1].start()
    old.answer()  # a dead process's late answer goes nowhere
    run(scheduler)
    assert outcomes == ["connection reset by peer"]
    assert hosts[1].node.waiting == []


def test_a_paused_broker_answers_after_it_resumes() -> None:
    scheduler, hosts, network, _ = make_world(delay_rate=0.0)
    got: list[Any] = []
    hosts[1].pause()
    network.request("client", 1, metadata_request(), client_id="client", timeout_ms=5_000,
                    on_response=got.append, on_failure=got.append)
    run(scheduler, scheduler.now_ms + 1_000)
    assert hosts[1].node.waiting == [] and got == []
    hosts[1].resume()
    run(scheduler, scheduler.now_ms + 10)
    hosts[1].node.answer()
    run(scheduler)
    assert len(got) == 1 and not isinstance(got[0], str)


def test_inputs_keep_their_order_across_a_pause() -> None:
    """An input arriving right after the resume waits behind those queued during the pause
    (found by seed 9024 with 5 brokers: a registration's put overtook its earlier delete)."""
    scheduler = Scheduler(0)
    host = BrokerHost(1, scheduler, random.Random(0), lambda b, disk, now, rng, wall: FakeNode(b), Sink(), 0)
    host.start()
    seen: list[str] = []
    host.pause()
    host.deliver(host.incarnation, lambda node: seen.append("during pause"))
    scheduler.at(5, "resume", host.resume)
    scheduler.at(5, "late", lambda: host.deliver(host.incarnation, lambda node: seen.append("after resume")))
    run(scheduler)
    assert seen == ["during pause", "after resume"]


def test_watch_events_keep_their_order_under_store_delays() -> None:
    scheduler, hosts, _, sink = make_world()
    store = StoreBridge(scheduler, random.Random(3), hosts.get,
                        StoreFaults(latency_ms=1, delay_rate=0.8, delay_max_ms=200), on_change=lambda: None)
    sink.store = store
    node = hosts[1].node
    node.commands.append(Watch(request_id=1, prefix="/k/", start_revision=0))
    hosts[1].after_input()
    run(scheduler)
    for i in range(30):
        node.commands.append(Put(request_id=100 + i, key=f"/k/{i % 3}", value=str(i).encode()))
    hosts[1].after_input()
    run(scheduler)
    events = [item for item in node.store_inputs if isinstance(item, WatchEvent)]
    assert [e.value for e in events] == [str(i).encode() for i in range(30)]
    revisions = [e.mod_revision for e in events]
    assert revisions == sorted(revisions)
    results = [item.request_id for item in node.store_inputs if isinstance(item, CommandResult)]
    assert sorted(results) == [1, *range(100, 130)]


def test_a_broker_cut_from_the_store_loses_its_watch_then_its_lease() -> None:
    scheduler, hosts, _, sink = make_world(delay_rate=0.0)
    store = StoreBridge(scheduler, random.Random(3), hosts.get, StoreFaults(latency_ms=1), on_change=lambda: None)
    sink.store = store
    node = hosts[1].node
    node.commands += [GrantLease(request_id=1, ttl_ms=1_000), Watch(request_id=2, prefix="/k/")]
    hosts[1].after_input()
    run(scheduler)
    granted = next(i for i in node.store_inputs if isinstance(i, CommandResult) and i.request_id == 1)
    assert granted.ok and granted.lease_id is not None
    store.cut_off(1)
    node.commands.append(KeepAlive(request_id=3, lease_id=granted.lease_id))  # lost
    hosts[1].after_input()
    run(scheduler)
    assert any(isinstance(i, WatchCanceled) and i.watch_id == 2 for i in node.store_inputs)
    assert not any(isinstance(i, CommandResult) and i.request_id == 3 for i in node.store_inputs)
    assert not store.store.lease_alive(granted.lease_id)


def test_kill_crashes_the_disk_and_restart_reuses_it() -> None:
    scheduler = Scheduler(0)
    disks: list[SimDisk] = []

    def factory(broker_id: int, disk: SimDisk, now_ms: int, rng: random.Random, wall_clock: WallClock) -> FakeNode:
        disks.append(disk)
        return FakeNode(broker_id)

    host = BrokerHost(1, scheduler, random.Random(0), factory, Sink(), 0)
    host.start()
    disks[0].makedirs("/d")
    f = disks[0].open("/d/log")
    f.append(b"durable")
    f.flush()
    f.append(b"-lost")
    host.kill()
    host.start()
    assert disks[1] is disks[0]
    data = disks[0].read_file("/d/log")
    assert data is not None and data.startswith(b"durable") and len(data) <= len(b"durable-lost")
    assert host.incarnation == 3
