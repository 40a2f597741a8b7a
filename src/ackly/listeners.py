"""Listeners: the named endpoints a broker accepts connections on, each with a security protocol.

Kafka's model and keys (KIP-103):
- `listeners`: `NAME://host:port,...` where the broker binds (an empty host: every interface);
- `advertised.listeners`: what the broker registers for clients and the other brokers, by the
  same names (default: `listeners`; a host of 0.0.0.0 or empty is not advertised as such);
- `listener.security.protocol.map`: `NAME:PROTOCOL,...`; by default each security protocol
  names a listener of its own protocol (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL);
- `inter.broker.listener.name`: the listener brokers use to reach each other.

A client learns every broker's address on the listener its request came in on (Kafka's
MetadataCache rule), so the names must be the same on every broker of a cluster.

Nothing here binds a socket: the shell (server/app.py) does, from the `Listener` values built
here; every bad value is refused with the key and the reason (ConfigError).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from ackly.errors import ConfigError

PLAINTEXT = "PLAINTEXT"
SSL = "SSL"
SASL_PLAINTEXT = "SASL_PLAINTEXT"
SASL_SSL = "SASL_SSL"
SECURITY_PROTOCOLS = (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL)
DEFAULT_PROTOCOL_MAP = ",".join(f"{p}:{p}" for p in SECURITY_PROTOCOLS)

LISTENERS = "listeners"
ADVERTISED_LISTENERS = "advertised.listeners"
PROTOCOL_MAP = "listener.security.protocol.map"
INTER_BROKER_LISTENER_NAME = "inter.broker.listener.name"

# Kafka's per-listener override prefix: `listener.name.<name in lower case>.<key>`.
LISTENER_PREFIX = "listener.name."

_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_ENDPOINT = re.compile(r"^(?P<name>[^:/]+)://(?P<host>\[[^\]]*\]|[^:\[\]]*):(?P<port>-?\d+)$")


@dataclass(frozen=True)
class Listener:
    """One endpoint: where a broker listens (or is reached) and with which security protocol."""

    name: str
    host: str
    port: int
    security_protocol: str = PLAINTEXT

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in (SSL, SASL_SSL)

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in (SASL_PLAINTEXT, SASL_SSL)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.name}://{host}:{self.port}"


def parse_protocol_map(raw: str) -> dict[str, str]:
    """`NAME:PROTOCOL,...` as {NAME: PROTOCOL}; ConfigError names the bad entry."""
    mapping: dict[str, str] = {}
    for entry in (e.strip() for e in raw.split(",")):
        if not entry:
            continue
        name, sep, protocol = entry.partition(":")
        name, protocol = name.strip(), protocol.strip()
        if not sep or not name:
            raise ConfigError(PROTOCOL_MAP, f"{entry!r} is not NAME:PROTOCOL")
        if not _NAME.match(name):
            raise ConfigError(PROTOCOL_MAP, f"listener name {name!r} may only hold letters, digits, _ and -")
        if protocol not in SECURITY_PROTOCOLS:
            raise ConfigError(PROTOCOL_MAP, f"{protocol!r} (for {name}) is not one of "
                                            f"{', '.join(SECURITY_PROTOCOLS)}")
        if name in mapping:
            raise ConfigError(PROTOCOL_MAP, f"listener name {name!r} is given twice")
        mapping[name] = protocol
    if not mapping:
        raise ConfigError(PROTOCOL_MAP, "the map is empty")
    return mapping


def parse_listeners(raw: str, key: str, protocol_map: Mapping[str, str]) -> tuple[Listener, ...]:
    """`NAME://host:port,...` (IPv6 hosts in brackets) as Listeners; ConfigError under `key`
    for a malformed entry, a name missing from the protocol map, or a name given twice."""
    listeners: list[Listener] = []
    for entry in (e.strip() for e in raw.split(",")):
        if not entry:
            continue
        match = _ENDPOINT.match(entry)
        if match is None:
            raise ConfigError(key, f"{entry!r} is not NAME://host:port")
        name, host, port_text = match.group("name"), match.group("host"), match.group("port")
        host = host[1:-1] if host.startswith("[") else host
        port = int(port_text)
        if not 0 <= port <= 65535:
            raise ConfigError(key, f"{entry!r}: port {port} is not between 0 and 65535")
        protocol = protocol_map.get(name)
        if protocol is None:
            raise ConfigError(key, f"{entry!r}: listener name {name!r} is not in "
                                   f"{PROTOCOL_MAP} ({', '.join(protocol_map)})")
        if any(lst.name == name for lst in listeners):
            raise ConfigError(key, f"listener name {name!r} is given twice")
        listeners.append(Listener(name, host, port, protocol))
    if not listeners:
        raise ConfigError(key, "no listener given")
    return tuple(listeners)


@dataclass(frozen=True)
class ListenerSet:
    """A broker's listeners, what it advertises for each, and the inter-broker one."""

    listeners: tuple[Listener, ...]  # as bound (port 0: any free port)
    advertised: tuple[Listener, ...]  # by the same names, in the same order
    inter_broker_listener_name: str

    def listener(self, name: str) -> Listener:
        return next(lst for lst in self.listeners if lst.name == name)

    def advertised_listener(self, name: str) -> Listener:
        return next(lst for lst in self.advertised if lst.name == name)

    @property
    def inter_broker(self) -> Listener:
        return self.advertised_listener(self.inter_broker_listener_name)

    def bound(self, ports: Mapping[str, int], default_host: str = "127.0.0.1") -> ListenerSet:
        """After binding: an advertised port of 0 becomes the bound one, an advertised host
        that is empty or a wildcard becomes `default_host` (a client cannot connect to
        0.0.0.0)."""
        advertised = []
        for lst in self.advertised:
            host = lst.host if lst.host not in ("", "0.0.0.0", "::") else default_host
            port = lst.port or ports.get(lst.name, 0)
            advertised.append(Listener(lst.name, host, port, lst.security_protocol))
        listeners = tuple(
            Listener(lst.name, lst.host, ports.get(lst.name, lst.port), lst.security_protocol)
            for lst in self.listeners
        )
        return ListenerSet(listeners, tuple(advertised), self.inter_broker_listener_name)


