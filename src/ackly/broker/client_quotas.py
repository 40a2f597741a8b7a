"""Client quota enforcement (KIP-13, KIP-124, KIP-219): how much each client has used, and how
long it must wait.

Owns: one `SampledRate` per (quota key, shared-by tags), Kafka's Rate over a SampledStat of
`quota.window.num` samples of `quota.window.size.seconds` each, and the throttle time of
Kafka's ClientQuotaManager: record the usage first, then, if the measured rate is above the
bound, throttle = (rate - bound) / bound * window, at most the whole window (QuotaUtils).
Time comes in as `now_ms` (monotonic); nothing here reads a clock.

Which quota applies and who shares it comes from the cluster metadata on every record
(cluster/quotas.py `resolve`), so a change made through AlterClientQuotas takes effect at the
next request once this broker's view holds it. A client without a quota is not measured.

Invariants: samples of one rate are at most `samples` long-lived slots, reused in a ring as
Kafka's SampledStat; a sample is reset once older than samples * window (purged); the window
a rate is divided by is never below (samples - 1) windows, nor 1 ms.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ackly.cluster.quotas import (
    CONSUMER_BYTE_RATE,
    PRODUCER_BYTE_RATE,
    REQUEST_PERCENTAGE,
    QuotaEntity,
    resolve,
    user_of,
)

# Kafka's ClientRequestQuotaManager: handler time is recorded as a percentage of one thread
# per second (100% = one thread busy all the time).
PERCENT_PER_NANO = 100.0 / 1e9
# Rates nobody recorded for this long are dropped (Kafka expires idle quota sensors too).
_IDLE_EXPIRY_MS = 3_600_000


class _Sample:
    __slots__ = ("start_ms", "value")

    def __init__(self, start_ms: int) -> None:
        self.start_ms = start_ms
        self.value = 0.0


class SampledRate:
    """Kafka's Rate (per second) over a windowed sum: `samples` samples of `window_ms` each."""

    def __init__(self, samples: int, window_ms: int) -> None:
        assert samples >= 1 and window_ms >= 1
        self.samples = samples
        self.window_ms = window_ms
        self._ring: list[_Sample] = []
        self._current = 0
        self.last_record_ms = 0

    def record(self, value: float, now_ms: int) -> None:
        self.last_record_ms = now_ms
        if not self._ring:
            self._ring.append(_Sample(now_ms))
        sample = self._ring[self._current]
        if now_ms - sample.start_ms >= self.window_ms:
            # SampledStat.advance: the next slot of the ring, new or reused.
            self._current = (self._current + 1) % self.samples
            if self._current >= len(self._ring):
                self._ring.append(_Sample(now_ms))
            else:
                self._ring[self._current].start_ms = now_ms
                self._ring[self._current].value = 0.0
            sample = self._ring[self._current]
        sample.value += value

    def _purge(self, now_ms: int) -> None:
        expire_ms = self.samples * self.window_ms
        for sample in self._ring:
            if now_ms - sample.start_ms >= expire_ms:
                sample.start_ms = now_ms
                sample.value = 0.0

    def window_size_ms(self, now_ms: int) -> int:
        """Rate.windowSize: from the oldest sample to now, at least samples - 1 whole windows."""
        self._purge(now_ms)
        oldest = min((s.start_ms for s in self._ring), default=now_ms)
        elapsed_ms = now_ms - oldest
        full_windows = elapsed_ms // self.window_ms
        if full_windows < self.samples - 1:
            elapsed_ms += (self.samples - 1 - full_windows) * self.window_ms
        return max(elapsed_ms, 1)

    def total(self, now_ms: int) -> float:
        self._purge(now_ms)
        return sum(s.value for s in self._ring)

    def measure(self, now_ms: int) -> float:
        """Per second."""
        total = self.total(now_ms)
        return total / (self.window_size_ms(now_ms) / 1000.0)


