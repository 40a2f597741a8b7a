"""What a BrokerNode asks its shell to carry, besides client answers and flushes.

The core never opens a connection or awaits the metadata store (docs/architecture.md). It hands
the shell two kinds of outputs and takes their outcomes back as inputs, with `now_ms`:

    BrokerNode.take_outputs() -> (list[PeerRequest], list[store Command])   drained; call it
                                  after every input, as after_event does for flushes
    BrokerNode.on_peer_response(request_id, response, now_ms)   a kio response object
    BrokerNode.on_peer_failure(request_id, reason, now_ms)      connect failed, connection
                                  closed or request timed out: it may or may not have been
                                  processed by the peer
    BrokerNode.on_store_inputs(items, now_ms)   CommandResult / WatchEvent / WatchCanceled /
                                  LeaseExpired from the store, in delivery order
    BrokerNode.broker_address(broker_id) -> (host, port) | None   where a peer listens
    BrokerNode.next_deadline_ms() / tick(now_ms)   include the member's and replication's timers

Peer requests: the shell sends `request` (a kio request object: its class names the API key and
version) to `broker_id` on a connection of its own per (peer, `channel`): "replica" carries
the follower fetches (at most one in flight per leader, long-polling), "txn" the transaction
markers and KIP-890 verifications, which must not wait behind a fetch. It reports exactly one
outcome per request id. Answers to one peer may be reported in any order relative to store
inputs.

Store commands are cluster/store.py `Command`s, to be submitted with this broker's client id
(`str(broker_id)`, or anything unique per broker process) to the MemoryStore or the etcd adapter;
their results and the watch events come back through `on_store_inputs`. A broker started
without an external store (single-broker mode) answers its commands itself and never returns
any here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PeerRequest:
    """The node wants this kio request sent to another broker."""

    request_id: int
    broker_id: int
    request: Any  # a kio request object; api key and version come from its class
    # Requests on different channels to one broker use different connections, so transaction
    # markers and verifications never queue behind a long-polling replica fetch.
    channel: str = "replica"


@dataclass(frozen=True)
class StoreCommandOut:
    """A cluster/store.py command for the metadata store (for shells that want one tagged
    stream of outputs; `take_outputs` returns the commands themselves)."""

    command: Any
