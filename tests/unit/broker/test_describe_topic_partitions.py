"""DescribeTopicPartitions (key 75) at the wire: kio request frames into in-process brokers of
one cluster, answers decoded from the bytes they wrote. Pagination with Cursor and
ResponsePartitionLimit, errors, and ISR / ELR / last known ELR as KIP-966's rules move them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kio.schema.describe_topic_partitions.v0.request import Cursor, TopicRequest

from ackly.broker.handlers.describe_topic_partitions import API_KEY
from ackly.errors import ErrorCode

from .core_cluster import CoreCluster
from .test_cluster_core import create

API_VERSIONS = 18


def describe(c: CoreCluster, broker: int, *names: str, limit: int = 2000,
             cursor: tuple[str, int] | None = None) -> Any:
    return c.wait(c.call(
        broker, API_KEY, 0, topics=tuple(TopicRequest(name=n) for n in names),  # type: ignore[arg-type]
        response_partition_limit=limit,
        cursor=None if cursor is None else Cursor(topic_name=cursor[0], partition_index=cursor[1]),  # type: ignore[arg-type]
    ))


def listing(response: Any) -> list[tuple[str, int]]:
    return [(t.name, p.partition_index) for t in response.topics for p in t.partitions]


def cursor_of(response: Any) -> tuple[str, int] | None:
    nc = response.next_cursor
    return None if nc is None else (nc.topic_name, int(nc.partition_index))


def test_api_versions_advertises_it(tmp_path: Path) -> None:
    c = CoreCluster(tmp_path, [1])
    keys = c.wait(c.call(1, API_VERSIONS, 3, client_software_name="t", client_software_version="1")).api_keys
    assert any(k.api_key == API_KEY and (k.min_version, k.max_version) == (0, 0) for k in keys)


def test_pages_follow_the_cursor_across_topics(tmp_path: Path) -> None:
    c = CoreCluster(tmp_path, [1, 2, 3])
    create(c, 1, "b", partitions=3)
    create(c, 1, "a", partitions=2)
    c.settle()
    everything = describe(c, 2)
    assert listing(everything) == [("a", 0), ("a", 1), ("b", 0), ("b", 1), ("b", 2)]
    assert cursor_of(everything) is None
    p0 = everything.topics[0].partitions[0]
    assert p0.error_code == ErrorCode.none and p0.leader_id in (1, 2, 3) and len(p0.isr_nodes) == 3
    assert p0.eligible_leader_replicas == () and p0.last_known_elr == ()
    pages, cursor = [], None
    while True:
        page = describe(c, 2, limit=2, cursor=cursor)
        pages.append(listing(page))
        cursor = cursor_of(page)
        if cursor is None:
            break
    # The limit falls once at a topic's end (the cursor names the next topic's partition 0)
    # and once in the middle of a topic.
    assert pages == [[("a", 0), ("a", 1)], [("b", 0), ("b", 1)], [("b", 2)]]
    named = describe(c, 3, "b", "a", limit=3, cursor=("b", 1))
    assert listing(named) == [("b", 1), ("b", 2)] and cursor_of(named) is None


def test_bad_requests_get_clear_codes(tmp_path: Path) -> None:
    c = CoreCluster(tmp_path, [1])
    create(c, 1, "a", rf=1)
    c.settle()
    missing = describe(c, 1, "a", "nope", "bad/name")
    codes = {t.name: t.error_code for t in missing.topics}
    assert codes == {"a": ErrorCode.none, "nope": ErrorCode.unknown_topic_or_partition,
                     "bad/name": ErrorCode.invalid_topic_exception}
    elsewhere = describe(c, 1, "a", cursor=("other", 0))
    assert [(t.name, t.error_code) for t in elsewhere.topics] == [("a", ErrorCode.invalid_request)]
    zero = describe(c, 1, "a", limit=0)
    assert [(t.name, t.error_code) for t in zero.topics] == [("a", ErrorCode.invalid_request)]


def test_it_shows_the_elr_and_the_last_known_elr_as_replicas_die(tmp_path: Path) -> None:
    c = CoreCluster(tmp_path, [1, 2, 3, 4], props={
        "eligible.leader.replicas.enable": "true", "auto.leader.rebalance.enable": "false",
    })
    # Kafka's flushing: a replica back from an unclean shutdown may have lost records.
    create(c, 1, "e", rf=3, configs={"min.insync.replicas": "2", "flush.policy": "never"})
    c.settle()
    state = c.state("e")
    leader = state.leader
    first, second = (b for b in state.replicas if b != leader)
    observer = next(b for b in (1, 2, 3, 4) if b not in state.replicas)

    def shown() -> tuple[int, tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        (topic,) = describe(c, observer, "e").topics
        (p,) = topic.partitions
        return p.leader_id, tuple(sorted(p.isr_nodes)), tuple(sorted(p.eligible_leader_replicas)), \
            tuple(sorted(p.last_known_elr))

    c.kill(first)
    c.until(lambda: len(c.state("e").isr) == 2)
    assert shown() == (leader, tuple(sorted((leader, second))), (), ())
    stop_cleanly(c, second)  # a rolling restart: logs flushed, clean-shutdown marker written
    c.until(lambda: c.state("e").isr == (leader,))
    assert shown() == (leader, (leader,), (second,), ())
    c.kill(leader)
    c.until(lambda: c.state("e").leader == -1)
    assert shown() == (-1, (), tuple(sorted((leader, second))), ())
    (topic,) = describe(c, observer, "e").topics
    assert topic.partitions[0].error_code == ErrorCode.leader_not_available
    # The last leader comes back from an unclean shutdown: it leaves the ELR, is not elected.
    c.start(leader)
    c.until(lambda: c.state("e").last_known_elr == (leader,))
    assert shown() == (-1, (), (second,), (leader,))
    # The ELR member comes back from its clean stop and is elected.
    c.start(second)
    c.until(lambda: c.state("e").leader == second)
    led, isr, elr, _ = shown()
    assert led == second and second in isr and elr == ()  # (the other one may have rejoined)


def stop_cleanly(c: CoreCluster, broker_id: int) -> None:
    """SIGTERM without the controlled shutdown: leave, then close every log."""
    host = c.hosts[broker_id]
    node = c.node(broker_id)
    node.leave(c.now_ms)
    c.pump()
    node.close()
    c.store.disconnect(host.client)
    host.node = None
