"""verify's secured mode: TLS and SASL on a cluster verify starts, and the client settings.

`--security ssl|sasl_plaintext|sasl_ssl` makes `OwnCluster` start brokers with three
listeners each:

    PLAINTEXT  the launcher's own readiness and leader checks (127.0.0.1 only; never a client's)
    CLIENT     every client verify starts, in the chosen security protocol
    BROKER     the inter-broker listener (inter.broker.listener.name), in the same protocol

For TLS a CA and one broker certificate (for 127.0.0.1 and localhost) are made at start-up
with trustme; the fault proxies terminate TLS with the same certificate, so their faults
still act on whole frames (testing/fault_proxy.py). For SASL two SCRAM-SHA-512 users are
written into etcd before the brokers start, as `ackly users set --metadata` does: the
brokers' own (in `listener.name.broker.sasl.jaas.config`, Kafka's way of giving a broker its
inter-broker credentials) and the clients'. Passwords are random per run.

trustme comes with the `verify` extra: without it the TLS modes are refused with a message
that says so; `sasl_plaintext` needs nothing beyond ackly itself.

Against a cluster verify did not start (`--bootstrap`), `--client-config KEY=VALUE` gives
the clients their security settings (librdkafka's names: security.protocol, sasl.*, ssl.*).
"""

from __future__ import annotations

import secrets
import ssl
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

SECURITY_MODES = ("plaintext", "ssl", "sasl_plaintext", "sasl_ssl")
MECHANISM = "SCRAM-SHA-512"
BROKER_USER = "ackly-broker"
CLIENT_USER = "verify-client"
CLIENT_CONFIG_PREFIXES = ("security.protocol", "sasl.", "ssl.")
USERS_TIMEOUT_S = 60.0


def uses_tls(client_settings: Mapping[str, str]) -> bool:
    return client_settings.get("security.protocol", "PLAINTEXT").upper() in ("SSL", "SASL_SSL")


class SecurityUnavailable(RuntimeError):
    """The secured mode asked for cannot be set up here (a missing package)."""


def parse_client_config(assignments: Sequence[str]) -> dict[str, str]:
    """`KEY=VALUE` client security settings for `--bootstrap`; ValueError naming a bad one."""
    out: dict[str, str] = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--client-config {item!r} is not KEY=VALUE")
        if not key.startswith(CLIENT_CONFIG_PREFIXES):
            raise ValueError(f"--client-config {key}: only security.protocol, sasl.* and ssl.* "
                             "settings go here (client behaviour is set with --set)")
        out[key] = value
    return out


