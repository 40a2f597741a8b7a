"""Listeners (KIP-103 keys): parsing, defaults, refusals with the key and the reason."""

from __future__ import annotations

import pytest

from ackly.cluster.metadata import BrokerInfo
from ackly.config import BrokerConfig
from ackly.errors import ConfigError
from ackly.listeners import Listener, resolve_listeners


def resolve(props: dict[str, str], **kwargs: object) -> object:
    config = BrokerConfig.from_properties(props)
    return resolve_listeners(config.values, host=str(kwargs.get("host", "127.0.0.1")),
                             port=int(kwargs.get("port", 9092)),  # type: ignore[call-overload]
                             advertised_host=kwargs.get("advertised_host"),  # type: ignore[arg-type]
                             advertised_port=kwargs.get("advertised_port"))  # type: ignore[arg-type]


def test_host_and_port_alone_make_one_plaintext_listener() -> None:
    listeners = resolve({}, host="0.0.0.0", port=9999, advertised_host="broker.example")
    assert listeners.listeners == (Listener("PLAINTEXT", "0.0.0.0", 9999, "PLAINTEXT"),)
    assert listeners.advertised == (Listener("PLAINTEXT", "broker.example", 9999, "PLAINTEXT"),)
    assert listeners.inter_broker_listener_name == "PLAINTEXT"


def test_listeners_with_kafkas_default_map_and_a_named_one() -> None:
    listeners = resolve({
        "listeners": "PLAINTEXT://127.0.0.1:9092,SASL_SSL://0.0.0.0:9093,BROKER://[::1]:9094",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,BROKER:SSL",
        "advertised.listeners": "SASL_SSL://kafka.example:19093",
        "inter.broker.listener.name": "BROKER",
    })
    assert listeners.listeners == (
        Listener("PLAINTEXT", "127.0.0.1", 9092, "PLAINTEXT"),
        Listener("SASL_SSL", "0.0.0.0", 9093, "SASL_SSL"),
        Listener("BROKER", "::1", 9094, "SSL"),
    )
    # Not advertised explicitly: advertised as bound.
    assert listeners.advertised[1] == Listener("SASL_SSL", "kafka.example", 19093, "SASL_SSL")
    assert listeners.inter_broker == Listener("BROKER", "::1", 9094, "SSL")
    assert listeners.inter_broker.uses_tls and not listeners.inter_broker.uses_sasl


def test_bound_ports_and_wildcard_hosts_are_advertised_as_reachable() -> None:
    listeners = resolve({"listeners": "PLAINTEXT://:0,SSL://0.0.0.0:0"})
    bound = listeners.bound({"PLAINTEXT": 4000, "SSL": 4001})  # type: ignore[attr-defined]
    assert [(a.host, a.port) for a in bound.advertised] == [("127.0.0.1", 4000), ("127.0.0.1", 4001)]
    assert [lst.port for lst in bound.listeners] == [4000, 4001]


@pytest.mark.parametrize(("props", "key", "reason"), [
    ({"listeners": "PLAINTEXT://127.0.0.1"}, "listeners", "not NAME://host:port"),
    ({"listeners": "PLAINTEXT://127.0.0.1:70000"}, "listeners", "not between 0 and 65535"),
    ({"listeners": "CLIENT://127.0.0.1:9092"}, "listeners", "not in listener.security.protocol.map"),
    ({"listeners": "PLAINTEXT://:9092,PLAINTEXT://:9093"}, "listeners", "given twice"),
    ({"listeners": "PLAINTEXT://:9092,SSL://:9092"}, "listeners", "more than one listener"),
    ({"listener.security.protocol.map": "A:TLS"}, "listener.security.protocol.map", "not one of"),
    ({"listener.security.protocol.map": "A"}, "listener.security.protocol.map", "NAME:PROTOCOL"),
    ({"listeners": "PLAINTEXT://:9092", "inter.broker.listener.name": "BROKER"},
     "inter.broker.listener.name", "not one of the listeners"),
    ({"listeners": "SSL://:9093,SASL_SSL://:9094"}, "inter.broker.listener.name", "not set"),
    ({"listeners": "PLAINTEXT://:9092", "advertised.listeners": "SSL://h:9093"},
     "advertised.listeners", "not one of the listeners"),
    ({"listeners": "PLAINTEXT://:9092", "advertised.listeners": "PLAINTEXT://0.0.0.0:9092"},
     "advertised.listeners", "non-routable"),
    ({"listener.name.ssl.ssl.client.auth": "always"}, "listener.name.ssl.ssl.client.auth", "not one of"),
    ({"listener.name.ssl.log.retention.ms": "5"}, "listener.name.ssl.log.retention.ms", "unknown"),
    ({"ssl.principal.mapping.rules": "RULE:^CN=(.*)$/$1/X"}, "ssl.principal.mapping.rules", "invalid rule"),
])
def test_bad_listener_settings_are_refused_with_the_key(props: dict[str, str], key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        BrokerConfig.from_properties(props)
    assert info.value.key == key
    assert reason in info.value.reason


def test_advertised_host_flag_does_not_mix_with_listeners() -> None:
    with pytest.raises(ConfigError, match=r"advertised\.listeners"):
        resolve({"listeners": "PLAINTEXT://:9092"}, advertised_host="h")


def test_a_per_listener_key_overrides_the_plain_one_for_that_listener_only() -> None:
    config = BrokerConfig.from_properties({
        "ssl.client.auth": "requested", "listener.name.internal.ssl.client.auth": "required",
    })
    assert config.for_listener("INTERNAL", "ssl.client.auth") == "required"
    assert config.for_listener("EXTERNAL", "ssl.client.auth") == "requested"


def test_a_registration_carries_every_endpoint_and_old_ones_read_as_plaintext() -> None:
    endpoints = (Listener("CLIENT", "h", 1, "SSL"), Listener("BROKER", "i", 2, "PLAINTEXT"))
    info = BrokerInfo(3, "i", 2, endpoints=endpoints)
    decoded = BrokerInfo.decode(info.encode())
    assert decoded.endpoints == endpoints
    assert decoded.endpoint("CLIENT") == Listener("CLIENT", "h", 1, "SSL")
    assert decoded.endpoint("OTHER") is None
    old = BrokerInfo.decode(BrokerInfo(3, "h", 9092).encode())
    assert old.endpoint("PLAINTEXT") == Listener("PLAINTEXT", "h", 9092, "PLAINTEXT")
