"""One connection's SASL authentication (KIP-152), re-authentication (KIP-368) and principal.

Owns: where a connection on a SASL listener stands in the exchange, the mechanism it chose,
the SCRAM server of the exchange in progress (scramp's, RFC 5802/7677: ackly never writes the
exchange itself), the authenticated principal and when its session ends. As Kafka's
SaslServerAuthenticator:

    HANDSHAKE --SaslHandshake(enabled mechanism)--> AUTHENTICATE --SaslAuthenticate...--> AUTHENTICATED
        |  ApiVersions: stays                          |  a failed step: FAILED (the answer,
        |  anything else: refused (closed)             |  SASL_AUTHENTICATION_FAILED, then close)
        +  a mechanism not enabled: FAILED             +  anything else: refused (closed)
    AUTHENTICATED --SaslHandshake (same mechanism)--> re-authentication; every other request is
        served while the session lasts; past `connections.max.reauth.ms` without a new
        session, the next request is refused (the connection closes, KIP-368).

Invariants: `principal` is User:ANONYMOUS until the first exchange succeeds and never changes
after it (a re-authentication as someone else fails); no request but ApiVersions,
SaslHandshake and SaslAuthenticate is admitted before that; every failure carries a message
and ends the connection. Credentials are read from the broker's view of the cluster metadata
at each step (a credential changed online takes effect on the next exchange). Deterministic:
the server nonce comes from the injected `new_nonce` (the shell's CSPRNG), time as `now_ms`.

PLAIN (RFC 4616) is checked against the user's stored SCRAM credential (SCRAM-SHA-512 if it
has one, else SCRAM-SHA-256): the given password is salted and iterated with the stored salt
and count and its stored key compared, so no password is ever kept in clear.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from ackly.cluster.scram import SCRAM_MECHANISMS, ScramCredential
from ackly.errors import ErrorCode, KafkaError

if TYPE_CHECKING:
    import scramp

log = logging.getLogger("ackly.sasl")

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
ANONYMOUS = "User:ANONYMOUS"
PLAIN = "PLAIN"
MECHANISMS = (PLAIN, *SCRAM_MECHANISMS)

Credentials = Mapping[tuple[str, str], ScramCredential]


class SaslState(Enum):
    HANDSHAKE = "handshake"  # expects ApiVersions or SaslHandshake
    AUTHENTICATE = "authenticate"  # a mechanism is chosen; expects SaslAuthenticate
    AUTHENTICATED = "authenticated"
    FAILED = "failed"  # the connection is to be closed after the answer in flight


class SaslRefused(KafkaError):
    """A request the state does not admit: the connection is closed without an answer."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.illegal_sasl_state, message)


@dataclass(frozen=True)
class StepResult:
    error: ErrorCode = ErrorCode.none
    message: str | None = None
    challenge: bytes = b""
    session_lifetime_ms: int = 0


def _saslname(name: str) -> str:
    """RFC 5802 s.5.1: "=2C" and "=3D" stand for "," and "=" in a SCRAM user name."""
    return name.replace("=2C", ",").replace("=3D", "=")


def _accept_prefixed_nonce(server: scramp.core.ScramServer, client_final: str) -> None:
    """Accept a client-final nonce that ends with the exchange's nonce, as Kafka's
    ScramSaslServer does (it checks `endsWith`): librdkafka 2.0 (Debian's kcat) sends its own
    nonce again in front of the combined one. The proof is still checked over the message as
    the client sent it, and the server's nonce must still be there, so nothing is replayable."""
    import scramp  # on first use: importing it costs start-up time (the pytest fixture's)
    expected = str(server.nonce)
    for attribute in client_final.split(","):
        if attribute.startswith("r="):
            sent = attribute[2:]
            if sent != expected and sent.endswith(expected):
                server.nonce = scramp.core.Nonce(sent)
            return


def _invalid(mechanism: str) -> str:
    # Kafka's message for every credential failure: it does not say which part was wrong.
    return f"Authentication failed during authentication due to invalid credentials with SASL mechanism {mechanism}"


