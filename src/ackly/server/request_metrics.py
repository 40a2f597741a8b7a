"""The shell's own request, flush and coordinator-load measurements, in plain numbers.

Kept apart from the Prometheus collector (metrics.py) so that a broker imports no exporter
until its admin listener starts: these are updated on the request path of every broker.
"""

from __future__ import annotations

from ackly.errors import ErrorCode

# Request latency buckets (seconds): from a cached metadata answer to a long-polling fetch.
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
FLUSH_BUCKETS_S = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class Histogram:
    """A fixed-bucket histogram in plain numbers (cumulative at export)."""

    __slots__ = ("bounds", "counts", "sum_s")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum_s = 0.0

    def observe(self, value_s: float) -> None:
        i = 0
        for bound in self.bounds:
            if value_s <= bound:
                break
            i += 1
        self.counts[i] += 1
        self.sum_s += value_s

    def buckets(self) -> list[tuple[str, float]]:
        out, total = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(total)))
        return out


def _api_name(api_key: int) -> str:
    """Kafka's name for an API key; keys outside the table share one label (bounded)."""
    return API_NAMES.get(api_key, "unknown")


# Kafka's request names (the `request` tag of kafka.network:type=RequestMetrics).
API_NAMES = {
    0: "Produce", 1: "Fetch", 2: "ListOffsets", 3: "Metadata", 8: "OffsetCommit", 9: "OffsetFetch",
    10: "FindCoordinator", 11: "JoinGroup", 12: "Heartbeat", 13: "LeaveGroup", 14: "SyncGroup",
    15: "DescribeGroups", 16: "ListGroups", 18: "ApiVersions", 19: "CreateTopics", 20: "DeleteTopics",
    21: "DeleteRecords", 22: "InitProducerId", 23: "OffsetForLeaderEpoch", 24: "AddPartitionsToTxn",
    25: "AddOffsetsToTxn", 26: "EndTxn", 27: "WriteTxnMarkers", 28: "TxnOffsetCommit",
    32: "DescribeConfigs", 33: "AlterConfigs", 37: "CreatePartitions", 42: "DeleteGroups",
    44: "IncrementalAlterConfigs", 47: "OffsetDelete", 60: "DescribeCluster", 61: "DescribeProducers",
    65: "DescribeTransactions", 66: "ListTransactions",
}


# The delayed operations of the purgatory, by class, with the label Kafka's purgatories use.
PURGATORY_KINDS = {
    "DelayedProduce": "Produce", "DelayedFetch": "Fetch", "_DelayedReplies": "CoordinatorWrite",
    "DelayedMarkers": "TxnMarkers",
}


class RequestMetrics:
    """Kafka's RequestMetrics per API key: requests, errors by code, total time.

    Fed by the connection (server/connection.py) when a request arrives and when its answer
    is ready; errors come from the response's error codes (RequestContext.on_response). The
    label sets are bounded by the API table and Kafka's error codes.
    """

    def __init__(self) -> None:
        self.requests: dict[str, int] = {}
        self.errors: dict[tuple[str, str], int] = {}
        self.latency: dict[str, Histogram] = {}

    def observe(self, api_key: int, elapsed_s: float) -> None:
        name = _api_name(api_key)
        self.requests[name] = self.requests.get(name, 0) + 1
        hist = self.latency.get(name)
        if hist is None:
            hist = self.latency[name] = Histogram(LATENCY_BUCKETS_S)
        hist.observe(elapsed_s)

    def count_errors(self, api_key: int, response: object) -> None:
        """Count every error code in a response (Kafka's errorCounts: top level and per
        partition or resource); NONE is not counted."""
        codes: dict[int, int] = {}
        _collect_error_codes(response, codes, 0)
        if not codes:
            return
        name = _api_name(api_key)
        for code, n in codes.items():
            try:
                label = ErrorCode(code).name.upper()
            except ValueError:
                label = str(code)
            key = (name, label)
            self.errors[key] = self.errors.get(key, 0) + n


_MAX_DEPTH = 4  # response -> topics -> partitions -> fields


def _collect_error_codes(obj: object, codes: dict[int, int], depth: int) -> None:
    fields = getattr(obj, "__dataclass_fields__", None)
    if fields is None or depth > _MAX_DEPTH:
        return
    for name in fields:
        value = getattr(obj, name)
        if name == "error_code":
            code = int(value)
            if code:
                codes[code] = codes.get(code, 0) + 1
        elif isinstance(value, tuple | list):
            for item in value:
                _collect_error_codes(item, codes, depth + 1)


class FlushMetrics:
    """The flusher's group commits: their latency (LogFlushStats' LogFlushRateAndTimeMs) and
    the flushes that failed (fsync errors: the log directory went offline)."""

    def __init__(self) -> None:
        self.latency = Histogram(FLUSH_BUCKETS_S)
        self.errors = 0


LOAD_BUCKETS_S = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0)


class CoordinatorLoadMetrics:
    """How long each coordinator shard load (the replay of its partition) took, per
    coordinator: Kafka's group- and transaction-coordinator-metrics partition-load-time."""

    def __init__(self) -> None:
        self.latency = {name: Histogram(LOAD_BUCKETS_S) for name in ("group", "transaction")}

    def observe(self, coordinator: str, elapsed_s: float) -> None:
        self.latency[coordinator].observe(elapsed_s)
