"""`__consumer_offsets` under many commits: its size on disk, and how soon a restarted broker
answers the group's committed offsets.

Run: `.venv/bin/python bench/consumer_offsets.py [--commits N] [--partitions P]
[--segment-bytes B] [--time-limit-s S]`.

One `ackly serve` process (fresh data directory, `offsets.topic.segment.bytes` = B, default
1 MiB; Kafka's default is 100 MiB, see below) and a topic of P partitions (default 100). One
group (group-less commits, as a consumer with manual assignment makes) commits N offsets
(default 1,000,000) over the wire: OffsetCommit v2 requests of P partitions each, 32 in flight
on one connection, every answer checked; the broker handles them with its real OffsetCommit
path (records appended to the group's `__consumer_offsets` partition, answered once
committed). Printed:
1. commits per second (N / time from the first request to the last answer);
2. bytes on disk of `__consumer_offsets` (every file of its partition directories) right after
   the last commit, and once the cleaner has compacted it (waited for until the size holds for
   3 s, bounded); the live state is P offsets;
3. `kill -9`, then a restart on the same data: seconds from `Popen` to the port accepting, and
   to the first OffsetFetch (after FindCoordinator) that answers the group's last committed
   offset for every partition (the shard is loaded by then); retried as soon as an answer
   comes back without it (COORDINATOR_LOAD_IN_PROGRESS while the shard loads). Target: under
   1 s. The note gives the records the shard replayed (from the broker's log), and the CPU
   time the restarted broker had used by then (from /proc), which the machine's load affects
   far less than the wall time.

The log cleaner never cleans the active segment (as Kafka's), so a restart replays what that
segment holds on top of the compacted rest: with 100 MiB segments (`--segment-bytes
104857600`) up to about a million records here.

It prints numbers and asserts nothing; every loop is bounded in count and time. The machine
has 2 cores shared with whatever else runs: read the load averages printed before and after.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

from ackly.protocol.messages import build_request
from ackly.testing.wire import WireClient

TOPIC = "bench-offsets"
GROUP = "bench-offsets-group"
OFFSETS_TOPIC = "__consumer_offsets"
OFFSET_COMMIT, OFFSET_FETCH, FIND_COORDINATOR = 8, 9, 10
IN_FLIGHT = 32
_LOADED = re.compile(rb"coordinator shard (\d+) loaded from (\d+) records")


class Serve:
    """One `ackly serve` process on a fixed port over one data directory."""

    def __init__(self, data_dir: str, port: int, configs: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.port = port
        self.configs = configs
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = os.path.join(os.path.dirname(data_dir), "serve.out")

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float, log_level: str = "WARNING") -> float:
        """Spawn; seconds from Popen to the first accepted connection."""
        cmd = [sys.executable, "-m", "ackly", "--log-level", log_level, "serve", "--host", "127.0.0.1",
               "--port", str(self.port), "--data-dir", self.data_dir, "--broker-id", "0"]
        for key, value in self.configs.items():
            cmd += ["--config", f"{key}={value}"]
        t0 = time.perf_counter()
        # Bytecode cached, as an installed package has it (the first start writes it): with
        # PYTHONDONTWRITEBYTECODE set, every start would compile ackly's sources again.
        env = dict(os.environ)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env)
        while time.perf_counter() - t0 < timeout_s:
            with socket.socket() as s:
                s.settimeout(0.5)
                try:
                    s.connect(("127.0.0.1", self.port))
                    return time.perf_counter() - t0
                except OSError:
                    pass
            if self.proc.poll() is not None:
                raise SystemExit(f"broker exited with status {self.proc.returncode}; see {self.log_path}")
            time.sleep(0.002)
        raise SystemExit(f"port not accepting after {timeout_s:.0f} s")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def loaded_records(self, since: int) -> int:
        """Records the broker's log says its coordinator shards replayed, after byte `since`."""
        with open(self.log_path, "rb") as f:
            f.seek(since)
            return sum(int(m.group(2)) for m in _LOADED.finditer(f.read()))

    def tail(self, lines: int = 20) -> str:
        if not os.path.exists(self.log_path):
            return "(no output)"
        with open(self.log_path, "rb") as f:
            return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])

    def log_size(self) -> int:
        return os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process `pid` has used so far: unlike wall time, it hardly
    depends on what else the machine's cores are doing."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _string(s: str) -> bytes:
    data = s.encode()
    return struct.pack(">h", len(data)) + data


