"""SASL: produce and consume over SASL_SSL and SASL_PLAINTEXT as a ratio to PLAINTEXT, and what
one authentication costs, in one run.

Run: `.venv/bin/python bench/sasl.py [--quick] [--repeats N] [--count N] [--connections N]`.

What it measures: one `ackly serve` process with three listeners, PLAINTEXT, SASL_PLAINTEXT and
SASL_SSL (a PEM key store made at start with trustme), `log.flush.policy=never`, and one user
made beforehand with `ackly users set` (SCRAM-SHA-512, 4096 iterations).
- Throughput: confluent-kafka produces `--count` x 10 KiB values to one partition and reads
  them back, exactly as bench/tls.py does (its produce() and consume() are used), over each
  listener with SCRAM-SHA-512; runs alternate listeners after an uncounted warm-up; each row
  reports the median MB/s and the ratio to PLAINTEXT. Authentication happens once per
  connection, so SASL_PLAINTEXT should match PLAINTEXT, and SASL_SSL should match SSL.
- Authentication: `--connections` connections one after the other, each connecting, then
  (but for PLAINTEXT) SaslHandshake + SaslAuthenticate with scramp's client, then one
  Metadata request, then closing. Rows give connections per second and the broker's CPU per
  connection. SCRAM's client derives its key with 4096 PBKDF2 iterations (client CPU); PLAIN
  makes the broker derive it (the password is checked against the stored SCRAM credential).

It prints numbers and asserts nothing; every loop is bounded in count and time. The machine
has 2 cores shared with whatever else runs: read the load averages printed before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import scramp
from kio.schema.metadata.v12.request import MetadataRequest
from kio.schema.sasl_authenticate.v2.request import SaslAuthenticateRequest
from kio.schema.sasl_handshake.v1.request import SaslHandshakeRequest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import tls as tls_bench  # bench/tls.py: the same produce and consume loops
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from tests.clients.tlskit import make_tls_files

from ackly.testing.broker_process import BrokerProcess
from ackly.testing.wire import WireClient

USER, PASSWORD = "bench", "bench-password"
MB = 1_000_000


def authenticate(client: WireClient, mechanism: str) -> None:
    assert client.request(SaslHandshakeRequest(mechanism=mechanism)).error_code == 0
    if mechanism == "PLAIN":
        answer = client.request(SaslAuthenticateRequest(auth_bytes=f"\x00{USER}\x00{PASSWORD}".encode()))
        assert answer.error_code == 0, answer.error_message
        return
    scram = scramp.ScramClient([mechanism], USER, PASSWORD)
    first = client.request(SaslAuthenticateRequest(auth_bytes=scram.get_client_first().encode()))
    scram.set_server_first(first.auth_bytes.decode())
    final = client.request(SaslAuthenticateRequest(auth_bytes=scram.get_client_final().encode()))
    assert final.error_code == 0, final.error_message
    scram.set_server_final(final.auth_bytes.decode())


def connections(bootstrap: str, mechanism: str | None, n: int, pid: int) -> tls_bench.Measure:
    metadata = MetadataRequest(topics=(), allow_auto_topic_creation=False,
                               include_topic_authorized_operations=False)
    with tls_bench.Measure(pid) as measure:
        for _ in range(n):
            with WireClient(bootstrap) as client:
                if mechanism is not None:
                    authenticate(client, mechanism)
                client.request(metadata)
    return measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the messages and connections")
    parser.add_argument("--count", type=int, default=10_000, help="10 KiB messages per run")
    parser.add_argument("--connections", type=int, default=300, help="connections per authentication row")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    count = args.count // 10 if args.quick else args.count
    n_connections = args.connections // 10 if args.quick else args.connections
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="ackly-bench-sasl-") as tmp:
        tls = make_tls_files(Path(tmp) / "tls")
        data_dir = os.path.join(tmp, "data")
        subprocess.run([sys.executable, "-m", "ackly", "users", "set", USER, "--password-stdin",
                        "--data-dir", data_dir], input=PASSWORD + "\n", text=True, check=True,
                       capture_output=True)
        broker = BrokerProcess(data_dir, configs={
            "listeners": "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0,SASL_SSL://127.0.0.1:0",
            "inter.broker.listener.name": "PLAINTEXT", "log.flush.policy": "never",
            "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-512", **tls.broker_configs(),
        }).start()
        sasl = {"sasl.mechanism": "SCRAM-SHA-512", "sasl.username": USER, "sasl.password": PASSWORD}
        try:
            assert broker.proc is not None
            pid = broker.proc.pid
            clients = {
                "PLAINTEXT": (broker.listener_bootstrap("PLAINTEXT"), {}),
                "SASL_PLAINTEXT": (broker.listener_bootstrap("SASL_PLAINTEXT"),
                                   {"security.protocol": "SASL_PLAINTEXT", **sasl}),
                "SASL_SSL": (broker.listener_bootstrap("SASL_SSL"),
                             {"security.protocol": "SASL_SSL", "ssl.ca.location": tls.ca, **sasl}),
            }
            admin = AdminClient({"bootstrap.servers": clients["PLAINTEXT"][0]})
            runs: dict[str, dict[str, list[tls_bench.Measure]]] = {"produce": {}, "consume": {}}
            for run in range(args.repeats + 1):  # run 0 is the warm-up
                for name, (bootstrap, client) in clients.items():
                    topic = f"bench-{name.lower()}-{run}"
                    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=30)
                    n = count if run else max(count // 10, 100)
                    produced = tls_bench.produce(bootstrap, client, topic, n, pid)
                    consumed = tls_bench.consume(bootstrap, client, topic, n, pid)
                    if run:
                        runs["produce"].setdefault(name, []).append(produced)
                        runs["consume"].setdefault(name, []).append(consumed)
            auth_rows = {
                "PLAINTEXT (no auth)": connections(clients["PLAINTEXT"][0], None, n_connections, pid),
                "SCRAM-SHA-512": connections(clients["SASL_PLAINTEXT"][0], "SCRAM-SHA-512", n_connections, pid),
                "PLAIN": connections(clients["SASL_PLAINTEXT"][0], "PLAIN", n_connections, pid),
            }
        finally:
            broker.stop()
    print(f"\n{count} x 10 KiB values per run, median of {args.repeats} runs (MB = 10^6 value bytes), "
          "SCRAM-SHA-512 on the SASL listeners")
    print(f"{'what':<10}{'listener':<16}{'MB/s':>8}{'/PLAIN':>8}   note")
    for what, by_name in runs.items():
        rates = {name: statistics.median(count * tls_bench.VALUE_BYTES / MB / m.seconds for m in ms)
                 for name, ms in by_name.items()}
        for name, ms in by_name.items():
            broker_cores = statistics.median(m.broker_cores for m in ms)
            every = [round(count * tls_bench.VALUE_BYTES / MB / m.seconds, 1) for m in ms]
            print(f"{what:<10}{name:<16}{rates[name]:>8.1f}{rates[name] / rates['PLAINTEXT']:>8.2f}   "
                  f"broker {broker_cores:.2f} cores; every run {every}")
    print(f"\n{n_connections} connections one after the other (connect, authenticate, Metadata, close)")
    print(f"{'how':<22}{'conn/s':>8}{'broker ms/conn':>16}{'client ms/conn':>16}")
    for name, m in auth_rows.items():
        print(f"{name:<22}{n_connections / m.seconds:>8.0f}{m.broker_cores * m.seconds * 1000 / n_connections:>16.2f}"
              f"{m.client_cores * m.seconds * 1000 / n_connections:>16.2f}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    start = time.monotonic()
    main()
    print(f"({time.monotonic() - start:.0f} s)")
