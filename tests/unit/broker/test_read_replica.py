"""Fetching from the closest replica (KIP-392) across BrokerNodes on a virtual clock: brokers in
racks a, b and c, the rack-aware selector on; a consumer naming its rack is sent by the leader
to the in-sync follower of that rack and served there up to the follower's HW; the leader
serves it when it shares the rack, when no in-sync follower is there, or when no selector is
configured; older fetch versions are served by the leader only."""

from __future__ import annotations

import datetime
import sys
from pathlib import Path
from typing import Any

import pytest

from ackly.config import RACK_AWARE_REPLICA_SELECTOR, BrokerConfig
from ackly.errors import ConfigError, ErrorCode
from ackly.protocol.messages import request_type
from ackly.protocol.record_codec import decode_batch
from ackly.protocol.records import iter_batches

from .core_cluster import CoreCluster, batch
from .test_cluster_core import create, produce, result

FETCH = 1
RACKS = {1: "a", 2: "b", 3: "c"}


def _cluster(tmp_path: Path, selector: str = RACK_AWARE_REPLICA_SELECTOR) -> CoreCluster:
    c = CoreCluster(tmp_path, [1, 2, 3], props={"replica.selector.class": selector},
                    broker_props={b: {"broker.rack": rack} for b, rack in RACKS.items()})
    assert create(c, 1, "t").topics[0].error_code == ErrorCode.none
    c.settle()
    return c


def fetch(c: CoreCluster, broker: int, rack: str = "", version: int = 12, offset: int = 0,
          leader_epoch: int = -1, isolation_level: int = 0) -> Any:
    mod = sys.modules[request_type(FETCH, version).__module__]
    fields: dict[str, Any] = {"rack_id": rack} if version >= 11 else {}
    reply = c.call(broker, FETCH, version, replica_id=-1, max_wait=datetime.timedelta(0),
                   min_bytes=0, max_bytes=1 << 20, isolation_level=isolation_level, session_id=0,
                   session_epoch=-1, forgotten_topics_data=(), **fields,
                   topics=(mod.FetchTopic(topic="t", partitions=(mod.FetchPartition(
                       partition=0, current_leader_epoch=leader_epoch, fetch_offset=offset,
                       log_start_offset=-1, partition_max_bytes=1 << 20),)),))
    (t,) = c.wait(reply).responses
    (p,) = t.partitions
    return p


def values(data: Any) -> list[bytes]:
    out: list[bytes] = []
    for pos, header in iter_batches(data.records or b""):
        out += [r.value or b"" for r in decode_batch(data.records[pos: pos + header.size])[1]]
    return out


def _committed(c: CoreCluster, *items: bytes) -> int:
    leader = c.leader("t")
    for item in items:
        assert result(c.wait(produce(c, leader, "t", batch(item))))[0] == ErrorCode.none
    c.settle()  # the followers learn the new HW with their next fetch
    return leader


def test_the_leader_sends_a_consumer_to_the_in_sync_follower_of_its_rack(tmp_path: Path) -> None:
    c = _cluster(tmp_path)
    leader = _committed(c, b"one", b"two")
    follower = next(b for b in (1, 2, 3) if b != leader)

    redirected = fetch(c, leader, rack=RACKS[follower])
    assert redirected.error_code == ErrorCode.none
    assert redirected.preferred_read_replica == follower
    assert values(redirected) == [], "a redirect carries no records"
    assert redirected.high_watermark == 2

    served = fetch(c, follower, rack=RACKS[follower])
    assert served.error_code == ErrorCode.none and served.preferred_read_replica == -1
    assert values(served) == [b"one", b"two"]
    assert served.high_watermark == 2
    assert c.node(follower).stats.topic("t").bytes_out > 0


