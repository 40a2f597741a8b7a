"""Dynamic broker configs: the keys of config.DYNAMIC_BROKER_KEYS, altered on one broker by
IncrementalAlterConfigs on its BROKER resource (named by its id, Kafka's DYNAMIC_BROKER_CONFIG),
applied at once and kept in the data directory so that they survive a restart.

Owns: the file DYNAMIC_CONFIG_FILE (Java properties format) and the dynamic layer of
`node.config`.

Invariants:
- `node.config == node.static_config.with_dynamic(<the file's contents>)` after every change.
- The file is written (durably: Disk.write_atomic) before the change is applied, so a change
  that was answered survives a crash, and one whose write failed was never applied. A running
  broker writes it in its writer thread and answers IncrementalAlterConfigs after that.
- A stored value this version refuses (written by hand, or by another version) refuses the
  start-up naming the file, as any bad config does: it is never dropped silently.

Cluster-wide dynamic defaults (the BROKER resource with an empty name, kept by Kafka in the
cluster metadata) are not implemented: IncrementalAlterConfigs refuses them.
"""

from __future__ import annotations

from collections.abc import Mapping

from ackly.config import BROKER_CONFIGS, BrokerConfig
from ackly.config_sources import parse_properties_text, write_properties_text
from ackly.errors import ConfigError
from ackly.log.disk import Disk

DYNAMIC_CONFIG_FILE = "dynamic-broker-configs.properties"


def config_path(data_dir: str) -> str:
    return f"{data_dir}/{DYNAMIC_CONFIG_FILE}"


def load(static: BrokerConfig, disk: Disk, data_dir: str) -> BrokerConfig:
    """The static config with the stored dynamic values over it; ConfigError names a stored
    key or value that is refused."""
    path = config_path(data_dir)
    data = disk.read_file(path)
    if data is None:
        return static
    try:
        entries = parse_properties_text(data.decode("utf-8"))
        return static.with_dynamic({e.key: e.value for e in entries})
    except UnicodeDecodeError as exc:
        raise ConfigError(DYNAMIC_CONFIG_FILE, f"{path} is not UTF-8: {exc}") from None
    except ConfigError as exc:
        raise ConfigError(exc.key, f"{exc.reason} (stored in {path}; altered dynamically)") from None


def current(config: BrokerConfig) -> dict[str, str]:
    """The dynamic values as they are written (and described)."""
    return {key: BROKER_CONFIGS[key].render(value) for key, value in config.dynamic.items()}


def planned(node_config: BrokerConfig, static: BrokerConfig,
            changes: Mapping[str, str | None]) -> BrokerConfig:
    """The config after SET (a value) or DELETE (None) of dynamic keys; ConfigError refuses
    a key that is not dynamic or a value that does not parse."""
    wanted = current(node_config)
    for key, value in changes.items():
        if value is None:
            wanted.pop(key, None)
        else:
            wanted[key] = value
    return static.with_dynamic(wanted)


def encode(config: BrokerConfig) -> bytes:
    """The file's content for the dynamic layer of `config`."""
    return write_properties_text(current(config)).encode("utf-8")


def store(disk: Disk, data_dir: str, config: BrokerConfig) -> None:
    """Write the dynamic layer of `config` now (raises StorageError). A running broker writes
    it off the event loop instead (broker/file_writes.py, BrokerNode.alter_dynamic_config)."""
    disk.write_atomic(config_path(data_dir), encode(config))
