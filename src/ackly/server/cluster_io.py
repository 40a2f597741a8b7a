"""The shell's side of a clustered broker: carries the node's peer requests and store commands.

After every input to the node the server calls `pump()`, which drains `node.take_outputs()`:
peer requests go to the PeerPool (one connection per destination broker, server/peers.py),
store commands to the metadata store client (EtcdStore for `etcd://...`, or a client of a
SharedMemoryStore for brokers sharing one process). Outcomes come back as node inputs with
the current `now_ms`, and each is followed by the server's `after_event`, which pumps again.

Stopping (`shutdown`): a controlled shutdown first (the controller moves leadership away;
bounded by `controlled_shutdown_timeout_ms`), then the node leaves (its lease is revoked, so
its registration goes at once rather than after the session timeout), then the peer
connections and the store client close. A broker killed with SIGKILL does none of this; the
others notice when its lease expires.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Any, Protocol

from ackly.broker.node import BrokerNode
from ackly.cluster.store import Command, StoreInput
from ackly.server.memory_store_bridge import SharedMemoryStore
from ackly.server.peer_sasl import PeerSasl
from ackly.server.peers import PeerConfig, PeerPool

log = logging.getLogger("ackly.cluster")

CONTROLLED_SHUTDOWN_TIMEOUT_MS = 10_000
LEAVE_TIMEOUT_MS = 2_000  # how long to wait for the lease revocation to be answered


class StoreClient(Protocol):
    async def start(self) -> None: ...

    def submit(self, commands: list[Command]) -> None: ...

    async def close(self) -> None: ...


class ClusterIO:
    """Peer connections and the metadata store client of one BrokerServer."""

    def __init__(
        self,
        node: BrokerNode,
        *,
        now_ms: Callable[[], int],
        after_event: Callable[[], None],
        on_fatal: Callable[[BaseException], None],
        metadata: str | None = None,
        hub: SharedMemoryStore | None = None,
        peer_ssl: ssl.SSLContext | None = None,
        peer_sasl: PeerSasl | None = None,
    ) -> None:
        """`peer_ssl`: the TLS context for connections to the other brokers, when the
        inter-broker listener uses TLS (server/tls.py); `peer_sasl`: what they authenticate
        with when it uses SASL (server/peer_sasl.py)."""
        assert (metadata is None) != (hub is None), "give an etcd URL or a shared memory store"
        self.node = node
        self._now_ms = now_ms
        self._after_event = after_event
        self._on_fatal = on_fatal
        config = node.config
        # A follower's fetch may wait replica.fetch.wait.max.ms at the leader before it is
        # answered; the socket timeout counts beyond that.
        timeout_ms = int(config.get("replica.socket.timeout.ms")) + int(
            config.get("replica.fetch.wait.max.ms")
        )
        self.peers = PeerPool(
            PeerConfig(client_id=f"ackly-broker-{node.broker_id}", request_timeout_ms=timeout_ms),
            resolve=node.broker_address, on_response=self._on_peer_response,
            on_failure=self._on_peer_failure, ssl_context=peer_ssl, sasl=peer_sasl,
        )
        self.store: StoreClient
        if metadata is not None:
            # Imported here: grpc costs ~40 ms of start-up that a single broker never needs.
            from ackly.server.etcd_store import EtcdStore, etcd_security, parse_etcd_url

            self.store = EtcdStore(parse_etcd_url(metadata), self._on_store_inputs,
                                   security=etcd_security(config, metadata))
        else:
            assert hub is not None
            self.store = hub.client(f"broker-{node.broker_id}", self._on_store_inputs)
        self._closed = False
        self._shutdown_ready: asyncio.Future[None] | None = None
        self._revocation_sent = False

    async def start(self) -> None:
        await self.store.start()

    def pump(self) -> None:
        """Send what the node wants sent (call after every input to the node)."""
        if self._closed:
            return
        peers, commands = self.node.take_outputs()
        for request in peers:
            self.peers.send(request)
        if commands:
            self.store.submit(commands)
        waiter = self._shutdown_ready
        if waiter is not None and not waiter.done() and self.node.shutdown_ready(self._now_ms()):
            waiter.set_result(None)

    # --- inputs ------------------------------------------------------------------------------

    # An exception from the node here is a bug or metadata it cannot read: the server stops the
    # broker (fail-stop) rather than let it act on a view it no longer follows.

    def _on_peer_response(self, request_id: int, response: Any) -> None:
        if self._closed:
            return
        try:
            self.node.on_peer_response(request_id, response, self._now_ms())
        except Exception as exc:
            self._fail(exc)
            return
        self._after_event()

    def _on_peer_failure(self, request_id: int, reason: str) -> None:
        if self._closed:
            return
        try:
            self.node.on_peer_failure(request_id, reason, self._now_ms())
        except Exception as exc:
            self._fail(exc)
            return
        self._after_event()

    def _on_store_inputs(self, items: list[StoreInput]) -> None:
        if self._closed:
            return
        try:
            self.node.on_store_inputs(items, self._now_ms())
        except Exception as exc:
            self._fail(exc)
            return
        self._after_event()

    def _fail(self, exc: BaseException) -> None:
        self._closed = True  # nothing more goes to or comes from the node
        self._on_fatal(exc)

    # --- stopping ----------------------------------------------------------------------------

    async def shutdown(self) -> None:
        """Controlled shutdown, leave, close (each step bounded); see the module docstring."""
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        self._shutdown_ready = loop.create_future()
        self.node.begin_controlled_shutdown(self._now_ms())
        self._after_event()
        try:
            await asyncio.wait_for(asyncio.shield(self._shutdown_ready),
                                   CONTROLLED_SHUTDOWN_TIMEOUT_MS / 1000)
        except TimeoutError:
            log.warning("controlled shutdown did not complete in %d ms; leaving anyway",
                        CONTROLLED_SHUTDOWN_TIMEOUT_MS)
        self.node.leave(self._now_ms())
        self._after_event()
        # The revocation is in flight; let it land, so the registration goes now.
        await self._settle(LEAVE_TIMEOUT_MS)
        await self.close()

    async def leave(self) -> None:
        """Leave now, without a controlled shutdown (the log directory failed): revoke the
        lease, let the revocation land (bounded), close."""
        if self._closed:
            return
        self.node.leave(self._now_ms())
        self._after_event()
        await self._settle(LEAVE_TIMEOUT_MS)
        await self.close()

    async def _settle(self, timeout_ms: int) -> None:
        """Wait until the store client has nothing in flight (EtcdStore), at most timeout_ms."""
        settle = getattr(self.store, "settle", None)  # only the etcd client has calls in flight
        if settle is not None:
            await settle(timeout_ms / 1000)

    async def close(self) -> None:
        """Close peer connections and the store client now (no controlled shutdown)."""
        if self._closed:
            return
        self._closed = True
        await self.peers.close()
        await self.store.close()
