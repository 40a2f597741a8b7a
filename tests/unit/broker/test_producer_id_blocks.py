"""Producer ids in a cluster come in blocks claimed from the cluster metadata with
compare-and-set (BrokerNodes on a virtual clock, one shared store): brokers that claim at the
same moment never share a block, a broker that uses up its block moves to the next one
without a gap in service, and a broker that lost its disk never hands out an id again."""

from __future__ import annotations

import datetime
import shutil
from pathlib import Path

from ackly.cluster.member import FIRST_CLUSTER_PRODUCER_ID
from ackly.cluster.metadata import decode_next_producer_id
from ackly.coordinator.producer_ids import BLOCK_SIZE
from ackly.errors import ErrorCode

from .core_cluster import CoreCluster

INIT_PRODUCER_ID = 22


def new_ids(c: CoreCluster, broker: int, count: int) -> list[int]:
    ids = []
    for _ in range(count):
        reply = c.call(broker, INIT_PRODUCER_ID, 4, transactional_id=None,
                       transaction_timeout=datetime.timedelta(seconds=60), producer_id=-1,
                       producer_epoch=-1)
        answer = c.wait(reply)
        assert answer.error_code == ErrorCode.none, answer
        ids.append(int(answer.producer_id))
    return ids


def stored_next(c: CoreCluster) -> int:
    kv = c.store.get(c.node(1).member.keys.producer_ids)
    assert kv is not None
    return decode_next_producer_id(kv.value)


def test_brokers_never_share_an_id_and_each_id_lies_below_the_claimed_end(tmp_path: Path) -> None:
    c = CoreCluster(tmp_path, [1, 2, 3])
    c.settle()
    # All three claimed their first block at start-up, against one another.
    given = {b: new_ids(c, b, 5) for b in (1, 2, 3)}
    # Broker 1 goes through more than a block: it claims the next one while it has half left.
    given[1] += new_ids(c, 1, BLOCK_SIZE + 10)
    every = [i for ids in given.values() for i in ids]
    assert len(set(every)) == len(every), "no id is handed out twice"
    assert min(every) >= FIRST_CLUSTER_PRODUCER_ID
    assert max(every) < stored_next(c)
    assert given[1] == sorted(given[1]), "one broker's ids only grow"


def test_a_broker_that_lost_its_disk_hands_out_only_new_ids(tmp_path: Path) -> None:
    c = CoreCluster(tmp_path, [1, 2, 3])
    c.settle()
    before = set(new_ids(c, 2, 20))
    c.kill(2)
    shutil.rmtree(c.hosts[2].data_dir)  # a new disk: nothing of broker 2's past is left
    c.start(2)
    c.settle()
    after = new_ids(c, 2, 20)
    assert not before & set(after)
    assert min(after) >= max(before)
