"""Start a cluster, then create a topic at once: every interleaving answers, with the topic.

A broker serves clients only once it has joined (BrokerNode.joined; the shell waits for it
before it accepts, server/app.py). Before that its Metadata lists no broker and controller -1,
and librdkafka's admin client, told there is no controller, waits for a broker state change
that never comes: its CreateTopics is never sent. These tests drive three brokers starting
from nothing on a virtual clock, one delivery round at a time with the starts staggered by a
seeded PRNG and each broker's store traffic delivered unevenly (so views trail the store and
each other), and play the client at the first round every broker has joined: Metadata from
any broker names a controller, and a CreateTopics with replication factor 3 sent to that
controller is answered, within its timeout, with the topic created (the controller's view may
not show the last registration yet: it catches up with the store before it refuses).
"""

from __future__ import annotations

import datetime
import random
import sys
from pathlib import Path
from typing import Any

import pytest

from ackly.errors import ErrorCode
from ackly.protocol.messages import request_type

from .core_cluster import CoreCluster

METADATA, CREATE_TOPICS = 3, 19
BROKERS = [0, 1, 2]
TIMEOUT_MS = 1_000
MAX_ROUNDS = 200


def _metadata(c: CoreCluster, broker: int) -> Any:
    reply = c.call(broker, METADATA, 12, topics=(), allow_auto_topic_creation=False,
                   include_topic_authorized_operations=False)
    assert reply.done, "Metadata is answered at once"
    return reply.value


def _create_topics(c: CoreCluster, broker: int, name: str) -> Any:
    mod = sys.modules[request_type(CREATE_TOPICS, 7).__module__]
    topic = mod.CreatableTopic(
        name=name, num_partitions=1, replication_factor=3, assignments=(),
        configs=(mod.CreatableTopicConfig(name="min.insync.replicas", value="2"),),
    )
    return c.call(broker, CREATE_TOPICS, 7, topics=(topic,),
                  timeout=datetime.timedelta(milliseconds=TIMEOUT_MS), validate_only=False)


def _uneven_step(c: CoreCluster, rng: random.Random) -> None:
    """One round in which each broker's store answers and watch events arrive only with some
    probability: the brokers' views trail the store, and each other, by different amounts."""
    for b in c.running:
        _, commands = c.node(b).take_outputs()
        for command in commands:
            c.store.submit(c.hosts[b].client, command)
    for b in c.running:
        if rng.random() < 0.5:
            items = c.store.drain(c.hosts[b].client)
            if items:
                c.node(b).on_store_inputs(items, c.now_ms)


def _start_staggered(c: CoreCluster, rng: random.Random) -> list[tuple[int, Any]]:
    """Start the brokers in a random order at random rounds; move one uneven round at a time
    until every broker has joined. Returns the Metadata answers of brokers not joined yet
    (what the shell keeps from clients)."""
    order = rng.sample(BROKERS, len(BROKERS))
    start_round = {b: rng.randrange(0, 6) * i for i, b in enumerate(order)}
    unjoined_answers: list[tuple[int, Any]] = []
    for round_ in range(MAX_ROUNDS):
        for b, at in start_round.items():
            if at == round_:
                c.start(b)
        for b in c.running:
            if not c.node(b).joined and rng.random() < 0.3:
                unjoined_answers.append((b, _metadata(c, b)))
        _uneven_step(c, rng)
        if len(c.running) == len(BROKERS) and all(c.node(b).joined for b in BROKERS):
            return unjoined_answers
    raise AssertionError(f"not every broker joined in {MAX_ROUNDS} rounds")