def commit_frame(correlation_id: int, partitions: int, offset: int) -> bytes:
    """OffsetCommit v2, group-less (generation -1, no member), every partition at `offset`.
    Built by hand: encoding a million offsets with a generic encoder would make the client
    the bottleneck."""
    parts = b"".join(struct.pack(">iq", p, offset) + _string("") for p in range(partitions))
    body = (_string(GROUP) + struct.pack(">i", -1) + _string("") + struct.pack(">q", -1)
            + struct.pack(">i", 1) + _string(TOPIC) + struct.pack(">i", partitions) + parts)
    header = struct.pack(">hhi", OFFSET_COMMIT, 2, correlation_id) + _string("bench")
    return struct.pack(">i", len(header) + len(body)) + header + body


def commit_errors(frame: bytes) -> set[int]:
    """The error codes of an OffsetCommit v2 response."""
    pos = 4  # correlation id
    errors: set[int] = set()
    (topics,) = struct.unpack_from(">i", frame, pos)
    pos += 4
    for _ in range(topics):
        (name_len,) = struct.unpack_from(">h", frame, pos)
        pos += 2 + name_len
        (count,) = struct.unpack_from(">i", frame, pos)
        pos += 4
        for _ in range(count):
            errors.add(struct.unpack_from(">h", frame, pos + 4)[0])
            pos += 6
    return errors


def create_topic(bootstrap: str, partitions: int) -> None:
    with WireClient(bootstrap, timeout_s=60) as client:
        r = client.request(build_request(19, 4, {"topics": [{
            "name": TOPIC, "num_partitions": partitions, "replication_factor": -1,
            "assignments": [], "configs": []}], "timeout": 30_000, "validate_only": False}))
        code = r.topics[0].error_code
        if code != 0:
            raise SystemExit(f"CreateTopics: error {code}")


# Answers a client retries (Kafka's OffsetCommit): the write was not committed in
# offsets.commit.timeout.ms (COORDINATOR_NOT_AVAILABLE), the shard is loading or moved.
RETRIABLE = {14, 15, 16}


