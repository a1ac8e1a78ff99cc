"""Token buckets that cap how many reports each reporter may send to one API process."""

import math
import time
from collections.abc import Callable

from flask import Flask, current_app

from spam_filter.fork_safe_lock import ForkSafeLock

EXTENSION_KEY = "report_rate_limits"


class TokenBuckets:
    """One bucket per reporter: `rate` reports a second on average, bursts of up to `burst`.

    The buckets live in this process, so a server with N processes accepts up to N times the rate.
    """

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("the report rate and burst must be positive")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[int, tuple[float, float]] = {}
        self._lock = ForkSafeLock()

    def take(self, reporter_id: int, count: int) -> float:
        """Take `count` tokens: 0 when they were there, else the seconds until they will be."""
        with self._lock:
            now = self._clock()
            tokens, updated = self._buckets.get(reporter_id, (self.burst, now))
            tokens = min(self.burst, tokens + (now - updated) * self.rate)
            if tokens >= count:
                self._buckets[reporter_id] = (tokens - count, now)
                return 0.0
            self._buckets[reporter_id] = (tokens, now)
            return (min(count, self.burst) - tokens) / self.rate

    def give_back(self, reporter_id: int, count: int) -> None:
        """Return tokens taken for reports that were not stored after all."""
        with self._lock:
            tokens, updated = self._buckets.get(reporter_id, (self.burst, self._clock()))
            self._buckets[reporter_id] = (min(self.burst, tokens + count), updated)


def retry_after_header(seconds: float) -> str:
    """Whole seconds, rounded up, as HTTP's Retry-After wants them."""
    return str(max(1, math.ceil(seconds)))


def init_app(app: Flask) -> None:
    app.extensions[EXTENSION_KEY] = TokenBuckets(
        app.config["REPORT_RATE_PER_SECOND"], app.config["REPORT_BURST"]
    )


def current_buckets() -> TokenBuckets:
    return current_app.extensions[EXTENSION_KEY]
