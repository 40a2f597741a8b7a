"""TLS contexts from Kafka's `ssl.*` keys (PEM only), per listener.

Each key may be set for one listener with Kafka's prefix `listener.name.<name>.ssl.*`
(BrokerConfig.for_listener). A listener whose protocol is SSL or SASL_SSL gets a server
context; the inter-broker listener, when it uses TLS, also gets the client context the broker
connects to its peers with (its key store is then the broker's client certificate, for peers
that require one).

- Key store: `ssl.keystore.location` (a PEM file holding the certificate chain and the
  private key) or inline `ssl.keystore.certificate.chain` + `ssl.keystore.key`;
  `ssl.key.password` for an encrypted key.
- Trust store: `ssl.truststore.location` (PEM file) or inline `ssl.truststore.certificates`;
  without one, the system's CA certificates.
- `ssl.client.auth`: none, requested (a certificate is asked for and checked if sent),
  required (mTLS: a client without a valid certificate fails the handshake).
- TLS 1.2 and later only (`ssl.enabled.protocols` narrows it); `ssl.cipher.suites` is an
  OpenSSL cipher string for TLS 1.2.

Every problem (a missing key store, an unreadable file, a wrong password) is a ConfigError
naming the key, raised when the broker starts.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Mapping

from ackly.config import BrokerConfig
from ackly.errors import ConfigError
from ackly.listeners import ListenerSet, listener_override_key
from ackly.ssl_principal import Rule, parse_rules

_CLIENT_AUTH = {"none": ssl.CERT_NONE, "requested": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


class _Keys:
    """The ssl.* values of one listener, and the key each came from (for error messages)."""

    def __init__(self, config: BrokerConfig, listener_name: str) -> None:
        self.config = config
        self.listener_name = listener_name

    def get(self, key: str) -> object:
        return self.config.for_listener(self.listener_name, key)

    def text(self, key: str) -> str:
        return str(self.get(key))

    def name(self, key: str) -> str:
        """The key as the operator set it (the per-listener form if that is the one set)."""
        override = listener_override_key(self.listener_name, key)
        return override if override in self.config.values else key


def _load_key_store(context: ssl.SSLContext, keys: _Keys) -> None:
    location = keys.text("ssl.keystore.location")
    chain = keys.text("ssl.keystore.certificate.chain")
    key = keys.text("ssl.keystore.key")
    password = keys.text("ssl.key.password") or None
    if location and (chain or key):
        raise ConfigError(keys.name("ssl.keystore.location"),
                          "give either a key store file or the inline certificate chain and key, not both")
    if location:
        _load_chain(context, keys.name("ssl.keystore.location"), location, None, password)
        return
    if not chain or not key:
        missing = "ssl.keystore.key" if chain else "ssl.keystore.certificate.chain"
        raise ConfigError(keys.name(missing if (chain or key) else "ssl.keystore.location"),
                          f"listener {keys.listener_name} uses TLS and needs a key store: "
                          "ssl.keystore.location, or ssl.keystore.certificate.chain with ssl.keystore.key")
    # The ssl module loads a chain and key only from files: a private file, removed at once.
    fd, path = tempfile.mkstemp(prefix="ackly-key-", suffix=".pem")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(chain.strip() + "\n" + key.strip() + "\n")
        _load_chain(context, keys.name("ssl.keystore.certificate.chain"), path, None, password)
    finally:
        os.unlink(path)


def _load_chain(context: ssl.SSLContext, key_name: str, certfile: str, keyfile: str | None,
                password: str | None) -> None:
    try:
        context.load_cert_chain(certfile, keyfile, password=password)
    except FileNotFoundError:
        raise ConfigError(key_name, f"{certfile}: no such file") from None
    except PermissionError:
        raise ConfigError(key_name, f"{certfile}: not readable") from None
    except ssl.SSLError as exc:
        raise ConfigError(key_name, f"cannot load the certificate chain and private key "
                                    f"(a wrong ssl.key.password, or not PEM?): {exc.reason or exc}") from None


def _load_trust_store(context: ssl.SSLContext, keys: _Keys, purpose: ssl.Purpose) -> None:
    location = keys.text("ssl.truststore.location")
    inline = keys.text("ssl.truststore.certificates")
    try:
        if location:
            context.load_verify_locations(cafile=location)
        elif inline:
            context.load_verify_locations(cadata=inline)
        else:
            context.load_default_certs(purpose)
    except FileNotFoundError:
        raise ConfigError(keys.name("ssl.truststore.location"), f"{location}: no such file") from None
    except (ssl.SSLError, ValueError) as exc:
        name = keys.name("ssl.truststore.location" if location else "ssl.truststore.certificates")
        raise ConfigError(name, f"cannot load the CA certificates: {exc}") from None


def _versions_and_ciphers(context: ssl.SSLContext, keys: _Keys) -> None:
    versions: tuple[str, ...] = keys.config.for_listener(keys.listener_name, "ssl.enabled.protocols")
    enabled = [_VERSIONS[v] for v in versions]
    context.minimum_version = min(enabled)
    context.maximum_version = max(enabled)
    ciphers = keys.text("ssl.cipher.suites")
    if ciphers:
        try:
            context.set_ciphers(ciphers)
        except ssl.SSLError:
            raise ConfigError(keys.name("ssl.cipher.suites"), f"no cipher matches {ciphers!r}") from None


def server_context(config: BrokerConfig, listener_name: str) -> ssl.SSLContext:
    """The context a TLS listener accepts connections with."""
    keys = _Keys(config, listener_name)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _versions_and_ciphers(context, keys)
    _load_key_store(context, keys)
    context.verify_mode = _CLIENT_AUTH[keys.text("ssl.client.auth")]
    if context.verify_mode != ssl.CERT_NONE:
        _load_trust_store(context, keys, ssl.Purpose.CLIENT_AUTH)
    return context


def client_context(config: BrokerConfig, listener_name: str) -> ssl.SSLContext:
    """The context this broker connects to its peers' `listener_name` with: it checks their
    certificates against the trust store (and their host name unless
    ssl.endpoint.identification.algorithm is empty) and presents its own key store."""
    keys = _Keys(config, listener_name)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _versions_and_ciphers(context, keys)
    context.check_hostname = keys.text("ssl.endpoint.identification.algorithm") == "https"
    context.verify_mode = ssl.CERT_REQUIRED
    _load_trust_store(context, keys, ssl.Purpose.SERVER_AUTH)
    _load_key_store(context, keys)
    return context


def mapping_rules(config: BrokerConfig, listener_name: str) -> tuple[Rule, ...]:
    return parse_rules(str(config.for_listener(listener_name, "ssl.principal.mapping.rules")))


def server_contexts(config: BrokerConfig, listeners: ListenerSet) -> Mapping[str, ssl.SSLContext]:
    """A server context for every TLS listener, by name (ConfigError for a bad setting)."""
    return {lst.name: server_context(config, lst.name) for lst in listeners.listeners if lst.uses_tls}


def inter_broker_context(config: BrokerConfig, listeners: ListenerSet) -> ssl.SSLContext | None:
    """The client context for connections to peers, if the inter-broker listener uses TLS."""
    inter = listeners.inter_broker
    return client_context(config, inter.name) if inter.uses_tls else None
