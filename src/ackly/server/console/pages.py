"""The web console: server-rendered pages at `/` of the admin listener.

Pages (Jinja2 templates shipped in this package, a few lines of vanilla JS for auto-refresh):
`/` the cluster (brokers, controller, every partition's leader, ISR and HW, under-replicated,
under-min-ISR and offline partitions marked), `/topics` and `/topics/{name}` (partitions,
sizes, traffic, configs), `/groups` and `/groups/{id}` (members, assignment, lag per
partition), `/transactions` (open and hanging), `/reports` (the `ackly verify` runs found
under `admin.console.reports.dir`, each with its summary and plots).

Two writes, each a POST form behind a confirmation page: create a topic, reset a group's
offsets. Every form carries this process's CSRF token (random at start, compared in constant
time), so a page of another site cannot make a browser submit them.

Nothing here blocks the event loop for long: the node is read on the loop in one pass into
plain values (snapshot.py), and templates are rendered, files read and the cluster asked
(kafka_ops.py, reports.py) in the console's own two worker threads.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import jinja2
from aiohttp import web

from ackly.server.console.kafka_ops import ConsoleError, KafkaOps, ResetPlan
from ackly.server.console.rates import SAMPLE_INTERVAL_S, TrafficRates
from ackly.server.console.reports import ReportNotFound, list_runs, plot_bytes, read_report
from ackly.server.console.snapshot import ClusterSnapshot, build_snapshot, read_node_in_turns

if TYPE_CHECKING:
    from ackly.server.app import BrokerServer

log = logging.getLogger("ackly.console")
T = TypeVar("T")

# Kafka's legal topic names (Topic.validate): these characters, at most 249 of them.
_TOPIC_NAME = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")
MAX_PARTITIONS = 10_000
OVERVIEW_MAX_ROWS = 500
_PLAINTEXT = "PLAINTEXT"


class Console:
    """The console of one admin application: templates, CSRF token, worker threads."""

    def __init__(self, server: BrokerServer) -> None:
        self.server = server
        self.csrf_token = secrets.token_urlsafe(32)
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader("ackly.server.console", "templates"),
            autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
            undefined=jinja2.StrictUndefined,
        )
        self.env.filters["size"] = _size
        self.env.filters["ago"] = _ago
        self.env.filters["q"] = lambda s: quote(str(s), safe="")
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ackly-console")
        reports = str(server.config.get("admin.console.reports.dir"))
        self.reports_dir = Path(reports) if reports else None
        self._ops: KafkaOps | None = None
        self.rates = TrafficRates()
        self._sampler: asyncio.TimerHandle | None = None
        static = resources.files("ackly.server.console") / "static"
        self.static = {name: (static / name).read_bytes() for name in ("console.css", "console.js")}

    @property
    def node(self) -> Any:
        return self.server.node

    def ops(self) -> KafkaOps:
        """The Kafka client, to this broker's own PLAINTEXT listener as registered."""
        if self._ops is None:
            node = self.node
            me = node.metadata.brokers.get(node.broker_id)
            if me is None:
                raise ConsoleError("this broker is not registered in the cluster yet")
            endpoints = [e for e in me.listeners if e.security_protocol == _PLAINTEXT]
            if not endpoints:
                raise ConsoleError("the console's group, transaction and write pages need a "
                                   "PLAINTEXT listener on this broker")
            bootstrap = f"{endpoints[0].host}:{endpoints[0].port}"
            self._ops = KafkaOps(bootstrap, int(node.config.get("transaction.max.timeout.ms")))
        return self._ops

    async def in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, functools.partial(fn, *args))

    async def snapshot(self) -> ClusterSnapshot:
        reading = await read_node_in_turns(self.node)
        return await self.in_thread(build_snapshot, reading)

    async def render(self, request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
        context.update(broker_id=self.node.broker_id, csrf=self.csrf_token, path=request.path,
                       reports_enabled=self.reports_dir is not None)
        body = await self.in_thread(self.env.get_template(template).render, context)
        return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")

    async def error(self, request: web.Request, status: int, message: str) -> web.Response:
        return await self.render(request, "error.html", status=status, message=message)

    def check_csrf(self, form: Any) -> bool:
        return hmac.compare_digest(str(form.get("csrf", "")), self.csrf_token)

    def start_sampling(self) -> None:
        """Sample the traffic counters now and every SAMPLE_INTERVAL_S (rates.py)."""
        node = self.server.node
        if node is not None:
            self.rates.sample(time.monotonic(), {name: (t.bytes_in, t.records_in, t.bytes_out)
                                                 for name, t in node.stats.traffic.items()})
        self._sampler = asyncio.get_running_loop().call_later(SAMPLE_INTERVAL_S, self.start_sampling)

    def close(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            self._sampler = None
        # Dropping the client destroys it (librdkafka stops reconnecting to a stopped broker).
        self._ops = None
        self.executor.shutdown(wait=False, cancel_futures=True)


CONSOLE_KEY: web.AppKey[Console] = web.AppKey("console")
Handler = Callable[[web.Request, Console], Awaitable[web.StreamResponse]]


def _page(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The handler with its console; a refused or unanswered cluster request becomes a 502 page."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        console = request.app[CONSOLE_KEY]
        if console.server.node is None:
            return web.Response(status=503, text="the broker is starting")
        try:
            return await handler(request, console)
        except ConsoleError as exc:
            return await console.error(request, 502, str(exc))

    return wrapped


# --- read-only pages --------------------------------------------------------------------------


@_page
async def overview(request: web.Request, console: Console) -> web.StreamResponse:
    snapshot = await console.snapshot()
    everything = snapshot.partitions
    # Marked partitions first, then the others, up to OVERVIEW_MAX_ROWS: a page of thousands
    # of rows helps no one and costs the whole process its rendering (and collection).
    marked = [p for p in everything if p.offline or p.under_replicated or p.under_min_isr]
    shown = marked[:OVERVIEW_MAX_ROWS]
    if len(shown) < OVERVIEW_MAX_ROWS:
        shown += [p for p in everything if not (p.offline or p.under_replicated or p.under_min_isr)
                  ][:OVERVIEW_MAX_ROWS - len(shown)]
    return await console.render(request, "overview.html", snapshot=snapshot, partitions=shown,
                                partition_count=len(everything))


@_page
async def topics(request: web.Request, console: Console) -> web.StreamResponse:
    snapshot = await console.snapshot()
    return await console.render(request, "topics.html", snapshot=snapshot, rates=console.rates.rates())


@_page
async def topic(request: web.Request, console: Console) -> web.StreamResponse:
    snapshot = await console.snapshot()
    found = snapshot.topic(request.match_info["name"])
    if found is None:
        return await console.error(request, 404, f"unknown topic {request.match_info['name']!r}")
    return await console.render(request, "topic.html", snapshot=snapshot, topic=found,
                                rate=console.rates.rates().get(found.name))


@_page
async def groups(request: web.Request, console: Console) -> web.StreamResponse:
    found = await console.in_thread(console.ops().groups)
    return await console.render(request, "groups.html", groups=found)


@_page
async def group(request: web.Request, console: Console) -> web.StreamResponse:
    group_id = request.match_info["group_id"]
    found = await console.in_thread(console.ops().group, group_id)
    if found is None:
        return await console.error(request, 404, f"unknown group {group_id!r}")
    return await console.render(request, "group.html", group=found)


@_page
async def transactions(request: web.Request, console: Console) -> web.StreamResponse:
    report = await console.in_thread(console.ops().transactions)
    return await console.render(request, "transactions.html", report=report, now_ms=int(time.time() * 1000))


@_page
async def reports(request: web.Request, console: Console) -> web.StreamResponse:
    if console.reports_dir is None:
        return await console.render(request, "reports.html", runs=None, root="")
    runs = await console.in_thread(list_runs, console.reports_dir)
    return await console.render(request, "reports.html", runs=runs, root=str(console.reports_dir))


@_page
async def report(request: web.Request, console: Console) -> web.StreamResponse:
    rel = request.query.get("run", "")
    if console.reports_dir is None:
        return await console.error(request, 404, "no reports directory (admin.console.reports.dir)")
    try:
        found = await console.in_thread(read_report, console.reports_dir, rel)
    except ReportNotFound:
        return await console.error(request, 404, f"no report {rel!r}")
    return await console.render(request, "report.html", report=found)


@_page
async def plot(request: web.Request, console: Console) -> web.StreamResponse:
    if console.reports_dir is None:
        raise web.HTTPNotFound()
    try:
        data = await console.in_thread(plot_bytes, console.reports_dir, request.query.get("run", ""),
                                       request.query.get("name", ""))
    except ReportNotFound:
        raise web.HTTPNotFound() from None
    return web.Response(body=data, content_type="image/png")


async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    body = request.app[CONSOLE_KEY].static.get(name)
    if body is None:
        raise web.HTTPNotFound()
    kind = "text/css" if name.endswith(".css") else "application/javascript"
    return web.Response(body=body, content_type=kind, headers={"Cache-Control": "max-age=300"})


# --- the two writes -----------------------------------------------------------------------------


@_page
async def create_topic_form(request: web.Request, console: Console) -> web.StreamResponse:
    return await console.render(request, "create_topic.html", form={"name": "", "partitions": "1",
                                                                    "replication_factor": "1", "configs": ""},
                                problem=None)


@_page
async def create_topic(request: web.Request, console: Console) -> web.StreamResponse:
    """First POST: validate and show the confirmation; second (confirmed=yes): create."""
    form = await request.post()
    if not console.check_csrf(form):
        return await console.error(request, 403, "missing or wrong CSRF token: reload the form and try again")
    values = {k: str(form.get(k, "")).strip() for k in ("name", "partitions", "replication_factor", "configs")}
    try:
        name, partitions, rf, configs = _topic_request(values)
    except ValueError as exc:
        return await console.render(request, "create_topic.html", status=400, form=values, problem=str(exc))
    if form.get("confirmed") != "yes":
        return await console.render(request, "confirm_topic.html", form=values, name=name, partitions=partitions,
                                    replication_factor=rf, configs=sorted(configs.items()))
    try:
        await console.in_thread(console.ops().create_topic, name, partitions, rf, configs)
    except ConsoleError as exc:
        return await console.render(request, "create_topic.html", status=400, form=values, problem=str(exc))
    log.info("console: created topic %s (%d partitions, replication factor %d)", name, partitions, rf)
    raise web.HTTPSeeOther(f"/topics/{quote(name, safe='')}?created=1")


def _topic_request(values: dict[str, str]) -> tuple[str, int, int, dict[str, str]]:
    name = values["name"]
    if not _TOPIC_NAME.match(name) or name in (".", ".."):
        raise ValueError("a topic name is 1 to 249 of the characters a-z A-Z 0-9 . _ - (not '.' or '..')")
    try:
        partitions = int(values["partitions"])
        rf = int(values["replication_factor"])
    except ValueError:
        raise ValueError("partitions and replication factor are whole numbers") from None
    if not 1 <= partitions <= MAX_PARTITIONS:
        raise ValueError(f"partitions: from 1 to {MAX_PARTITIONS}")
    if rf < 1:
        raise ValueError("replication factor: at least 1")
    configs = {}
    for line in values["configs"].splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"config line {line!r}: expected key=value")
        configs[key.strip()] = value.strip()
    return name, partitions, rf, configs


@_page
async def reset_offsets(request: web.Request, console: Console) -> web.StreamResponse:
    """First POST: the plan (current and new offsets) to confirm; second (confirmed=yes): commit."""
    group_id = request.match_info["group_id"]
    form = await request.post()
    if not console.check_csrf(form):
        return await console.error(request, 403, "missing or wrong CSRF token: reload the form and try again")
    topic_name = str(form.get("topic", "")).strip()
    to = str(form.get("to", ""))
    raw_offset = str(form.get("offset", "")).strip()
    try:
        offset = int(raw_offset) if to == "offset" else None
    except ValueError:
        return await console.error(request, 400, f"offset {raw_offset!r} is not a whole number")
    if not topic_name:
        return await console.error(request, 400, "choose the topic whose offsets to reset")
    plan: ResetPlan = await console.in_thread(console.ops().plan_reset, group_id, topic_name, to, offset)
    if form.get("confirmed") != "yes":
        return await console.render(request, "confirm_reset.html", plan=plan, raw_offset=raw_offset)
    await console.in_thread(console.ops().apply_reset, plan)
    log.info("console: reset offsets of group %s on %s to %s", group_id, topic_name, to)
    raise web.HTTPSeeOther(f"/groups/{quote(group_id, safe='')}?reset=1")


ROUTES = [
    web.get("/", overview),
    web.get("/topics", topics),
    web.get("/topics/{name}", topic),
    web.get("/create-topic", create_topic_form),
    web.post("/create-topic", create_topic),
    web.get("/groups", groups),
    web.get("/groups/{group_id}", group),
    web.post("/groups/{group_id}/reset", reset_offsets),
    web.get("/transactions", transactions),
    web.get("/reports", reports),
    web.get("/reports/run", report),
    web.get("/reports/plot", plot),
    web.get("/static/{name}", static),
]


def install(app: web.Application, server: BrokerServer) -> None:
    """The console's routes and state on the admin application."""
    console = Console(server)
    app[CONSOLE_KEY] = console

    async def start(_: web.Application) -> None:
        console.start_sampling()

    async def close(_: web.Application) -> None:
        console.close()

    app.on_startup.append(start)
    app.on_cleanup.append(close)
    app.add_routes(ROUTES)


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _ago(ms: int | None, now_ms: int) -> str:
    if ms is None or ms < 0:
        return "-"
    seconds = max(now_ms - ms, 0) / 1000
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
