"""Capture golden request frames from the real clients (run by hand, once; not by CI).

    .venv/bin/python tests/golden/capture.py [--out tests/golden/frames] [--clients a,b,...]
                                             [--broker 127.0.0.1:PORT]

A recording TCP proxy sits between each client and an ackly broker and keeps the first
request frame of every (api, version) a client sends, size prefix included, as
`<client>-<api_name>-v<version>.bin`, plus `manifest.json` (capture order, topics).

Clients must reach every broker through the proxy, including the addresses Metadata hands
out. The broker is therefore run with `--advertised-host 127.0.0.2` on 127.0.0.1:PORT and
the proxy listens on 127.0.0.2:PORT (the same port on another loopback address), so the
advertised address *is* the proxy. Without `--broker` the tool starts such a broker itself
(in a temporary directory, num.partitions=2); with `--broker`, start it like that yourself.

Each client runs one short scenario on its own topic `golden-<client>`: create it (admin
API, or auto-creation for kcat), produce three small records with keys, headers and
timestamps, read them back, list offsets, delete the topic. Steps that fail are reported
and skipped, since the request frame is captured either way. kcat produces with acks=0 so
that one golden Produce frame expects no answer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
JS_DIR = REPO / "tests" / "clients" / "js"
PROXY_HOST = "127.0.0.2"
CLIENTS = ("confluent-kafka", "kafka-python", "aiokafka", "kcat", "kafkajs")
PARTITIONS = 2
MAX_FRAME_BYTES = 1 << 20  # a golden frame is small; anything larger is not worth keeping

sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

from kio.schema.index import api_key_map  # noqa: E402


def topic_for(client: str) -> str:
    return f"golden-{client}"


# --- recording proxy ------------------------------------------------------------------------


class Recorder:
    """Keeps the first frame per (client, api, version); writes files and the manifest."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.client: str | None = None
        self.entries: list[dict[str, Any]] = []
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def frame(self, frame: bytes) -> None:
        if len(frame) < 12 or len(frame) > MAX_FRAME_BYTES:
            return
        api_key, api_version = struct.unpack_from(">hh", frame, 4)
        with self._lock:
            client = self.client
            if client is None:
                return
            api_name = api_key_map.get(api_key, f"api{api_key}")  # type: ignore[call-overload]
            name = f"{client}-{api_name}-v{api_version}.bin"
            if name in self._seen:
                return
            self._seen.add(name)
            (self.out_dir / name).write_bytes(frame)
            self.entries.append({
                "file": name, "client": client, "api_key": api_key, "api_name": api_name,
                "api_version": api_version, "topic": topic_for(client),
                "partitions": PARTITIONS, "bytes": len(frame),
            })

    def write_manifest(self) -> None:
        manifest = {
            "about": "request frames captured by tests/golden/capture.py, in capture order",
            "frames": self.entries,
        }
        (self.out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


class RecordingProxy:
    """Listens on listen_host:port, forwards to upstream_host:port, records client frames."""

    def __init__(self, listen_host: str, upstream_host: str, port: int, recorder: Recorder) -> None:
        self.recorder = recorder
        self.upstream = (upstream_host, port)
        self.server = socket.create_server((listen_host, port), reuse_port=False)
        self._stop = threading.Event()
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self.server.close()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        buf = bytearray()
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                dst.sendall(data)
                if from_client:
                    buf += data
                    while len(buf) >= 4:
                        (size,) = struct.unpack_from(">i", buf, 0)
                        if len(buf) < 4 + size:
                            break
                        self.recorder.frame(bytes(buf[: 4 + size]))
                        del buf[: 4 + size]
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()


# --- scenarios -----------------------------------------------------------------------------


def records(client: str) -> list[dict[str, Any]]:
    base = (int(time.time() * 1000) // 1000) * 1000 - 60_000
    return [
        {"partition": i % PARTITIONS, "key": f"k{i}".encode(), "value": f"{client} value {i}".encode(),
         "headers": [("h", f"v{i}".encode())], "timestamp": base + i * 1000}
        for i in range(3)
    ]


def step(name: str, fn: Callable[[], Any]) -> Any:
    try:
        result = fn()
        print(f"  ok    {name}")
        return result
    except Exception as exc:
        print(f"  FAIL  {name}: {type(exc).__name__}: {exc}".splitlines()[0][:300])
        return None


def scenario_confluent(bootstrap: str) -> None:
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

    topic = topic_for("confluent-kafka")
    recs = records("confluent-kafka")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    step("create topic", lambda: admin.create_topics(
        [NewTopic(topic, PARTITIONS, 1)])[topic].result(10))

    def produce() -> None:
        p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
        for r in recs:
            p.produce(topic, r["value"], r["key"], partition=r["partition"],
                      timestamp=r["timestamp"], headers=r["headers"])
        assert p.flush(10) == 0

    step("produce", produce)

    def consume() -> None:
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "golden-unused",
                      "enable.auto.commit": False})
        c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        got = []
        deadline = time.monotonic() + 10
        while len(got) < len(recs) and time.monotonic() < deadline:
            got += [m for m in c.consume(10, 0.5) if m.error() is None]
        print("lows/highs", [c.get_watermark_offsets(TopicPartition(topic, p), 5)
                             for p in range(PARTITIONS)])
        c.close()
        assert len(got) == len(recs), got

    step("consume", consume)
    step("list offsets", lambda: [f.result(10) for f in admin.list_offsets(
        {TopicPartition(topic, 0): OffsetSpec.for_timestamp(recs[0]["timestamp"]),
         TopicPartition(topic, 1): OffsetSpec.latest()}).values()])
    step("delete topic", lambda: admin.delete_topics([topic])[topic].result(10))


