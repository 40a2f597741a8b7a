"""Fetch sessions (KIP-227) at the wire: a raw Fetch v12 client opens a session with a full
fetch, then sends incremental fetches that name only what changed and get back only the
partitions with something new; session errors and closing."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from kio.schema.errors import ErrorCode
from kio.schema.fetch.v12.request import FetchPartition, FetchRequest, FetchTopic, ForgottenTopic
from kio.static.primitive import i8, i32, i64

from ackly.testing.wire import WireClient
from tests.integration import wire_requests as rq

pytestmark = pytest.mark.slow

TOPIC = "sessions"


def _fetch(session_id: int, epoch: int, offsets: dict[int, int],
           forgotten: tuple[int, ...] = ()) -> FetchRequest:
    return FetchRequest(
        cluster_id=None, replica_id=i32(-1), max_wait=datetime.timedelta(milliseconds=0),
        min_bytes=i32(1), max_bytes=i32(1 << 20), isolation_level=i8(0),
        session_id=i32(session_id), session_epoch=i32(epoch),
        topics=(FetchTopic(topic=TOPIC, partitions=tuple(FetchPartition(
            partition=i32(p), current_leader_epoch=i32(-1), fetch_offset=i64(o),
            last_fetched_epoch=i32(-1), log_start_offset=i64(-1), partition_max_bytes=i32(1 << 20),
        ) for p, o in offsets.items())),) if offsets else (),
        forgotten_topics_data=(ForgottenTopic(topic=TOPIC, partitions=tuple(i32(p) for p in forgotten)),)
        if forgotten else (),
        rack_id="",
    )


def _parts(resp: Any) -> dict[int, Any]:
    return {int(p.partition_index): p for t in resp.responses for p in t.partitions}


def test_full_then_incremental_fetches(ackly_broker) -> None:  # type: ignore[no-untyped-def]
    with WireClient(ackly_broker.bootstrap) as c:
        assert c.request(rq.create_topic(TOPIC, partitions=3)).topics[0].error_code == ErrorCode.none
        assert c.request(rq.produce(TOPIC, rq.batch(b"a"), partition=0)).responses[0] \
            .partition_responses[0].error_code == ErrorCode.none

        # Sessionless (epoch -1): every partition, session id 0, as before sessions.
        plain = c.request(_fetch(0, -1, {0: 0, 1: 0, 2: 0}))
        assert plain.error_code == ErrorCode.none and plain.session_id == 0
        assert sorted(_parts(plain)) == [0, 1, 2]

        # Full fetch opening a session (epoch 0): every partition, and a session id.
        full = c.request(_fetch(0, 0, {0: 0, 1: 0, 2: 0}))
        session_id = int(full.session_id)
        assert full.error_code == ErrorCode.none and session_id != 0
        assert sorted(_parts(full)) == [0, 1, 2] and _parts(full)[0].records

        # Incremental: partition 0 moves on to offset 1 (named, so answered, with no records);
        # nothing is new elsewhere: the other partitions are left out.
        moved = c.request(_fetch(session_id, 1, {0: 1}))
        assert moved.error_code == ErrorCode.none and moved.session_id == session_id
        assert sorted(_parts(moved)) == [0] and not _parts(moved)[0].records

        # A record on partition 1: the next incremental fetch names nothing and gets partition 1
        # (from the offset the session holds for it) with the record and its new HW.
        assert _parts(c.request(_fetch(session_id, 2, {}))) == {}
        c.request(rq.produce(TOPIC, rq.batch(b"b"), partition=1))
        news = _parts(c.request(_fetch(session_id, 3, {})))
        assert sorted(news) == [1] and news[1].records and news[1].high_watermark == 1

        # The same epoch again is refused; so is an unknown session.
        stale = c.request(_fetch(session_id, 3, {}))
        assert stale.error_code == ErrorCode.invalid_fetch_session_epoch and _parts(stale) == {}
        unknown = c.request(_fetch(session_id ^ 0x5A5A, 1, {}))
        assert unknown.error_code == ErrorCode.fetch_session_id_not_found

        # Forget partition 2, then append to it: the session no longer reports it.
        assert sorted(_parts(c.request(_fetch(session_id, 4, {1: 1}, forgotten=(2,))))) == [1]
        c.request(rq.produce(TOPIC, rq.batch(b"c"), partition=2))
        assert _parts(c.request(_fetch(session_id, 5, {}))) == {}

        # Epoch -1 closes the session: a full answer without a session, then the id is gone.
        closed = c.request(_fetch(session_id, -1, {0: 1, 1: 1, 2: 0}))
        assert closed.session_id == 0 and sorted(_parts(closed)) == [0, 1, 2]
        gone = c.request(_fetch(session_id, 6, {}))
        assert gone.error_code == ErrorCode.fetch_session_id_not_found


@pytest.mark.ackly_config({"max.incremental.fetch.session.cache.slots": "0"})
def test_no_slots_means_no_sessions(ackly_broker) -> None:  # type: ignore[no-untyped-def]
    with WireClient(ackly_broker.bootstrap) as c:
        c.request(rq.create_topic(TOPIC, partitions=1))
        full = c.request(_fetch(0, 0, {0: 0}))
        assert full.error_code == ErrorCode.none and full.session_id == 0 and sorted(_parts(full)) == [0]
