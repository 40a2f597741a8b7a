"""The web console of an in-process broker, over real HTTP: pages, the CSRF check, the
confirmation steps of its two writes, and the verify reports it lists."""

from __future__ import annotations

import json
import re
import struct
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from ackly.testing.inprocess import InProcessBroker


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def fetch(url: str, form: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    data = None if form is None else urllib.parse.urlencode(form).encode()
    try:
        with _opener.open(urllib.request.Request(url, data=data), timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def page(url: str, form: dict[str, str] | None = None) -> tuple[int, str]:
    status, _, body = fetch(url, form)
    return status, body.decode()


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the form carries a CSRF token"
    return found.group(1)


def tiny_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\x80")) + chunk(b"IEND", b""))


@pytest.fixture
def console(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    reports = tmp_path / "reports"
    run = reports / "matrix" / "acks-all"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({
        "ok": False, "verdict": "FAIL", "semantics": "at-least-once", "stats": {"ops": 1234},
        "check": {"anomalies": [{"name": "lost-write", "count": 2, "status": "forbidden", "allowed": False,
                                 "reason": "acknowledged and never read"}]},
        "plots": ["throughput.png", "../escape.png"],
    }))
    (run / "summary.md").write_text("# verdict: FAIL\n<script>alert(1)</script>\n")
    (run / "throughput.png").write_bytes(tiny_png())
    (tmp_path / "secret.png").write_bytes(b"not yours")
    broker = InProcessBroker(str(tmp_path / "data"), {
        "admin.listener": "127.0.0.1:0", "admin.console.reports.dir": str(reports),
        "offsets.topic.num.partitions": "1", "group.initial.rebalance.delay.ms": "0",
    }).start()
    try:
        assert broker.server is not None and broker.server.admin_address is not None
        host, port = broker.server.admin_address
        yield f"http://{host}:{port}", reports
    finally:
        broker.stop()


def test_create_topic_needs_the_token_and_a_confirmation_then_shows_on_every_page(console) -> None:
    base, _ = console
    status, html = page(base + "/create-topic")
    assert status == 200
    token = csrf_of(html)
    form = {"name": "orders", "partitions": "3", "replication_factor": "1", "configs": "retention.ms=60000"}

    status, html = page(base + "/create-topic", {**form, "csrf": "forged", "confirmed": "yes"})
    assert status == 403 and "CSRF" in html

    status, html = page(base + "/create-topic", {**form, "csrf": token})
    assert status == 200 and "Create topic orders?" in html and 'name="confirmed" value="yes"' in html
    status, html = page(base + "/topics")
    assert "orders" not in html, "nothing is created before the confirmation"

    status, headers, _ = fetch(base + "/create-topic", {**form, "csrf": token, "confirmed": "yes"})
    assert status == 303 and headers["Location"].startswith("/topics/orders")
    status, html = page(base + "/topics/orders")
    assert status == 200 and "retention.ms" in html and "60000" in html
    assert html.count('class="partition"') >= 3, "three partitions, in sync"

    status, html = page(base + "/")
    assert status == 200 and 'id="partition-orders-2"' in html and "healthy" in html

    status, html = page(base + "/create-topic", {**form, "csrf": token, "confirmed": "yes"})
    assert status == 400 and "already exists" in html.lower()
    status, html = page(base + "/create-topic", {**form, "name": "bad/name", "csrf": token})
    assert status == 400 and "topic name" in html
    status, html = page(base + "/create-topic", {**form, "partitions": "0", "csrf": token})
    assert status == 400 and "partitions" in html


def test_reports_are_listed_with_their_plots_and_paths_stay_inside_the_directory(console) -> None:
    base, _ = console
    status, html = page(base + "/reports")
    assert status == 200 and "matrix/acks-all" in html and "FAIL" in html
    status, html = page(base + "/reports/run?run=" + urllib.parse.quote("matrix/acks-all"))
    assert status == 200 and "lost-write" in html and 'class="violation"' in html
    assert "&lt;script&gt;" in html and "<script>alert" not in html, "report text is escaped"
    assert "throughput.png" in html and "escape.png" not in html
    status, headers, body = fetch(base + "/reports/plot?run=matrix/acks-all&name=throughput.png")
    assert status == 200 and headers["Content-Type"] == "image/png" and body.startswith(b"\x89PNG")
    assert fetch(base + "/reports/plot?run=matrix/acks-all&name=../../../secret.png")[0] == 404
    assert fetch(base + "/reports/run?run=../..")[0] == 404
    assert fetch(base + "/reports/plot?run=..&name=secret.png")[0] == 404


def test_groups_transactions_and_unknown_names(console) -> None:
    base, _ = console
    status, html = page(base + "/groups")
    assert status == 200 and "no consumer groups" in html
    status, html = page(base + "/transactions")
    assert status == 200 and "no open transactions" in html and "no hanging transactions" in html
    assert page(base + "/topics/nope")[0] == 404
    assert page(base + "/groups/nope")[0] == 404
    status, headers, _ = fetch(base + "/static/console.css")
    assert status == 200 and headers["Content-Type"].startswith("text/css")


@pytest.mark.slow
@pytest.mark.clients
def test_group_lag_and_an_offset_reset_behind_its_confirmation(console) -> None:
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    base, _ = console
    bootstrap = page(base + "/")[1]
    address = re.search(r"<td>(127\.0\.0\.1:\d+)</td>", bootstrap)
    assert address, "the overview lists this broker's address"
    admin = AdminClient({"bootstrap.servers": address.group(1)})
    admin.create_topics([NewTopic("events", 2, 1)])["events"].result(timeout=30)
    producer = Producer({"bootstrap.servers": address.group(1)})
    for i in range(10):
        producer.produce("events", value=b"%d" % i, partition=i % 2)
    assert producer.flush(20) == 0
    consumer = Consumer({"bootstrap.servers": address.group(1), "group.id": "billing",
                         "enable.auto.commit": False})
    try:
        # Committed without joining (generation -1), as a tool does for an empty group.
        consumer.commit(offsets=[TopicPartition("events", 0, 2), TopicPartition("events", 1, 5)],
                        asynchronous=False)
    finally:
        consumer.close()

    status, html = page(base + "/groups")
    assert status == 200 and 'id="group-billing"' in html
    status, html = page(base + "/groups/billing")
    assert status == 200 and '<span id="total-lag">3</span>' in html, "lag 5-2 on 0 and 5-5 on 1"
    token = csrf_of(html)

    form = {"topic": "events", "to": "earliest", "offset": "", "csrf": token}
    status, html = page(base + "/groups/billing/reset", form)
    assert status == 200 and "Reset the offsets of billing on events to earliest?" in html
    assert '<span id="total-lag">3</span>' in page(base + "/groups/billing")[1], "nothing committed yet"
    assert page(base + "/groups/billing/reset", {**form, "csrf": "x", "confirmed": "yes"})[0] == 403

    status, headers, _ = fetch(base + "/groups/billing/reset", {**form, "confirmed": "yes"})
    assert status == 303 and headers["Location"].startswith("/groups/billing")
    assert '<span id="total-lag">10</span>' in page(base + "/groups/billing")[1]

    status, html = page(base + "/groups/billing/reset", {**form, "to": "offset", "offset": "99", "confirmed": "yes"})
    assert status == 303, html
    html = page(base + "/groups/billing")[1]
    assert '<span id="total-lag">0</span>' in html, "an offset past HW is clamped to HW"
    status, html = page(base + "/groups/billing/reset", {**form, "topic": "nope"})
    assert status == 502 and "unknown topic" in html

    # A group with an active member: the reset is refused, nothing is committed.
    member = Consumer({"bootstrap.servers": address.group(1), "group.id": "billing",
                       "enable.auto.commit": False, "client.id": "billing-worker"})
    try:
        member.subscribe(["events"])
        deadline = time.monotonic() + 20
        while not member.assignment():
            assert time.monotonic() < deadline, "the consumer joined the group"
            member.poll(0.2)
        status, html = page(base + "/groups/billing")
        assert "billing-worker" in html and "events-0" in html, "the member and its assignment"
        status, html = page(base + "/groups/billing/reset", {**form, "confirmed": "yes"})
        assert status == 502 and "active members" in html
        assert '<span id="total-lag">0</span>' in page(base + "/groups/billing")[1]
    finally:
        member.close()
    assert 'id="topic-nope"' not in page(base + "/topics")[1], "a look-up creates no topic"