def scenario_kafka_python(bootstrap: str) -> None:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import KafkaAdminClient

    topic = topic_for("kafka-python")
    recs = records("kafka-python")
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    step("create topic", lambda: admin.create_topics(
        {topic: {"num_partitions": PARTITIONS, "replication_factor": 1}}))

    def produce() -> None:
        p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
        futures = [p.send(topic, r["value"], r["key"], partition=r["partition"],
                          timestamp_ms=r["timestamp"], headers=r["headers"]) for r in recs]
        [f.get(10) for f in futures]
        p.close()

    step("produce", produce)

    def consume() -> None:
        c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        c.assign(tps)
        for tp in tps:
            c.seek(tp, 0)
        got = []
        deadline = time.monotonic() + 10
        while len(got) < len(recs) and time.monotonic() < deadline:
            for batch in c.poll(500).values():
                got += batch
        print("offsets", c.beginning_offsets(tps), c.end_offsets(tps),
              c.offsets_for_times({tps[0]: recs[0]["timestamp"]}))
        c.close()
        assert len(got) == len(recs), got

    step("consume + offsets", consume)
    step("delete topic", lambda: admin.delete_topics([topic]))
    admin.close()


def scenario_aiokafka(bootstrap: str) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    topic = topic_for("aiokafka")
    recs = records("aiokafka")

    async def run() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
            print("  ok    create topic")
        except Exception as exc:
            print(f"  FAIL  create topic: {exc!r}")
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        for r in recs:
            await producer.send_and_wait(topic, r["value"], r["key"], partition=r["partition"],
                                         timestamp_ms=r["timestamp"], headers=r["headers"])
        await producer.stop()
        print("  ok    produce")
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                    enable_auto_commit=False)
        await consumer.start()
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        got = []
        deadline = time.monotonic() + 10
        while len(got) < len(recs) and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                got += batch
        print("  offsets", await consumer.beginning_offsets(tps), await consumer.end_offsets(tps),
              await consumer.offsets_for_times({tps[0]: recs[0]["timestamp"]}))
        await consumer.stop()
        print(f"  {'ok  ' if len(got) == len(recs) else 'FAIL'}  consume {len(got)}")
        await admin.delete_topics([topic])
        print("  ok    delete topic")
        await admin.close()

    step("scenario", lambda: asyncio.run(asyncio.wait_for(run(), 60)))


