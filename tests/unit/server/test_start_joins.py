"""BrokerServer.start in a cluster returns, and the broker accepts clients, only once it has
joined (its view, its registration, a controller); a broker that cannot join in
initial.broker.registration.timeout.ms gives up with NotJoinedError."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from ackly.server.app import BrokerServer, NotJoinedError
from ackly.server.etcd_process import free_port
from ackly.server.memory_store_bridge import SharedMemoryStore


def test_each_broker_has_joined_when_its_start_returns(tmp_path: Path) -> None:
    async def main() -> None:
        hub = SharedMemoryStore()
        servers = []
        try:
            for broker_id in range(3):
                server = BrokerServer(data_dir=str(tmp_path / f"b{broker_id}"), port=0,
                                      properties={"broker.id": str(broker_id)}, metadata_hub=hub)
                await server.start()
                servers.append(server)
                # What a client connecting now would be told: a controller and this broker.
                metadata = server.node.metadata
                assert server.node.joined
                assert metadata.controller is not None
                assert set(range(broker_id + 1)) <= set(metadata.brokers)
        finally:
            for server in reversed(servers):
                await server.stop()

    asyncio.run(main())


def test_a_broker_whose_store_never_answers_gives_up_without_listening(tmp_path: Path) -> None:
    port = free_port()

    async def main() -> None:
        server = BrokerServer(
            data_dir=str(tmp_path / "b0"), port=port,
            properties={"broker.id": "0", "initial.broker.registration.timeout.ms": "300"},
            metadata=f"etcd://127.0.0.1:{free_port()}",  # nothing listens there
        )
        with pytest.raises(NotJoinedError, match="no view of the metadata store yet"):
            await server.start()

    asyncio.run(main())
    # It never accepted a client.
    with socket.socket() as s, pytest.raises(ConnectionRefusedError):
        s.connect(("127.0.0.1", port))
