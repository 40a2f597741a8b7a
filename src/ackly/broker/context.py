"""What a handler knows about the request in front of it, and how it answers.

The shell creates one RequestContext per request and gives it a `sink`; the handler calls
`respond` (a kio response), `send` (pieces already encoded, possibly with file ranges) or
`no_response` (acks=0) exactly once, now or later from a delayed operation. The shell writes
answers in request order per connection whatever order they are given in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ackly.protocol.fetch_codec import Chunk
from ackly.protocol.headers import RequestHeader
from ackly.protocol.messages import encode_response

Pieces = Sequence["bytes | Chunk"]


@dataclass
class RequestContext:
    header: RequestHeader
    now_ms: int
    sink: Callable[[Pieces | None], None]
    connection_id: int = 0
    client_host: str = ""
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