class SaslSession:
    def __init__(self, enabled_mechanisms: tuple[str, ...], *, new_nonce: Callable[[], str],
                 max_reauth_ms: int = 0) -> None:
        self.enabled_mechanisms = enabled_mechanisms
        self.max_reauth_ms = max_reauth_ms
        self._new_nonce = new_nonce
        self.state = SaslState.HANDSHAKE
        self.mechanism: str | None = None
        self.principal = ANONYMOUS
        self.session_expiry_ms: int | None = None  # None: the session does not end
        self.reauthenticating = False
        # After SaslHandshake v0 the tokens come as bare size-prefixed frames (Kafka before
        # 1.0); the shell hands them to `authenticate` and writes the challenge the same way.
        self.raw_tokens = False
        self.failure: str | None = None
        self._scram: scramp.core.ScramServer | None = None
        self._scram_user = ""

    @property
    def authenticated(self) -> bool:
        return self.state is SaslState.AUTHENTICATED or self.reauthenticating

    # --- the gate ----------------------------------------------------------------------------

    def admit(self, api_key: int, now_ms: int) -> None:
        """Raise SaslRefused if this request may not be served now (the connection closes)."""
        state = self.state
        if self.raw_tokens:
            raise SaslRefused("a Kafka request where a bare SASL token was expected (SaslHandshake v0)")
        if state is SaslState.FAILED:
            raise SaslRefused(f"authentication failed: {self.failure}")
        if self.authenticated:
            if self.reauthenticating and api_key in (SASL_HANDSHAKE, SASL_AUTHENTICATE):
                return
            if api_key == SASL_AUTHENTICATE:
                raise SaslRefused("SaslAuthenticate without a SaslHandshake after authentication (ILLEGAL_SASL_STATE)")
            expiry = self.session_expiry_ms
            if expiry is not None and now_ms >= expiry and api_key != SASL_HANDSHAKE:
                raise SaslRefused(f"the session of {self.principal} expired (connections.max.reauth.ms "
                                  f"{self.max_reauth_ms}) without re-authentication")
            return
        if state is SaslState.HANDSHAKE and api_key in (API_VERSIONS, SASL_HANDSHAKE):
            return
        if state is SaslState.AUTHENTICATE and api_key == SASL_AUTHENTICATE:
            return
        # Kafka's IllegalSaslStateException: "Unexpected Kafka request of type ... during SASL ..."
        phase = "handshake" if state is SaslState.HANDSHAKE else "authentication"
        raise SaslRefused(f"unexpected request of API key {api_key} during SASL {phase} (ILLEGAL_SASL_STATE)")

    # --- SaslHandshake -----------------------------------------------------------------------

    def handshake(self, mechanism: str) -> ErrorCode:
        if self.state is SaslState.AUTHENTICATED:
            # KIP-368: a new exchange on an authenticated connection, with the same mechanism.
            if mechanism != self.mechanism:
                self._fail(f"re-authentication with {mechanism!r} after {self.mechanism!r}")
                return ErrorCode.illegal_sasl_state
            self.reauthenticating = True
            self._start()
            return ErrorCode.none
        if mechanism not in self.enabled_mechanisms:
            self._fail(f"mechanism {mechanism!r} is not enabled (sasl.enabled.mechanisms: "
                       f"{', '.join(self.enabled_mechanisms)})")
            return ErrorCode.unsupported_sasl_mechanism
        self.mechanism = mechanism
        self.state = SaslState.AUTHENTICATE
        self._start()
        return ErrorCode.none

    def _start(self) -> None:
        self._scram = None
        self._scram_user = ""

    # --- SaslAuthenticate --------------------------------------------------------------------

    def authenticate(self, auth_bytes: bytes, credentials: Credentials, now_ms: int) -> StepResult:
        """One step of the exchange. A failure sets FAILED: the caller answers, then closes."""
        mechanism = self.mechanism
        assert mechanism is not None
        if mechanism == PLAIN:
            user = self._plain(auth_bytes, credentials)
            return self._finish(user, b"", now_ms) if user is not None else self._failed_step()
        if self._scram is None:
            return self._scram_first(mechanism, auth_bytes, credentials)
        return self._scram_final(auth_bytes, now_ms)

    def _plain(self, auth_bytes: bytes, credentials: Credentials) -> str | None:
        # RFC 4616: [authzid] NUL authcid NUL passwd. Kafka's PlainSaslServer refuses an
        # authzid other than the user itself.
        try:
            parts = auth_bytes.decode("utf-8").split("\x00")
        except UnicodeDecodeError:
            self._fail("SASL/PLAIN response is not UTF-8")
            return None
        if len(parts) != 3:
            self._fail(f"invalid SASL/PLAIN response: expected 3 tokens, got {len(parts)}")
            return None
        authzid, user, password = parts
        if not user or not password:
            self._fail("SASL/PLAIN: username or password not specified")
            return None
        if authzid and authzid != user:
            self._fail("SASL/PLAIN: an authorization id different from the username")
            return None
        for scram in ("SCRAM-SHA-512", "SCRAM-SHA-256"):
            credential = credentials.get((user, scram))
            if credential is not None:
                if credential.matches_password(password):
                    return user
                break
        self._fail(f"invalid credentials for {user!r}")
        return None

    def _scram_first(self, mechanism: str, auth_bytes: bytes, credentials: Credentials) -> StepResult:
        import scramp  # on first use: importing it costs start-up time (the pytest fixture's)
        def auth_fn(username: str) -> tuple[bytes, bytes, bytes, int]:
            user = _saslname(username)
            credential = credentials.get((user, mechanism))
            if credential is None:
                raise scramp.ScramException(f"unknown user {user!r}", scramp.core.ServerError.UNKNOWN_USER)
            self._scram_user = user
            return credential.auth_info()

        try:
            server = scramp.ScramMechanism(mechanism).make_server(auth_fn, s_nonce=self._new_nonce())
            server.set_client_first(auth_bytes.decode("utf-8"))
            challenge = server.get_server_first()
        except (scramp.ScramException, UnicodeDecodeError, ValueError) as exc:
            self._fail(f"client-first message refused: {exc}")
            return self._failed_step()
        self._scram = server
        return StepResult(challenge=challenge.encode("utf-8"))

    def _scram_final(self, auth_bytes: bytes, now_ms: int) -> StepResult:
        import scramp  # on first use: importing it costs start-up time (the pytest fixture's)
        server = self._scram
        assert server is not None
        self._scram = None
        try:
            message = auth_bytes.decode("utf-8")
            _accept_prefixed_nonce(server, message)
            server.set_client_final(message)
            final = server.get_server_final()
        except (scramp.ScramException, UnicodeDecodeError, ValueError) as exc:
            # A wrong password (the proof), a nonce not the one this exchange began with, or a
            # malformed message.
            self._fail(f"client-final message of {self._scram_user!r} refused: {exc}")
            return self._failed_step()
        return self._finish(self._scram_user, final.encode("utf-8"), now_ms)

    def _finish(self, user: str, final: bytes, now_ms: int) -> StepResult:
        principal = f"User:{user}"
        if self.reauthenticating and principal != self.principal:
            # Kafka: "Cannot change principals during re-authentication".
            self._fail(f"re-authentication as {principal} on a connection of {self.principal}")
            return self._failed_step()
        if self.reauthenticating:
            log.info("SASL %s: %s re-authenticated", self.mechanism, principal)
        self.principal = principal
        self.state = SaslState.AUTHENTICATED
        self.reauthenticating = False
        lifetime_ms = self.max_reauth_ms
        self.session_expiry_ms = now_ms + lifetime_ms if lifetime_ms > 0 else None
        return StepResult(challenge=final, session_lifetime_ms=lifetime_ms)

    def _failed_step(self) -> StepResult:
        assert self.mechanism is not None
        return StepResult(ErrorCode.sasl_authentication_failed, _invalid(self.mechanism))

    def _fail(self, reason: str) -> None:
        self.state = SaslState.FAILED
        self.reauthenticating = False
        self._scram = None
        self.failure = reason
        log.info("SASL %s: %s", self.mechanism or "handshake", reason)
