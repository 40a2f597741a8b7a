"""docs/configuration.md lists every config the broker knows, with the status it has."""

from __future__ import annotations

import re
from pathlib import Path

from ackly import kafka_broker_keys
from ackly.config import BROKER_CONFIGS, TOPIC_CONFIG_DEFS

DOC = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"


def _rows(text: str, heading: str) -> dict[str, str]:
    section = text.split(heading, 1)[1].split("\n#", 1)[0]
    return {m.group(1): line for line in section.splitlines()
            if (m := re.match(r"\| `([^`]+)` \|", line))}


def test_every_topic_and_broker_config_is_in_the_table_with_its_status() -> None:
    text = DOC.read_text()
    topic_rows = _rows(text, "## Topic configs")
    for d in TOPIC_CONFIG_DEFS:
        status = "refused unless default" if d.unsupported else "implemented"
        assert f"| {status} |" in topic_rows[d.name], d.name
    assert set(topic_rows) == {d.name for d in TOPIC_CONFIG_DEFS}
    synonyms = {d.broker_synonym for d in TOPIC_CONFIG_DEFS if d.broker_synonym}
    implemented = _rows(text, "### Implemented")
    assert set(implemented) == set(BROKER_CONFIGS) - synonyms
    refused = _rows(text, "### Refused unless default")
    assert set(refused) == set(kafka_broker_keys.UNSUPPORTED)
    ignored_section = text.split("### Ignored", 1)[1]
    listed = set(re.findall(r"`([a-z0-9.\-]+)`", ignored_section))
    assert listed == set(kafka_broker_keys.IGNORED)