def resolve_listeners(
    values: Mapping[str, object], *, host: str, port: int, advertised_host: str | None = None,
    advertised_port: int | None = None,
) -> ListenerSet:
    """The broker's listeners from its config values (`listeners` etc.; empty strings when not
    set). Without `listeners`, `host`/`port` (the command line's --host/--port) make one
    PLAINTEXT listener, and `advertised_host`/`advertised_port` advertise it."""
    protocol_map = parse_protocol_map(str(values.get(PROTOCOL_MAP) or DEFAULT_PROTOCOL_MAP))
    raw_listeners = str(values.get(LISTENERS) or "")
    if raw_listeners:
        listeners = parse_listeners(raw_listeners, LISTENERS, protocol_map)
        if advertised_host is not None or advertised_port is not None:
            raise ConfigError(LISTENERS, "--advertised-host/--advertised-port only go with "
                                         "--host/--port; with listeners use advertised.listeners")
    else:
        if PLAINTEXT not in protocol_map:
            raise ConfigError(PROTOCOL_MAP, "--host/--port make a listener named PLAINTEXT, "
                                            "which the map does not name")
        listeners = (Listener(PLAINTEXT, host, port, protocol_map[PLAINTEXT]),)
    bind_ports = [lst.port for lst in listeners if lst.port != 0]
    for lst in listeners:
        if lst.port != 0 and bind_ports.count(lst.port) > 1 and _same_interface(lst, listeners):
            raise ConfigError(LISTENERS, f"port {lst.port} is given to more than one listener")
    raw_advertised = str(values.get(ADVERTISED_LISTENERS) or "")
    if raw_advertised:
        if not raw_listeners:
            raise ConfigError(ADVERTISED_LISTENERS, "needs listeners (the names it advertises)")
        named = {a.name: a for a in parse_listeners(raw_advertised, ADVERTISED_LISTENERS, protocol_map)}
        for name, lst in named.items():
            if not any(bound.name == name for bound in listeners):
                raise ConfigError(ADVERTISED_LISTENERS, f"{name!r} is not one of the listeners")
            if lst.host in ("0.0.0.0", "::"):
                # As Kafka: no client can connect to the wildcard address.
                raise ConfigError(ADVERTISED_LISTENERS, f"{lst} advertises the non-routable address "
                                                        f"{lst.host}; give a host clients can reach")
        # A listener not advertised is advertised as it is bound (Kafka's default).
        advertised = tuple(named.get(lst.name, lst) for lst in listeners)
    elif not raw_listeners and (advertised_host is not None or advertised_port is not None):
        only = listeners[0]
        advertised = (Listener(only.name, advertised_host or only.host, advertised_port or only.port,
                               only.security_protocol),)
    else:
        advertised = listeners
    inter_broker = str(values.get(INTER_BROKER_LISTENER_NAME) or "")
    if inter_broker:
        if not any(lst.name == inter_broker for lst in listeners):
            raise ConfigError(INTER_BROKER_LISTENER_NAME,
                              f"{inter_broker!r} is not one of the listeners "
                              f"({', '.join(lst.name for lst in listeners)})")
    elif any(lst.name == PLAINTEXT for lst in listeners):
        inter_broker = PLAINTEXT  # Kafka's default (security.inter.broker.protocol=PLAINTEXT)
    elif len(listeners) == 1:
        inter_broker = listeners[0].name
    else:
        raise ConfigError(INTER_BROKER_LISTENER_NAME,
                          "not set and there is no PLAINTEXT listener: name the listener the "
                          "brokers use to reach each other")
    return ListenerSet(listeners, advertised, inter_broker)


def _same_interface(lst: Listener, listeners: tuple[Listener, ...]) -> bool:
    """Two listeners on one port collide unless they bind different specific addresses."""
    wildcard = ("", "0.0.0.0", "::")
    for other in listeners:
        if other is lst or other.port != lst.port:
            continue
        if lst.host in wildcard or other.host in wildcard or lst.host == other.host:
            return True
    return False


def listener_override_key(listener_name: str, key: str) -> str:
    """Kafka's per-listener form of a key: `listener.name.<name in lower case>.<key>`."""
    return f"{LISTENER_PREFIX}{listener_name.lower()}.{key}"


def split_listener_override(key: str) -> tuple[str, str] | None:
    """(listener name in lower case, base key) for a `listener.name.<name>.<key>` key, else None."""
    if not key.startswith(LISTENER_PREFIX):
        return None
    name, sep, base = key[len(LISTENER_PREFIX):].partition(".")
    if not sep or not name or not base:
        return None
    return name, base