@dataclass(frozen=True)
class Security:
    """One secured cluster's files and credentials (made by `prepare`)."""

    mode: str
    ca_path: str = ""  # TLS modes: the CA certificate (PEM) clients and brokers trust
    keystore_path: str = ""  # TLS modes: the broker certificate's chain and key (PEM)
    broker_password: str = ""
    client_password: str = ""

    @property
    def protocol(self) -> str:
        return self.mode.upper()

    @property
    def tls(self) -> bool:
        return self.mode in ("ssl", "sasl_ssl")

    @property
    def sasl(self) -> bool:
        return self.mode in ("sasl_plaintext", "sasl_ssl")

    def broker_configs(self) -> dict[str, str]:
        """What every broker shares; the listeners themselves are per broker (`listeners`)."""
        configs = {
            "listener.security.protocol.map":
                f"PLAINTEXT:PLAINTEXT,CLIENT:{self.protocol},BROKER:{self.protocol}",
            "inter.broker.listener.name": "BROKER",
        }
        if self.tls:
            configs.update({
                "ssl.keystore.type": "PEM", "ssl.keystore.location": self.keystore_path,
                "ssl.truststore.type": "PEM", "ssl.truststore.location": self.ca_path,
            })
        if self.sasl:
            configs["sasl.mechanism.inter.broker.protocol"] = MECHANISM
            configs["listener.name.broker.sasl.jaas.config"] = (
                "org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="{BROKER_USER}" password="{self.broker_password}";'
            )
        return configs

    @staticmethod
    def listeners(control_port: int, client_port: int, broker_port: int,
                  advertised_broker_port: int) -> dict[str, str]:
        """One broker's listeners; the BROKER one is advertised at the peer proxy's port.
        PLAINTEXT comes first: the launcher reads the first listener's port."""
        def endpoints(broker: int) -> str:
            return (f"PLAINTEXT://127.0.0.1:{control_port},CLIENT://127.0.0.1:{client_port},"
                    f"BROKER://127.0.0.1:{broker}")

        return {"listeners": endpoints(broker_port),
                "advertised.listeners": endpoints(advertised_broker_port)}

    def client_settings(self) -> dict[str, str]:
        """librdkafka's settings for a client of the CLIENT listener."""
        settings = {"security.protocol": self.protocol}
        if self.tls:
            settings["ssl.ca.location"] = self.ca_path
        if self.sasl:
            settings.update({"sasl.mechanism": MECHANISM, "sasl.username": CLIENT_USER,
                             "sasl.password": self.client_password})
        return settings

    def proxy_server_context(self) -> ssl.SSLContext | None:
        """What a fault proxy presents to the clients (or peers) in front of it."""
        if not self.tls:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.keystore_path)
        return context

    def proxy_upstream_context(self) -> ssl.SSLContext | None:
        """How a fault proxy reaches a broker: it checks the broker's certificate like a client."""
        if not self.tls:
            return None
        return ssl.create_default_context(cafile=self.ca_path)

    def add_users(self, metadata_url: str) -> None:
        """The brokers' and the clients' SCRAM credentials, written into etcd before start."""
        if not self.sasl:
            return
        for user, password in ((BROKER_USER, self.broker_password), (CLIENT_USER, self.client_password)):
            proc = subprocess.run(
                [sys.executable, "-m", "ackly", "users", "set", user, "--mechanism", MECHANISM,
                 "--password-stdin", "--metadata", metadata_url],
                input=password + "\n", capture_output=True, text=True, timeout=USERS_TIMEOUT_S,
            )
            if proc.returncode != 0:
                raise RuntimeError(f"ackly users set {user} failed: {proc.stderr.strip()}")


def prepare(mode: str, directory: str) -> Security | None:
    """The files and credentials of a `mode` cluster under `directory`; None for plaintext."""
    if mode not in SECURITY_MODES:
        raise ValueError(f"security mode {mode!r}: one of {', '.join(SECURITY_MODES)}")
    if mode == "plaintext":
        return None
    ca_path = keystore_path = ""
    if mode in ("ssl", "sasl_ssl"):
        ca_path, keystore_path = _make_certificates(Path(directory))
    return Security(mode, ca_path, keystore_path, broker_password=secrets.token_urlsafe(16),
                    client_password=secrets.token_urlsafe(16))


def check_available(mode: str) -> None:
    """SecurityUnavailable, saying what to install, if `mode` cannot be set up here."""
    if mode in ("ssl", "sasl_ssl"):
        try:
            import trustme  # noqa: F401
        except ImportError:
            raise SecurityUnavailable(
                f"--security {mode} makes its certificates with trustme, which is not installed "
                "(pip install 'ackly[verify]')") from None


def _make_certificates(directory: Path) -> tuple[str, str]:
    check_available("ssl")
    import trustme

    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="ackly verify")
    ca_path = directory / "ca.crt"
    ca.cert_pem.write_to_path(str(ca_path))
    broker = ca.issue_cert("127.0.0.1", "localhost", common_name="broker",
                           organization_name="ackly verify", organization_unit_name="brokers")
    keystore = directory / "broker.pem"
    broker.private_key_and_cert_chain_pem.write_to_path(str(keystore))
    return str(ca_path), str(keystore)


def redacted(settings: Mapping[str, str]) -> dict[str, str]:
    """Client settings fit for a report: passwords and keys replaced."""
    return {k: ("(hidden)" if "password" in k or k.endswith(".key") or "jaas" in k else v)
            for k, v in settings.items()}
