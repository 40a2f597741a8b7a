"""Secrets among the broker configs (a key password, an inline private key) are described as
Kafka describes its PASSWORD configs: null value, is_sensitive, even in the synonyms."""

from __future__ import annotations

from pathlib import Path

from ackly.errors import ErrorCode

from .test_admin_apis import describe, make_node

BROKER = 4
PASSWORD_TYPE = 9


def test_sensitive_broker_configs_are_never_shown(tmp_path: Path) -> None:
    node = make_node(tmp_path / "data", {"ssl.key.password": "hunter2", "metadata.etcd.password": "pw",
                                         "ssl.client.auth": "requested"})
    result = describe(node, 4, BROKER, "0", synonyms=True,
                      keys=("ssl.key.password", "ssl.keystore.key", "metadata.etcd.password", "ssl.client.auth"))
    assert result.error_code == ErrorCode.none
    configs = {c.name: c for c in result.configs}
    for name in ("ssl.key.password", "ssl.keystore.key", "metadata.etcd.password"):
        entry = configs[name]
        assert (entry.value, entry.is_sensitive, entry.config_type) == (None, True, PASSWORD_TYPE)
        assert all(s.value is None for s in entry.synonyms)
    assert (configs["ssl.client.auth"].value, configs["ssl.client.auth"].is_sensitive) == ("requested", False)