@pytest.mark.parametrize("seed", range(25))
def test_a_topic_created_as_soon_as_every_broker_serves_is_answered_and_created(
    tmp_path: Path, seed: int,
) -> None:
    rng = random.Random(seed)
    c = CoreCluster(tmp_path, BROKERS, seed=seed, start=False)
    _start_staggered(c, rng)

    # The client: bootstrap from any broker, then send CreateTopics to the controller it names.
    md = _metadata(c, rng.choice(BROKERS))
    assert int(md.controller_id) in BROKERS
    reply = _create_topics(c, int(md.controller_id), "t")
    c.until(lambda: reply.done, limit_ms=TIMEOUT_MS)
    (topic,) = reply.value.topics
    assert (ErrorCode(topic.error_code), topic.error_message) == (ErrorCode.none, None)
    c.until(lambda: c.leader("t") in BROKERS, limit_ms=TIMEOUT_MS)
    assert c.state("t").replicas and sorted(c.state("t").replicas) == BROKERS


def test_a_broker_that_has_not_joined_would_tell_clients_there_is_no_controller(tmp_path: Path) -> None:
    """Why the shell waits for `joined`: before, a broker's Metadata can be the dead end
    librdkafka cannot leave (no broker, controller -1). The staggered starts above do reach it."""
    dead_ends = 0
    for seed in range(10):
        c = CoreCluster(tmp_path / str(seed), BROKERS, seed=seed, start=False)
        answers = _start_staggered(c, random.Random(seed))
        dead_ends += sum(1 for _, md in answers if int(md.controller_id) == -1 and not md.brokers)
    assert dead_ends > 0


def test_metadata_names_this_broker_while_no_controller_is_elected(tmp_path: Path) -> None:
    """Between two controllers (the old one's session has ended, no one has won the campaign
    yet) a registered broker names itself: it takes admin requests itself, and -1 would leave
    librdkafka's admin client waiting."""
    c = CoreCluster(tmp_path, BROKERS)
    controller = int(_metadata(c, 0).controller_id)
    c.kill(controller)  # its lease is revoked: /controller goes with it
    survivors = [b for b in BROKERS if b != controller]
    windows = 0
    for _ in range(MAX_ROUNDS):
        for b in survivors:
            md = _metadata(c, b)
            assert int(md.controller_id) != -1
            if c.node(b).metadata.controller is None:
                windows += 1
                assert int(md.controller_id) == b
        if not c.step():
            break
    assert windows > 0, "the rounds never showed a view without a controller"


def _join_alone(c: CoreCluster, broker: int) -> None:
    """Start `broker` and move only its own store traffic until it has joined: the others'
    views do not show its registration yet (their watch events wait in the store)."""
    c.start(broker)
    host = c.hosts[broker]
    node = c.node(broker)
    for _ in range(MAX_ROUNDS):
        if node.joined:
            return
        _, commands = node.take_outputs()
        for command in commands:
            c.store.submit(host.client, command)
        items = c.store.drain(host.client)
        if items:
            node.on_store_inputs(items, c.now_ms)
    raise AssertionError("the broker did not join")


def test_a_view_that_trails_the_store_is_caught_up_before_refusing_too_few_brokers(tmp_path: Path) -> None:
    c = CoreCluster(tmp_path, BROKERS, start=False)
    c.start(0)
    c.start(1)
    c.settle()
    _join_alone(c, 2)
    controller = int(_metadata(c, 0).controller_id)
    assert 2 not in c.node(controller).metadata.brokers  # the race: its view trails the store
    reply = _create_topics(c, controller, "t")
    c.until(lambda: reply.done, limit_ms=TIMEOUT_MS)
    (topic,) = reply.value.topics
    assert ErrorCode(topic.error_code) == ErrorCode.none, topic.error_message
    c.until(lambda: c.leader("t") in BROKERS, limit_ms=TIMEOUT_MS)


def test_too_few_brokers_is_still_refused_once_the_view_has_caught_up(tmp_path: Path) -> None:
    c = CoreCluster(tmp_path, [0, 1])
    reply = _create_topics(c, 0, "t")  # replication factor 3 on two brokers
    c.until(lambda: reply.done, limit_ms=TIMEOUT_MS)
    (topic,) = reply.value.topics
    assert ErrorCode(topic.error_code) == ErrorCode.invalid_replication_factor
    assert "larger than the 2 available brokers" in topic.error_message
    assert "t" not in c.node(0).metadata.topics
