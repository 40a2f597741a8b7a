"""Resources a client cannot exhaust: frame memory, the request memory pool, connection limits,
idle connections and connections that never finish a first request.

The hostile clients here are raw sockets; the clients that must keep working are
confluent-kafka (librdkafka) and the test's own wire client.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import resource
import selectors
import socket
import struct
import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from kio.schema.api_versions.v3.request import ApiVersionsRequest
from kio.schema.errors import ErrorCode

from ackly.testing.broker_process import BrokerProcess
from ackly.testing.inprocess import InProcessBroker
from ackly.testing.wire import WireClient
from tests.integration import wire_requests as rq

pytestmark = pytest.mark.slow

MiB = 1024 * 1024


def api_versions(client: WireClient) -> object:
    return client.request(ApiVersionsRequest(client_software_name="t", client_software_version="1"))


def wait_until(condition, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


def vm_rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@contextlib.contextmanager
def open_files_at_least(n: int) -> Iterator[None]:
    """Raise this process's RLIMIT_NOFILE (a broker started meanwhile inherits it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= n:
        yield
        return
    if hard != resource.RLIM_INFINITY and hard < n:
        pytest.skip(f"needs {n} open files, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def produce_and_consume(bootstrap: str, count: int, value_bytes: int, timeout_s: float = 30) -> None:
    """A real client's round trip: produce `count` values with acks=all, read them back."""
    topic = f"limits-{uuid.uuid4().hex[:8]}"
    values = [(b"%08d" % i) * (value_bytes // 8) for i in range(count)]
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                         "message.timeout.ms": int(timeout_s * 1000)})
    errors: list[object] = []
    for v in values:
        producer.produce(topic, v, partition=0,
                         on_delivery=lambda err, _m: errors.append(err) if err else None)
        producer.poll(0)
    assert producer.flush(timeout_s) == 0 and not errors
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "limits",
                         "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        got: list[bytes] = []
        deadline = time.monotonic() + timeout_s
        while len(got) < count and time.monotonic() < deadline:
            m = consumer.poll(0.5)
            if m is not None and m.error() is None:
                got.append(m.value())
        assert got == values
    finally:
        consumer.close()


# --- the request memory pool (in-process, so the test can read the pool's counters) -----------


@pytest.fixture
def small_pool_broker(request, tmp_path) -> Iterator[InProcessBroker]:  # type: ignore[no-untyped-def]
    pool_bytes = getattr(request, "param", MiB)
    broker = InProcessBroker(str(tmp_path / "d"), {
        "queued.max.request.bytes": str(pool_bytes), "message.max.bytes": str(2 * MiB),
        "log.flush.policy": "never",
    }).start()
    try:
        yield broker
    finally:
        broker.stop()


def pool_state(broker: InProcessBroker) -> tuple[int, int, bool]:
    assert broker.server is not None
    pool = broker.server.pool
    return broker.call(lambda: (pool.used_bytes, pool.exhaustions, pool.exhausted))


@pytest.mark.parametrize("small_pool_broker", [256 * 1024], indirect=True)
def test_a_full_pool_pauses_reading_and_a_real_client_still_completes(small_pool_broker) -> None:
    """3 MB of 10 KiB values through a 256 KiB pool, in Produce requests of up to 1 MB: the
    pool is full again and again (reading pauses, and the frame in progress may go on), and
    at the end every charged byte is released."""
    produce_and_consume(small_pool_broker.bootstrap, count=300, value_bytes=10 * 1024)
    wait_until(lambda: pool_state(small_pool_broker)[0] == 0, 10, "the pool to be released")
    _, exhaustions, exhausted = pool_state(small_pool_broker)
    assert exhaustions >= 1 and not exhausted


def test_partial_frames_that_fill_the_pool_do_not_wait_for_each_other(small_pool_broker) -> None:
    """Three connections each send 90% of a 800 KB Produce: 2.1 MB of partial frames in a 1 MiB
    pool. The oldest frame may go on, so all three complete once their clients finish."""
    with WireClient(small_pool_broker.bootstrap) as c:
        assert c.request(rq.create_topic("partial")).topics[0].error_code == ErrorCode.none
    clients = [WireClient(small_pool_broker.bootstrap, timeout_s=20) for _ in range(3)]
    frames = [c.frame(rq.produce("partial", rq.batch(b"v" * 800_000))) for c in clients]
    cut = len(frames[0]) * 9 // 10
    try:
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            # sendall may block while the broker does not read: one thread per client.
            list(pool.map(lambda cf: cf[0].send_raw(cf[1][:cut]), zip(clients, frames, strict=True)))
            wait_until(lambda: pool_state(small_pool_broker)[2], 10, "the pool to fill")
            list(pool.map(lambda cf: cf[0].send_raw(cf[1][cut:]), zip(clients, frames, strict=True)))
            answers = list(pool.map(lambda c: c.decode(0, 9, c.read_frame())[1], clients))
        for resp in answers:
            assert resp.responses[0].partition_responses[0].error_code == ErrorCode.none
    finally:
        for c in clients:
            c.close()
    wait_until(lambda: pool_state(small_pool_broker)[0] == 0, 10, "the pool to be released")


# --- against a real `ackly serve` ---------------------------------------------------------


def test_thousand_length_prefixes_of_100_mib_cost_almost_nothing(ackly_process) -> None:
    """1,000 connections each send only a 4-byte length of 100 MiB. The broker stays below
    200 MB resident, and a real client's produce and consume work meanwhile."""
    with open_files_at_least(4096):
        broker: BrokerProcess = ackly_process(configs={
            # Keep the hostile connections open for the whole test: the memory bound must
            # come from the frame buffers, not from the deadline that would close them.
            "connections.first.request.timeout.ms": "-1",
        })
        assert broker.proc is not None
        pid = broker.proc.pid
        produce_and_consume(broker.bootstrap, count=50, value_bytes=1024)
        before = vm_rss_bytes(pid)
        hostile = []
        try:
            for _ in range(1000):
                s = socket.create_connection(("127.0.0.1", broker.port), timeout=10)
                s.sendall(struct.pack(">i", 100 * MiB))
                hostile.append(s)
            # The broker reads every ready socket in each turn of its loop: by the time a real
            # client has produced and consumed, it has read all 1,000 prefixes.
            produce_and_consume(broker.bootstrap, count=200, value_bytes=10 * 1024)
            after = vm_rss_bytes(pid)
            print(f"VmRSS before {before / 1e6:.1f} MB, with 1,000 hostile connections "
                  f"{after / 1e6:.1f} MB")
            assert after < 200_000_000
            # The hostile connections are still open (nothing refused them): the memory bound
            # held with all of them in place.
            readable = selectors.DefaultSelector()
            for s in hostile:
                s.setblocking(False)
                readable.register(s, selectors.EVENT_READ)
            assert readable.select(timeout=0) == []
            readable.close()
        finally:
            for s in hostile:
                s.close()


def test_partial_frames_hold_no_more_than_the_pool(ackly_process) -> None:
    """Eight connections each send 20 MiB of a 100 MiB frame into a 32 MiB pool: the broker
    stops reading when the pool is full (only the oldest frame may go on), so its memory grows
    by about the pool and one frame, not by everything sent; once they close, a real client
    produces and consumes."""
    broker: BrokerProcess = ackly_process(configs={
        "queued.max.request.bytes": str(32 * MiB),
        "connections.first.request.timeout.ms": "-1",
    })
    assert broker.proc is not None
    pid = broker.proc.pid
    produce_and_consume(broker.bootstrap, count=20, value_bytes=1024)
    before = vm_rss_bytes(pid)
    chunk = bytes(256 * 1024)
    socks = []
    try:
        remaining = {}
        for _ in range(8):
            s = socket.create_connection(("127.0.0.1", broker.port), timeout=10)
            s.sendall(struct.pack(">i", 100 * MiB))
            s.setblocking(False)
            socks.append(s)
            remaining[s] = 20 * MiB
        writable = selectors.DefaultSelector()
        for s in socks:
            writable.register(s, selectors.EVENT_WRITE)
        deadline = time.monotonic() + 60
        # Send until the broker has said the pool is full and no socket has taken a byte for
        # half a second (the broker stopped reading; the kernel's buffers are full).
        while time.monotonic() < deadline:
            ready = writable.select(timeout=0.5)
            if not ready:
                if any("request memory pool full" in line for line in broker.output):
                    break
                continue
            for key, _ in ready:
                s = key.fileobj
                assert isinstance(s, socket.socket)
                try:
                    sent = s.send(chunk[: min(len(chunk), remaining[s])])
                except BlockingIOError:
                    continue
                remaining[s] -= sent
                if not remaining[s]:
                    writable.unregister(s)
            if not writable.get_map():
                break
        writable.close()
        assert any("request memory pool full" in line for line in broker.output)
        after = vm_rss_bytes(pid)
        sent_mib = sum(20 * MiB - r for r in remaining.values()) / MiB
        print(f"sent {sent_mib:.0f} MiB of partial frames; VmRSS {before / 1e6:.1f} MB before, "
              f"{after / 1e6:.1f} MB with the pool full")
        # The pool (32 MiB), the exempt frame's buffer (at most 2 x its 20 MiB) and slack.
        assert after - before < 110 * MiB
    finally:
        for s in socks:
            s.close()
    produce_and_consume(broker.bootstrap, count=50, value_bytes=1024)


def _attempts_refused(port: int, source: str, count: int, deadline: float) -> int:
    """Open `count` connections from `source` in waves; return how many the broker closed
    without reading (EOF or reset before we sent anything)."""
    refused = 0
    wave = 250
    for start in range(0, count, wave):
        socks = []
        sel = selectors.DefaultSelector()
        try:
            for _ in range(min(wave, count - start)):
                s = socket.socket()
                s.bind((source, 0))
                s.settimeout(10)
                s.connect(("127.0.0.1", port))
                s.setblocking(False)
                socks.append(s)
                sel.register(s, selectors.EVENT_READ)
            pending = len(socks)
            while pending:
                remaining = deadline - time.monotonic()
                assert remaining > 0, "the broker did not close refused connections in time"
                for key, _ in sel.select(timeout=min(remaining, 5)):
                    s = key.fileobj
                    assert isinstance(s, socket.socket)
                    try:
                        data = s.recv(1)
                    except ConnectionResetError:
                        data = b""
                    assert data == b"", "a refused connection must send nothing"
                    sel.unregister(s)
                    refused += 1
                    pending -= 1
        finally:
            sel.close()
            for s in socks:
                s.close()
    return refused


def test_ten_thousand_connection_attempts_from_one_ip_leave_the_broker_serving(ackly_process) -> None:
    """With max.connections.per.ip=100, one address (127.0.0.2) holds 100 connections and
    makes 9,900 more attempts: each is closed at accept, the 100 keep working, and a client
    from another address (127.0.0.1) produces and consumes."""
    with open_files_at_least(4096):
        broker: BrokerProcess = ackly_process(configs={"max.connections.per.ip": "100"})
        held = []
        try:
            for _ in range(100):
                s = socket.socket()
                s.bind(("127.0.0.2", 0))
                s.connect(("127.0.0.1", broker.port))
                c = WireClient.__new__(WireClient)
                c.sock, c.correlation_id = s, 0
                s.settimeout(10)
                assert api_versions(c).error_code == ErrorCode.none
                held.append(c)
            started = time.monotonic()
            refused = _attempts_refused(broker.port, "127.0.0.2", 9_900, deadline=started + 120)
            print(f"9,900 refused attempts in {time.monotonic() - started:.1f} s")
            assert refused == 9_900
            produce_and_consume(broker.bootstrap, count=100, value_bytes=1024)
            for c in held:  # the connections admitted before the flood still work
                assert api_versions(c).error_code == ErrorCode.none
        finally:
            for c in held:
                c.close()
        refusal_lines = [line for line in broker.output if "over max.connections.per.ip" in line]
        assert refusal_lines, "refusals are logged"
        assert len(refusal_lines) <= 20, "refusal logging is rate-limited"


def test_an_idle_connection_is_closed_and_a_busy_one_is_not(ackly_process) -> None:
    broker: BrokerProcess = ackly_process(configs={"connections.max.idle.ms": "1000"})
    with WireClient(broker.bootstrap) as idle, WireClient(broker.bootstrap) as busy:
        assert api_versions(idle).error_code == ErrorCode.none
        started = time.monotonic()
        # The busy client sends a request every 100 ms (its pace, not a wait for a
        # condition) for well over the idle timeout.
        while time.monotonic() - started < 2.5:
            assert api_versions(busy).error_code == ErrorCode.none
            time.sleep(0.1)
        with pytest.raises((ConnectionError, OSError)):
            idle.read_frame()  # closed by the broker: EOF
        assert api_versions(busy).error_code == ErrorCode.none


def test_a_connection_that_never_completes_a_first_request_is_closed(ackly_process) -> None:
    """A slowloris sends one byte of a frame every 100 ms; it is never idle, but it is closed
    once connections.first.request.timeout.ms has passed without a complete request."""
    broker: BrokerProcess = ackly_process(configs={"connections.first.request.timeout.ms": "500"})
    with WireClient(broker.bootstrap) as good, WireClient(broker.bootstrap) as slow:
        assert api_versions(good).error_code == ErrorCode.none
        frame = slow.frame(ApiVersionsRequest(client_software_name="t", client_software_version="1"))
        started = time.monotonic()
        closed = False
        for byte in frame[:-1]:
            try:
                slow.send_raw(bytes([byte]))
            except OSError:
                closed = True
                break
            time.sleep(0.1)
            if time.monotonic() - started > 10:
                break
        if not closed:
            slow.sock.settimeout(10)
            with pytest.raises((ConnectionError, OSError)):
                slow.read_frame()
        assert time.monotonic() - started >= 0.5
        # The connection that completed its first request is not affected.
        assert api_versions(good).error_code == ErrorCode.none


# --- connection limits in-process (fast) ----------------------------------------------------


def _is_refused(client: WireClient) -> bool:
    """True when the broker closed the connection at accept (EOF before any request)."""
    client.sock.settimeout(10)
    try:
        return client.sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_max_connections_refuses_new_connections_and_keeps_the_open_ones(tmp_path) -> None:
    broker = InProcessBroker(str(tmp_path / "d"), {"max.connections": "3"}).start()
    try:
        admitted = [WireClient(broker.bootstrap) for _ in range(3)]
        for c in admitted:
            assert api_versions(c).error_code == ErrorCode.none
        extra = WireClient(broker.bootstrap)
        assert _is_refused(extra)
        extra.close()
        for c in admitted:  # the open ones keep working
            assert api_versions(c).error_code == ErrorCode.none
        admitted.pop().close()
        assert broker.server is not None
        server = broker.server
        wait_until(lambda: broker.call(lambda: server.limits.open_connections) == 2, 10,
                   "the broker to see the close")
        with WireClient(broker.bootstrap) as again:  # a freed slot is usable
            assert api_versions(again).error_code == ErrorCode.none
        assert broker.call(lambda: server.limits.refused["max.connections"]) == 1
        for c in admitted:
            c.close()
    finally:
        broker.stop()


def test_a_per_ip_override_by_host_name_applies_to_its_addresses(tmp_path) -> None:
    """`localhost:3` lifts the per-IP limit of 1 to 3 for 127.0.0.1 (the name is resolved at
    start-up); the fourth connection from it is refused."""
    broker = InProcessBroker(str(tmp_path / "d"), {
        "max.connections.per.ip": "1", "max.connections.per.ip.overrides": "localhost:3",
    }).start()
    try:
        clients = [WireClient(broker.bootstrap) for _ in range(3)]
        for c in clients:
            assert api_versions(c).error_code == ErrorCode.none
        with WireClient(broker.bootstrap) as fourth:
            assert _is_refused(fourth)
        for c in clients:
            c.close()
    finally:
        broker.stop()