def throttle_time_ms(rate: float, bound: float, window_ms: int, max_ms: int) -> int:
    """QuotaUtils.boundedThrottleTime: how long until the rate over the window falls back to
    the bound, at most max_ms (0 when the rate is within the bound)."""
    if rate <= bound:
        return 0
    # Java's Math.round: half up.
    throttle = int(((rate - bound) / bound * window_ms) + 0.5)
    return min(throttle, max_ms)


@dataclass(frozen=True)
class _RateKey:
    quota_key: str
    user_tag: str
    client_tag: str


class ClientQuotas:
    """The node's quota accounting. `quotas` gives the current view's client quotas."""

    def __init__(self, quotas: Callable[[], Mapping[QuotaEntity, Mapping[str, float]]],
                 samples: int, window_size_seconds: int) -> None:
        self._quotas = quotas
        self.samples = samples
        self.window_ms = window_size_seconds * 1000
        # ClientQuotaManager's maxThrottleTimeMs: the whole measured window.
        self.max_throttle_ms = self.window_ms * samples
        self._rates: dict[_RateKey, SampledRate] = {}
        self._records = 0

    def record_produce(self, principal: str, client_id: str, request_bytes: int, now_ms: int) -> int:
        """A Produce request of this size (Kafka records the request's size): its throttle."""
        return self._record(PRODUCER_BYTE_RATE, principal, client_id, float(request_bytes), now_ms)

    def record_fetch(self, principal: str, client_id: str, response_bytes: int, now_ms: int) -> int:
        """A consumer's Fetch response of this size (Kafka records the response's size)."""
        return self._record(CONSUMER_BYTE_RATE, principal, client_id, float(response_bytes), now_ms)

    def record_request_time(self, principal: str, client_id: str, handler_ns: int, now_ms: int) -> int:
        """Time a request's handler held the event loop (ClientRequestQuotaManager)."""
        return self._record(REQUEST_PERCENTAGE, principal, client_id, handler_ns * PERCENT_PER_NANO, now_ms)

    def request_throttle_ms(self, principal: str, client_id: str, now_ms: int) -> int:
        """The request_percentage throttle this client is under now, from the handler time
        recorded so far (nothing recorded): what its next answer carries in throttle_time_ms."""
        quotas = self._quotas()
        if not quotas:
            return 0
        resolved = resolve(quotas, user_of(principal), client_id, REQUEST_PERCENTAGE)
        if resolved is None:
            return 0
        rate = self._rates.get(_RateKey(REQUEST_PERCENTAGE, resolved.user_tag, resolved.client_tag))
        if rate is None:
            return 0
        return throttle_time_ms(rate.measure(now_ms), resolved.bound, rate.window_size_ms(now_ms),
                                self.max_throttle_ms)

    def has_quotas(self) -> bool:
        return bool(self._quotas())

    def _record(self, key: str, principal: str, client_id: str, value: float, now_ms: int) -> int:
        quotas = self._quotas()
        if not quotas:
            return 0
        resolved = resolve(quotas, user_of(principal), client_id, key)
        if resolved is None:
            return 0
        rate_key = _RateKey(key, resolved.user_tag, resolved.client_tag)
        rate = self._rates.get(rate_key)
        if rate is None:
            rate = self._rates[rate_key] = SampledRate(self.samples, self.window_ms)
        rate.record(value, now_ms)
        self._records += 1
        if self._records % 10_000 == 0:
            self._expire(now_ms)
        measured = rate.measure(now_ms)
        return throttle_time_ms(measured, resolved.bound, rate.window_size_ms(now_ms), self.max_throttle_ms)

    def _expire(self, now_ms: int) -> None:
        idle = [k for k, r in self._rates.items() if now_ms - r.last_record_ms >= _IDLE_EXPIRY_MS]
        for key in idle:
            del self._rates[key]

    def measured_rate(self, key: str, user_tag: str, client_tag: str, now_ms: int) -> float | None:
        """The rate measured for these tags (None: nothing recorded); for tests and tools."""
        rate = self._rates.get(_RateKey(key, user_tag, client_tag))
        return None if rate is None else rate.measure(now_ms)
