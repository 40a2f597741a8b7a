"""Client quotas in a cluster: they live in etcd, so a quota written through one broker is
described, and enforced, by the others once etcd's watch has delivered it."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from ackly.protocol.messages import build_request
from ackly.testing.cluster_processes import ClusterProcesses
from ackly.testing.wire import WireClient

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def describe(bootstrap: str) -> dict[str, float]:
    with WireClient(bootstrap) as wire:
        response = wire.request(build_request(48, 1, {"strict": True, "components": [
            {"entity_type": "user", "match_type": 1, "match": None}]}))
    assert response.error_code == 0, response.error_message
    return {v.key: v.value for e in response.entries for v in e.values}


def test_a_quota_written_through_one_broker_reaches_the_other(etcd_server: Any, tmp_path: Any) -> None:
    cluster = ClusterProcesses(os.path.join(str(tmp_path), "cluster"), 2, etcd=etcd_server)
    cluster.start()
    try:
        first, second = cluster.brokers[0].bootstrap, cluster.brokers[1].bootstrap
        assert describe(second) == {}
        with WireClient(first) as wire:
            response = wire.request(build_request(49, 1, {"validate_only": False, "entries": [{
                "entity": [{"entity_type": "user", "entity_name": None}],
                "ops": [{"key": "consumer_byte_rate", "value": 65536.0, "remove": False}]}]}))
        assert [int(e.error_code) for e in response.entries] == [0]
        written = time.monotonic()
        assert describe(first) == {"consumer_byte_rate": 65536.0}  # answered once its view shows it
        deadline = written + 10
        while (seen := describe(second)) == {} and time.monotonic() < deadline:
            time.sleep(0.02)  # polling the other broker's view; the deadline bounds the wait
        elapsed_s = time.monotonic() - written
        assert seen == {"consumer_byte_rate": 65536.0}, f"not on the second broker after {elapsed_s:.1f} s"
        print(f"the second broker described the quota {elapsed_s * 1000:.0f} ms after the first answered")
    finally:
        cluster.stop_all()
