"""Network cuts between two brokers of a test cluster, through one fault proxy.

Each broker listens on its own port and advertises the proxy's listener for it instead, so
the brokers (and clients, after their first Metadata) reach each other through the proxy
(testing/fault_proxy.py). `cut(a, b)` resets every request that broker a sends to broker b's
listener and back, matched by the client id a broker's peer connections carry
("ackly-broker-<id>", server/cluster_io.py), and resets the connections already open between
them: replica fetches and transaction markers between the two fail, while clients still reach
both. `heal(a, b)` removes those rules; the brokers reconnect on their own.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping

from ackly.testing.fault_proxy import FaultProxy, Rule


def free_port() -> int:
    """A port free now (the broker binds it a moment later, as the process clusters do)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def peer_client_id(broker_id: int) -> str:
    return f"ackly-broker-{broker_id}"


class PeerCuts:
    def __init__(self, ports: Mapping[int, int]) -> None:
        """`ports`: the port each broker will listen on, known before the brokers start."""
        self.proxy = FaultProxy(upstreams={b: ("127.0.0.1", p) for b, p in ports.items()}).start()
        self.advertised_ports = {b: int(a.rsplit(":", 1)[1]) for b, a in self.proxy.listeners.items()}
        self._cuts: dict[tuple[int, int], list[Rule]] = {}

    def cut(self, a: int, b: int) -> None:
        """Cut the network between brokers a and b, both ways, until `heal(a, b)`."""
        key = (min(a, b), max(a, b))
        if key in self._cuts:
            return
        pairs = ((a, b), (b, a))
        self._cuts[key] = [
            self.proxy.add_rule(None, "reset", broker_id=to, client_id=peer_client_id(source))
            for source, to in pairs
        ]
        for source, to in pairs:
            self.proxy.disconnect_all(reset=True, broker_id=to, client_id=peer_client_id(source))

    def heal(self, a: int, b: int) -> None:
        for rule in self._cuts.pop((min(a, b), max(a, b)), []):
            self.proxy.remove_rule(rule)

    def stop(self) -> None:
        self.proxy.stop()