def test_the_leader_serves_its_own_rack_an_unknown_rack_and_no_rack(tmp_path: Path) -> None:
    c = _cluster(tmp_path)
    leader = _committed(c, b"one")
    for rack in (RACKS[leader], "elsewhere", ""):
        data = fetch(c, leader, rack=rack)
        assert data.preferred_read_replica == -1, rack
        assert values(data) == [b"one"], rack


def test_without_a_selector_every_consumer_reads_from_the_leader(tmp_path: Path) -> None:
    c = _cluster(tmp_path, selector="")
    leader = _committed(c, b"one")
    follower = next(b for b in (1, 2, 3) if b != leader)
    data = fetch(c, leader, rack=RACKS[follower])
    assert data.preferred_read_replica == -1 and values(data) == [b"one"]


def test_a_follower_out_of_the_isr_is_never_preferred(tmp_path: Path) -> None:
    c = _cluster(tmp_path)
    leader = _committed(c, b"one")
    lagging = next(b for b in (1, 2, 3) if b != leader)
    c.partitioned = {lagging}
    # A stalled follower leaves the ISR once it lags the leader's LEO for long (Kafka's
    # isCaughtUp: an idle partition keeps it).
    assert result(c.wait(produce(c, leader, "t", batch(b"two"), acks=1)))[0] == ErrorCode.none
    c.until(lambda: lagging not in c.state("t").isr)
    data = fetch(c, leader, rack=RACKS[lagging])
    assert data.preferred_read_replica == -1 and values(data) == [b"one", b"two"]


def test_a_follower_serves_nothing_above_its_own_high_watermark(tmp_path: Path) -> None:
    c = _cluster(tmp_path)
    leader = _committed(c, b"one")
    follower = next(b for b in (1, 2, 3) if b != leader)
    p = c.node(follower).partition("t", 0)
    reply = produce(c, leader, "t", batch(b"two"))
    # The fetch that copies "two" carries the leader's HW from before it: the follower holds
    # the record before it knows it is committed.
    c.until(lambda: p.log_end_offset == 2, step_ms=1)
    assert p.high_watermark == 1 < p.log_end_offset
    data = fetch(c, follower, rack=RACKS[follower])
    assert values(data) == [b"one"] and data.high_watermark == 1
    c.wait(reply)
    c.settle()
    assert values(fetch(c, follower, rack=RACKS[follower])) == [b"one", b"two"]


def test_follower_reads_need_fetch_v11_and_the_current_leader_epoch(tmp_path: Path) -> None:
    c = _cluster(tmp_path)
    leader = _committed(c, b"one")
    follower = next(b for b in (1, 2, 3) if b != leader)
    assert fetch(c, follower, version=10).error_code == ErrorCode.not_leader_or_follower
    epoch = c.state("t").leader_epoch
    assert values(fetch(c, follower, leader_epoch=epoch)) == [b"one"]
    assert fetch(c, follower, leader_epoch=epoch + 1).error_code == ErrorCode.unknown_leader_epoch
    assert fetch(c, follower, offset=5).error_code == ErrorCode.offset_out_of_range
    c.kill(leader)  # a new leader epoch: the old one is fenced on every replica
    c.until(lambda: c.state("t").leader not in (-1, leader))
    follower = next(b for b in c.running if b != c.state("t").leader)
    c.until(lambda: c.node(follower).partition("t", 0).leader_epoch > epoch)
    assert fetch(c, follower, leader_epoch=epoch).error_code == ErrorCode.fenced_leader_epoch


def test_an_unknown_replica_selector_is_refused_at_start_up() -> None:
    with pytest.raises(ConfigError, match=r"replica\.selector\.class") as info:
        BrokerConfig.from_properties({"replica.selector.class": "com.example.NearestSelector"})
    assert "RackAwareReplicaSelector" in str(info.value)
    config = BrokerConfig.from_properties({"replica.selector.class": RACK_AWARE_REPLICA_SELECTOR})
    assert config.get("replica.selector.class") == RACK_AWARE_REPLICA_SELECTOR