def commit_all(bootstrap: str, commits: int, partitions: int, deadline: float
               ) -> tuple[int, float, int, int]:
    """Commit until `commits` offsets are written or the deadline; (offsets committed,
    seconds, retried requests, the offset committed last). Request i commits offset i for
    every partition; a request answered with a retriable error is made again (as a new
    request, with a higher offset), and the last one is made alone, so its offset is the
    group's committed offset at the end."""
    requests = -(-commits // partitions)
    sent = ok = retried = 0
    in_flight: list[int] = []
    with WireClient(bootstrap, timeout_s=60) as client:
        t0 = time.perf_counter()

        def answer() -> None:
            nonlocal ok, retried
            in_flight.pop(0)
            errors = commit_errors(client.read_frame())
            if errors == {0}:
                ok += 1
            elif errors <= RETRIABLE:
                retried += 1
            else:
                raise SystemExit(f"OffsetCommit: error codes {sorted(errors)}")

        while ok < requests - 1 and time.perf_counter() < deadline:
            while ok + len(in_flight) < requests - 1 and len(in_flight) < IN_FLIGHT:
                sent += 1
                in_flight.append(sent)
                client.send_raw(commit_frame(sent, partitions, sent))
            answer()
        while in_flight:  # done, or out of time: take the answers still due
            answer()
        for _ in range(100):  # the last one alone, until it is answered NONE
            sent += 1
            in_flight.append(sent)
            client.send_raw(commit_frame(sent, partitions, sent))
            before = ok
            answer()
            if ok > before:
                break
        return ok * partitions, time.perf_counter() - t0, retried, sent


def offsets_bytes(data_dir: str) -> tuple[int, int]:
    """(bytes of every file of the `__consumer_offsets` partitions, .log segments)."""
    total = segments = 0
    for entry in os.scandir(data_dir):
        if entry.is_dir() and entry.name.startswith(OFFSETS_TOPIC + "-"):
            for f in os.scandir(entry.path):
                if f.is_file():
                    total += f.stat().st_size
                    segments += f.name.endswith(".log")
    return total, segments


def wait_compacted(data_dir: str, timeout_s: float) -> tuple[int, int, float]:
    """Wait until the size holds for 3 s (bounded); (bytes, segments, seconds waited)."""
    t0 = time.perf_counter()
    last = offsets_bytes(data_dir)
    held_since = t0
    while time.perf_counter() - t0 < timeout_s:
        time.sleep(0.25)
        now = offsets_bytes(data_dir)
        if now != last:
            last, held_since = now, time.perf_counter()
        elif time.perf_counter() - held_since >= 3:
            break
    return last[0], last[1], time.perf_counter() - t0


def fetch_answered(bootstrap: str, partitions: int, expected: int, t0: float, timeout_s: float
                   ) -> tuple[float, int]:
    """Seconds from t0 until OffsetFetch answers `expected` for every partition; and how many
    OffsetFetch answers came back without it first."""
    early = 0
    client: WireClient | None = None
    try:
        while time.perf_counter() - t0 < timeout_s:
            try:
                if client is None:
                    client = WireClient(bootstrap, timeout_s=10)
                found = client.request(build_request(FIND_COORDINATOR, 1, {"key": GROUP, "key_type": 0}))
                if found.error_code != 0:
                    early += 1
                    continue
                r = client.request(build_request(OFFSET_FETCH, 2, {"group_id": GROUP, "topics": [
                    {"name": TOPIC, "partition_indexes": list(range(partitions))}]}))
            except OSError:
                client = None
                time.sleep(0.002)
                continue
            got = {p.partition_index: (p.committed_offset, p.error_code) for t in r.topics
                   for p in t.partitions}
            if r.error_code == 0 and got == {p: (expected, 0) for p in range(partitions)}:
                return time.perf_counter() - t0, early
            early += 1
    finally:
        if client is not None:
            client.close()
    return float("nan"), early


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commits", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=100)
    parser.add_argument("--segment-bytes", type=int, default=1 << 20)
    parser.add_argument("--time-limit-s", type=float, default=300.0,
                        help="most time the commits may take (fewer are made past it)")
    parser.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                        help="a broker config (repeatable)")
    args = parser.parse_args()

    print(f"load average before: {os.getloadavg()}", flush=True)
    root = tempfile.mkdtemp(prefix="ackly-bench-offsets-")
    serve = Serve(os.path.join(root, "data"), free_port(), {
        "offsets.topic.segment.bytes": str(args.segment_bytes),
        "log.cleaner.backoff.ms": "1000",
        **dict(kv.split("=", 1) for kv in args.config),
    })
    try:
        serve.start(30)
        create_topic(serve.bootstrap, args.partitions)
        committed, seconds, retried, last_offset = commit_all(
            serve.bootstrap, args.commits, args.partitions, time.perf_counter() + args.time_limit_s)
        note = "" if committed >= args.commits else f"; time limit {args.time_limit_s:.0f} s reached"
        print(f"1. commits: {committed:,} offsets in {seconds:.1f} s = {committed / seconds:,.0f} "
              f"offsets/s ({committed // args.partitions:,} OffsetCommit requests of "
              f"{args.partitions} partitions; {retried} answered with a retriable error and made "
              f"again{note})", flush=True)
        size, segments = offsets_bytes(serve.data_dir)
        print(f"2. {OFFSETS_TOPIC} on disk after the commits: {size / 1e6:.2f} MB in {segments} "
              f"segments (offsets.topic.segment.bytes={args.segment_bytes})", flush=True)
        size, segments, waited = wait_compacted(serve.data_dir, 120)
        print(f"   once compacted (waited {waited:.1f} s): {size / 1e6:.3f} MB in {segments} "
              f"segments, for {args.partitions} live offsets", flush=True)

        serve.kill()
        since = serve.log_size()
        t0 = time.perf_counter()
        port_s = serve.start(30, "INFO")  # INFO: the shards' "loaded from N records" lines
        assert serve.proc is not None
        port_cpu_s = cpu_seconds(serve.proc.pid)
        answered_s, early = fetch_answered(serve.bootstrap, args.partitions, last_offset, t0, 60)
        answered_cpu_s = cpu_seconds(serve.proc.pid)
        time.sleep(0.2)  # let the broker's log line about the load reach the file
        print(f"3. kill -9 restart: port accepting after {port_s:.3f} s; the group's committed "
              f"offsets answered after {answered_s:.3f} s (target < 1 s; {early} answers "
              f"before that; {serve.loaded_records(since):,} records replayed by the shards)\n"
              f"   broker CPU time: {port_cpu_s:.3f} s to the port accepting, {answered_cpu_s:.3f} s "
              f"to the answer (wall time stretches with the machine's load, CPU time much less)",
              flush=True)
    except BaseException:
        print(f"the broker's last output:\n{serve.tail()}")
        raise
    finally:
        serve.kill()
        shutil.rmtree(root, ignore_errors=True)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