def scenario_kcat(bootstrap: str) -> None:
    topic = topic_for("kcat")
    kcat = shutil.which("kcat") or "kcat"

    def run(*args: str, stdin: str | None = None) -> str:
        proc = subprocess.run([kcat, "-b", bootstrap, *args], input=stdin, text=True,
                              capture_output=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    recs = records("kcat")
    for p in range(PARTITIONS):
        lines = "".join(f"{r['key'].decode()}|{r['value'].decode()}\n"
                        for r in recs if r["partition"] == p)
        step(f"produce p{p} (acks=0)", lambda p=p, lines=lines: run(
            "-P", "-t", topic, "-p", str(p), "-K", "|", "-H", "h=v", "-X", "acks=0",
            stdin=lines))
    step("consume", lambda: print(run("-C", "-t", topic, "-o", "beginning", "-e", "-J", "-c",
                                      str(len(recs)))))
    step("query offsets", lambda: print(run("-Q", "-t", f"{topic}:0:{recs[0]['timestamp']}",
                                            "-t", f"{topic}:1:-1")))
    step("list", lambda: run("-L"))


def scenario_kafkajs(bootstrap: str) -> None:
    node = shutil.which("node")
    assert node, "node is needed for kafkajs"
    topic = topic_for("kafkajs")
    recs = records("kafkajs")

    def run(op: str, **args: Any) -> Any:
        proc = subprocess.run([node, str(JS_DIR / "kafkajs_driver.js")],
                              input=json.dumps({"op": op, "brokers": [bootstrap], **args}),
                              text=True, capture_output=True, timeout=60, cwd=JS_DIR)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout.splitlines()[-1])["result"]

    messages = [{"partition": r["partition"], "key": r["key"].decode(), "value": r["value"].decode(),
                 "headers": [[k, v.decode()] for k, v in r["headers"]], "timestamp": r["timestamp"]}
                for r in recs]
    step("create topic", lambda: run("createTopic", topic=topic, partitions=PARTITIONS))
    step("produce", lambda: run("produce", topic=topic, messages=messages))
    step("fetch", lambda: run("fetch", topic=topic, partitions=list(range(PARTITIONS))))
    step("offsets", lambda: run("offsets", topic=topic, timestamps=[recs[0]["timestamp"]]))
    step("delete topic", lambda: run("deleteTopic", topic=topic))


SCENARIOS: dict[str, Callable[[str], None]] = {
    "confluent-kafka": scenario_confluent,
    "kafka-python": scenario_kafka_python,
    "aiokafka": scenario_aiokafka,
    "kcat": scenario_kcat,
    "kafkajs": scenario_kafkajs,
}


# --- main ----------------------------------------------------------------------------------


def start_broker(data_dir: str) -> tuple[subprocess.Popen[str], int]:
    cmd = [sys.executable, "-m", "ackly", "serve", "--host", "127.0.0.1", "--port", "0",
           "--data-dir", data_dir, "--broker-id", "0", "--advertised-host", PROXY_HOST,
           "--config", f"num.partitions={PARTITIONS}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"listening on \S+:(\d+)", line)
    if not match:
        proc.kill()
        raise SystemExit(f"ackly serve did not start: {line}{proc.stdout.read()}")
    threading.Thread(target=lambda: [print("  [broker]", x, end="") for x in proc.stdout],  # type: ignore[union-attr]
                     daemon=True).start()
    return proc, int(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "frames"))
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--broker", help="a running broker 127.0.0.1:PORT started with "
                                         f"--advertised-host {PROXY_HOST}")
    args = parser.parse_args()
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    broker_proc = None
    tmp = None
    if args.broker:
        port = int(args.broker.rsplit(":", 1)[1])
    else:
        tmp = tempfile.mkdtemp(prefix="ackly-golden-")
        broker_proc, port = start_broker(tmp)
    recorder = Recorder(out)
    proxy = RecordingProxy(PROXY_HOST, "127.0.0.1", port, recorder)
    bootstrap = f"{PROXY_HOST}:{port}"
    try:
        for client in args.clients.split(","):
            print(f"== {client} via {bootstrap}")
            recorder.client = client
            try:
                SCENARIOS[client](bootstrap)
            except Exception:
                traceback.print_exc()
            recorder.client = None
    finally:
        recorder.write_manifest()
        proxy.close()
        if broker_proc is not None:
            broker_proc.terminate()
            broker_proc.wait(30)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    total = sum(e["bytes"] for e in recorder.entries)
    print(f"wrote {len(recorder.entries)} frames ({total} bytes) and manifest.json to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
