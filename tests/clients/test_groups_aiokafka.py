"""Consumer groups with aiokafka: three members share a topic, one leaves, one crashes, one
joins late; every record is processed; after a restart the group resumes at its committed
offsets; no partition has two owners in one generation (docs/guarantees.md rule 24)."""

from __future__ import annotations

import pytest

from tests.clients.groupkit import BROKER_CONFIGS, run_group_scenario

pytestmark = [pytest.mark.slow, pytest.mark.clients, pytest.mark.timeout(120)]


def test_aiokafka_group_share_leave_crash_join_resume(broker_factory) -> None:
    broker = broker_factory(configs=BROKER_CONFIGS)
    run_group_scenario("aiokafka", broker.bootstrap)
