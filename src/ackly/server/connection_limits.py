"""Connection limits: `max.connections`, `max.connections.per.ip` and its overrides.

What it owns: how many client connections are open, in total and per IP address, and the
decision to admit or refuse a new one. Invariants: `open_connections` equals the sum of
the per-IP counts; a refused connection is never counted; an IP whose count falls to zero
is forgotten (the table stays as small as the set of connected addresses).

As Kafka's ConnectionQuotas, a per-IP override (possibly 0, which blocks an address) takes
the place of `max.connections.per.ip` for its host. Unlike Kafka's acceptor, which waits for
a free slot once `max.connections` is reached, a connection over either limit is closed as
soon as it is accepted: clients retry with backoff, and connections already open keep working.
Plain arithmetic without I/O; the shell asks it at accept and tells it at close.
"""

from __future__ import annotations

from collections.abc import Mapping


class ConnectionLimits:
    def __init__(self, max_connections: int, max_per_ip: int,
                 per_ip_overrides: Mapping[str, int] | None = None) -> None:
        self.max_connections = max_connections
        self.max_per_ip = max_per_ip
        self.per_ip_overrides = dict(per_ip_overrides or {})
        self.open_connections = 0
        self._per_ip: dict[str, int] = {}
        # Refusals by limit key, for logs and the admin view.
        self.refused: dict[str, int] = {"max.connections": 0, "max.connections.per.ip": 0}

    def limit_for(self, ip: str) -> int:
        return self.per_ip_overrides.get(ip, self.max_per_ip)

    def open_from(self, ip: str) -> int:
        return self._per_ip.get(ip, 0)

    def admit(self, ip: str) -> str | None:
        """Count a new connection from `ip`, or say which limit refuses it (its config key)."""
        count = self._per_ip.get(ip, 0)
        if count >= self.limit_for(ip):
            self.refused["max.connections.per.ip"] += 1
            return "max.connections.per.ip"
        if self.open_connections >= self.max_connections:
            self.refused["max.connections"] += 1
            return "max.connections"
        self._per_ip[ip] = count + 1
        self.open_connections += 1
        return None

    def release(self, ip: str) -> None:
        """An admitted connection from `ip` closed."""
        count = self._per_ip[ip] - 1
        if count:
            self._per_ip[ip] = count
        else:
            del self._per_ip[ip]
        self.open_connections -= 1
