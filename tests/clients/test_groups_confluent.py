"""Consumer groups with confluent-kafka (librdkafka): sharing, leaving, crashing, joining late,
resuming after a restart (docs/guarantees.md rule 24), and static membership (rule 25)."""

from __future__ import annotations

import pytest

from tests.clients.clientkit import ck_admin, ck_create_topic, unique_topic, wait_for
from tests.clients.groupkit import (
    BROKER_CONFIGS,
    PARTITIONS,
    Member,
    group_records,
    produce_batch,
    run_group_scenario,
    wait_processed,
    wait_stable,
)

pytestmark = [pytest.mark.slow, pytest.mark.clients, pytest.mark.timeout(120)]


def test_confluent_group_share_leave_crash_join_resume(broker_factory) -> None:
    broker = broker_factory(configs=BROKER_CONFIGS)
    run_group_scenario("confluent", broker.bootstrap)


def test_confluent_static_member_restarts_without_rebalance_and_duplicate_is_fenced(
    broker_factory,
) -> None:
    broker = broker_factory(configs=BROKER_CONFIGS)
    bootstrap = broker.bootstrap
    topic = unique_topic("static")
    group = f"group-{topic}"
    admin = ck_admin(bootstrap)
    ck_create_topic(admin, topic, PARTITIONS)
    started: list[Member] = []

    def member(name: str, instance: str) -> Member:
        m = Member("confluent", bootstrap, group, topic, name, instance_id=instance, session_ms=15_000)
        started.append(m)
        return m

    try:
        s1, s2 = member("s1", "instance-1"), member("s2", "instance-2")
        wait_stable(admin, group, 2, topic)

        def settled() -> bool:
            last = [m.assignments()[-1][1] for m in (s1, s2) if m.assignments()]
            return len(last) == 2 and sorted(p for parts in last for p in parts) == list(range(PARTITIONS))

        wait_for(settled, timeout_s=15, what="both members to hold their share")
        records = group_records(bootstrap, group, topic)
        generation = records[-1].generation
        s1_assigned = s1.assignments()
        _, s2_partitions = s2.assignments()[-1]

        # s2 restarts within its session: a static member sends no LeaveGroup on close.
        s2.stop()
        again = member("s2-again", "instance-2")
        wait_for(lambda: again.assignments() or None, timeout_s=15, what="the restarted member's assignment")
        (new_id, partitions), = again.assignments()
        assert partitions == s2_partitions, "it gets its old assignment back"
        records = group_records(bootstrap, group, topic)
        assert records[-1].generation == generation, "no rebalance: the generation is unchanged"
        assert records[-1].assignments[new_id] == s2_partitions
        assert s1.assignments() == s1_assigned, "the other member saw no rebalance"
        batch = produce_batch(bootstrap, topic, "static", 5)
        wait_processed([s1, again], batch, "records after the restart")

        # A second process with s1's instance id: the older one is fenced.
        duplicate = member("s1-duplicate", "instance-1")
        wait_for(lambda: duplicate.assignments() or None, timeout_s=15, what="the duplicate's assignment")
        wait_for(lambda: any("fenced" in e for e in s1.fatal_errors()) or None,
                 timeout_s=20, what="the older instance-1 to be fenced")
        assert group_records(bootstrap, group, topic)[-1].generation == generation
    except BaseException:
        for m in started:
            print(m.describe())
        raise
    finally:
        for m in started:
            m.kill()
