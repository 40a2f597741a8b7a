"""The arithmetic of the request memory pool, the connection limits and their configs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ackly.config import BrokerConfig, parse_connection_overrides
from ackly.errors import ConfigError
from ackly.server.connection_limits import ConnectionLimits
from ackly.server.memory_pool import MemoryPool

# --- memory pool --------------------------------------------------------------------------


def test_pool_exhausts_at_capacity_and_resumes_below_the_margin() -> None:
    pool: MemoryPool[str] = MemoryPool(1000, resume_margin_bytes=100)
    assert not pool.adjust(999) and not pool.exhausted
    assert pool.adjust(1)  # reaches the capacity: an edge
    assert pool.exhausted and pool.exhaustions == 1
    assert not pool.adjust(500)  # charging never fails (non-strict), no new edge
    assert pool.available_bytes == -500
    assert not pool.adjust(-550)  # 950: above capacity - margin, still exhausted
    assert pool.exhausted
    assert pool.adjust(-50)  # 900 = capacity - margin: room again
    assert not pool.exhausted and pool.peak_used_bytes == 1500


def test_an_unbounded_pool_never_exhausts() -> None:
    pool: MemoryPool[str] = MemoryPool(None)
    assert not pool.adjust(10**12) and not pool.exhausted
    assert pool.may_read("a") and pool.available_bytes is None


def test_while_exhausted_only_the_oldest_large_frame_may_read() -> None:
    pool: MemoryPool[str] = MemoryPool(100, resume_margin_bytes=10)
    pool.set_receiving("b", True)
    pool.set_receiving("a", True)
    pool.set_receiving("b", True)  # already queued: keeps its place
    pool.adjust(100)
    assert pool.exempt == "b"
    assert pool.may_read("b") and not pool.may_read("a") and not pool.may_read("c")
    pool.set_receiving("b", False)  # b's frame completed: a is next
    assert pool.exempt == "a" and pool.may_read("a") and not pool.may_read("b")


def test_releasing_more_than_was_charged_is_a_bug() -> None:
    pool: MemoryPool[str] = MemoryPool(100)
    pool.adjust(10)
    with pytest.raises(AssertionError):
        pool.adjust(-11)


@given(st.lists(st.integers(-500, 500), max_size=60))
def test_pool_state_follows_used_bytes(deltas: list[int]) -> None:
    """exhausted is on at or above capacity, off at or below capacity - margin, and in
    between keeps what it was; used_bytes is the sum of the charges."""
    pool: MemoryPool[str] = MemoryPool(1000, resume_margin_bytes=200)
    used = 0
    for delta in deltas:
        if used + delta < 0:
            continue
        before = pool.exhausted
        edge = pool.adjust(delta)
        used += delta
        assert pool.used_bytes == used
        assert edge == (pool.exhausted != before)
        if used >= 1000:
            assert pool.exhausted
        elif used <= 800:
            assert not pool.exhausted
        else:
            assert pool.exhausted == before


# --- connection limits --------------------------------------------------------------------


def test_per_ip_limit_refuses_the_next_connection_and_counts_refusals() -> None:
    limits = ConnectionLimits(max_connections=100, max_per_ip=2)
    assert limits.admit("10.0.0.1") is None
    assert limits.admit("10.0.0.1") is None
    assert limits.admit("10.0.0.1") == "max.connections.per.ip"
    assert limits.admit("10.0.0.2") is None  # other addresses are not affected
    assert limits.open_connections == 3 and limits.open_from("10.0.0.1") == 2
    limits.release("10.0.0.1")
    assert limits.admit("10.0.0.1") is None  # a freed slot is usable again
    assert limits.refused == {"max.connections": 0, "max.connections.per.ip": 1}


def test_max_connections_counts_every_address() -> None:
    limits = ConnectionLimits(max_connections=2, max_per_ip=10)
    assert limits.admit("a") is None and limits.admit("b") is None
    assert limits.admit("c") == "max.connections"
    limits.release("a")
    assert limits.admit("c") is None
    assert limits.refused["max.connections"] == 1


def test_overrides_replace_the_per_ip_limit_for_their_host() -> None:
    limits = ConnectionLimits(max_connections=1000, max_per_ip=1,
                              per_ip_overrides={"127.0.0.2": 3, "10.9.9.9": 0})
    assert [limits.admit("127.0.0.2") for _ in range(4)] == [None, None, None,
                                                           "max.connections.per.ip"]
    assert limits.admit("10.9.9.9") == "max.connections.per.ip"  # 0 blocks the address
    assert limits.admit("127.0.0.1") is None
    assert limits.admit("127.0.0.1") == "max.connections.per.ip"


@given(st.lists(st.tuples(st.booleans(), st.sampled_from(["a", "b", "c"])), max_size=80))
def test_limits_are_never_exceeded_and_counts_add_up(ops: list[tuple[bool, str]]) -> None:
    limits = ConnectionLimits(max_connections=5, max_per_ip=2, per_ip_overrides={"c": 4})
    model: dict[str, int] = {}
    for is_open, ip in ops:
        if is_open:
            if limits.admit(ip) is None:
                model[ip] = model.get(ip, 0) + 1
        elif model.get(ip):
            limits.release(ip)
            model[ip] -= 1
        assert limits.open_connections == sum(model.values()) <= 5
        assert all(limits.open_from(h) == n <= limits.limit_for(h) for h, n in model.items())


# --- configs ------------------------------------------------------------------------------


def test_defaults_are_kafkas_except_the_bounded_pool() -> None:
    config = BrokerConfig.from_properties({})
    assert config.queued_max_request_bytes == 256 * 1024 * 1024
    assert config.max_connections == config.max_connections_per_ip == 2**31 - 1
    assert config.max_connections_per_ip_overrides == {}
    assert config.connections_max_idle_ms == 600_000
    assert config.connections_first_request_timeout_ms == 10_000


def test_minus_one_means_no_limit() -> None:
    config = BrokerConfig.from_properties({
        "queued.max.request.bytes": "-1", "connections.max.idle.ms": "-1",
        "connections.first.request.timeout.ms": "-1",
    })
    assert config.queued_max_request_bytes is None
    assert config.connections_max_idle_ms is None
    assert config.connections_first_request_timeout_ms is None


def test_overrides_are_parsed_as_kafka_writes_them() -> None:
    assert parse_connection_overrides("127.0.0.2:5, host.example:0,::1:7") == {
        "127.0.0.2": 5, "host.example": 0, "::1": 7,
    }
    assert parse_connection_overrides("") == {}


@pytest.mark.parametrize(("props", "key", "reason"), [
    ({"max.connections.per.ip.overrides": "127.0.0.1"}, "max.connections.per.ip.overrides",
     "not host:count"),
    ({"max.connections.per.ip.overrides": "a:1,b:x"}, "max.connections.per.ip.overrides",
     "'x' is not an integer"),
    ({"max.connections.per.ip.overrides": "a:1,a:2"}, "max.connections.per.ip.overrides",
     "given twice"),
    ({"max.connections.per.ip.overrides": "a:-1"}, "max.connections.per.ip.overrides",
     "between 0"),
    ({"max.connections.per.ip": "0"}, "max.connections.per.ip", "overrides"),
    ({"max.connections": "-1"}, "max.connections", "below the minimum"),
    ({"queued.max.request.bytes": "0"}, "queued.max.request.bytes", "-1 for no limit"),
    ({"queued.max.request.bytes": "lots"}, "queued.max.request.bytes", "not an integer"),
    ({"connections.max.idle.ms": "0"}, "connections.max.idle.ms", "-1 for no limit"),
])
def test_bad_values_are_refused_naming_the_key(props: dict[str, str], key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        BrokerConfig.from_properties(props)
    assert info.value.key == key and reason in info.value.reason


def test_a_zero_per_ip_limit_is_allowed_with_overrides() -> None:
    config = BrokerConfig.from_properties({"max.connections.per.ip": "0",
                                           "max.connections.per.ip.overrides": "127.0.0.1:10"})
    assert config.max_connections_per_ip == 0
