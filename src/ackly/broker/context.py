"""What a handler knows about the request in front of it, and how it answers.

The shell creates one RequestContext per request and gives it a `sink`; the handler calls
`respond` (a kio response), `send` (pieces already encoded, possibly with file ranges) or
`no_response` (acks=0) exactly once, now or later from a delayed operation. The shell writes
answers in request order per connection whatever order they are given in.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ackly.protocol.fetch_codec import Chunk
from ackly.protocol.headers import RequestHeader
from ackly.protocol.messages import encode_response

if TYPE_CHECKING:
    from ackly.broker.sasl import SaslSession

Pieces = Sequence["bytes | Chunk"]


@dataclass
class RequestContext:
    header: RequestHeader
    now_ms: int
    sink: Callable[[Pieces | None], None]
    connection_id: int = 0
    client_host: str = ""
    # The listener the request came in on (listeners.py; "" when no shell is involved: tests,
    # the simulator), its security protocol, and who sent it (Kafka's KafkaPrincipal as a
    # string: `User:<name>`, User:ANONYMOUS before or without authentication).
    listener_name: str = ""
    security_protocol: str = "PLAINTEXT"
    principal: str = "User:ANONYMOUS"
    # The connection's SASL session on a SASL listener (broker/sasl.py), else None.
    sasl: SaslSession | None = None
    # Client quotas (broker/client_quotas.py, KIP-219): how long the client must wait, set by
    # the shell before the handler runs (its request_percentage throttle) and raised by the
    # Produce / Fetch handlers (byte rates) before they answer; it goes into the response's
    # throttle_time_ms, and the shell stops reading from the connection for that long once
    # the answer is written.
    throttle_time_ms: int = field(default=0, init=False)
    request_bytes: int = field(default=0, init=False)  # the whole request frame (set by dispatch)
    # Sees each kio response `respond` encodes, with the API key (the shell counts its error
    # codes for Kafka's RequestMetrics ErrorsPerSec; server/metrics.py).
    on_response: Callable[[int, Any], None] | None = None
    answered: bool = field(default=False, init=False)

    @property
    def api_version(self) -> int:
        return self.header.api_version

    def send(self, pieces: Pieces) -> None:
        assert not self.answered, f"request {self.header.correlation_id} answered twice"
        self.answered = True
        self.sink(pieces)

    def respond(self, response: Any) -> None:
        """Encode a kio response for this request and send it."""
        if self.throttle_time_ms and hasattr(response, "throttle_time"):
            response = dataclasses.replace(
                response, throttle_time=datetime.timedelta(milliseconds=self.throttle_time_ms))
        if self.on_response is not None:
            self.on_response(self.header.api_key, response)
        self.send(
            [encode_response(self.header.api_key, self.header.api_version,
                             self.header.correlation_id, response)]
        )

    def no_response(self) -> None:
        """acks=0: the request gets no answer at all (the client is not reading one)."""
        assert not self.answered
        self.answered = True
        self.sink(None)
