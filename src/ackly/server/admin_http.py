"""The admin HTTP listener (`admin.listener`): metrics, this broker's health, the cluster's.

One aiohttp server on the broker's event loop. Every handler answers from memory (the node's
state, the counters of server/metrics.py) without I/O or blocking work, so a scrape costs the
Kafka listener one short turn of the loop. Pages are routes: `build_app` registers each
module's routes on one application (`ROUTES` here; a later page adds a table of its own to
`add_routes`), so the listener grows without touching the broker.

- `GET /metrics`: Prometheus text format (docs/metrics.md lists every metric).
- `GET /v1/health`: 200 when this broker is up, registered and in sync (in the ISR of every
  partition it hosts), else 503; JSON with the reasons either way.
- `GET /v1/cluster/health`: the cluster as this broker's metadata view shows it (brokers
  down, leaderless, under-replicated, under- and at-min-ISR partitions; cluster/health.py).
- `/` and the pages below it: the web console (server/console/pages.py).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from ackly.cluster.health import cluster_health
from ackly.errors import ConfigError
from ackly.server.console.pages import install as install_console
from ackly.server.metrics import BrokerCollector

if TYPE_CHECKING:
    from ackly.server.app import BrokerServer

log = logging.getLogger("ackly.admin")

SERVER_KEY: web.AppKey[BrokerServer] = web.AppKey("server")
REGISTRY_KEY: web.AppKey[CollectorRegistry] = web.AppKey("registry")


class _Collected:
    """Metric families already read from the node, for the text encoder."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


async def metrics(request: web.Request) -> web.Response:
    # The node is read on the loop (it is not thread-safe), in one pass into plain objects;
    # the text encoding, most of a large scrape's cost, runs in a worker thread so the Kafka
    # listener is not held up for the whole of it.
    families = list(request.app[REGISTRY_KEY].collect())
    body = await asyncio.get_running_loop().run_in_executor(
        None, generate_latest, _Collected(families)  # type: ignore[arg-type]
    )
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def broker_health(server: BrokerServer) -> dict[str, Any]:
    """This broker: up (not failed, not stopping), registered, and in the ISR of every
    partition the metadata assigns to it (Redpanda's and Kafka's "in sync" readiness)."""
    node = server.node
    reasons = []
    if server.failure is not None:
        reasons.append(f"failed: {server.failure}")
    if server.stopping:
        reasons.append("stopping")
    member = node.member
    registered = node.broker_id in node.metadata.brokers if node.external_metadata else True
    if not node.joined:
        reasons.append("not joined to the cluster yet")
    elif not registered:
        reasons.append("not registered in the cluster metadata")
    out_of_sync = [
        str(tp) for tp, state in node.metadata.all_partitions()
        if node.broker_id in state.replicas and node.broker_id not in state.isr
    ]
    if out_of_sync:
        shown = ", ".join(out_of_sync[:5]) + (", ..." if len(out_of_sync) > 5 else "")
        reasons.append(f"not in the ISR of {len(out_of_sync)} partitions ({shown})")
    controller = node.metadata.controller
    return {
        "broker_id": node.broker_id,
        "healthy": not reasons,
        "reasons": reasons,
        "registered": registered,
        "metadata_synced": member.synced if node.external_metadata else True,
        "controller_id": None if controller is None else controller.broker_id,
        "out_of_sync_partitions": len(out_of_sync),
    }


async def health(request: web.Request) -> web.Response:
    report = broker_health(request.app[SERVER_KEY])
    return web.json_response(report, status=200 if report["healthy"] else 503)


async def health_of_cluster(request: web.Request) -> web.Response:
    node = request.app[SERVER_KEY].node

    def min_isr(topic: str) -> int:
        state = node.topics.get(topic)
        return 1 if state is None else int(state.config.min_insync_replicas)

    report = cluster_health(node.metadata, min_isr).to_json()
    report["reported_by"] = node.broker_id
    return web.json_response(report)


ROUTES = [
    web.get("/metrics", metrics),
    web.get("/v1/health", health),
    web.get("/v1/cluster/health", health_of_cluster),
]


def build_app(server: BrokerServer, *route_tables: list[web.RouteDef]) -> web.Application:
    """The admin application: these routes, then each further table (pages)."""
    app = web.Application()
    app[SERVER_KEY] = server
    registry = CollectorRegistry(auto_describe=False)
    config = server.config
    registry.register(BrokerCollector(
        server, max_topics=int(config.get("admin.metrics.max.topics")),
        max_partition_series=int(config.get("admin.metrics.max.partition.series")),
    ))
    app[REGISTRY_KEY] = registry
    app.add_routes(ROUTES)
    install_console(app, server)
    for table in route_tables:
        app.add_routes(table)
    return app


class AdminListener:
    """The running listener: `start` binds (port 0 picks a free one), `stop` closes."""

    def __init__(self, server: BrokerServer, host: str, port: int) -> None:
        self.app = build_app(server)
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> tuple[str, int]:
        family, type_, proto, _, address = socket.getaddrinfo(
            self.host, self.port, type=socket.SOCK_STREAM
        )[0]
        sock = socket.socket(family, type_, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
        except OSError as exc:
            sock.close()
            raise ConfigError("admin.listener", f"cannot listen on {self.host}:{self.port}: {exc}") from None
        self.host, self.port = sock.getsockname()[:2]
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()
        log.info("admin listener on http://%s:%d", self.host, self.port)
        return self.host, self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
