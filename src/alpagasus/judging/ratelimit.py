"""Client-side requests-per-minute and tokens-per-minute limits (token buckets).

Staying under the provider's limits is cheaper than being told off: a 429 costs a round trip
and a backoff. Each bucket refills continuously and holds at most a fifth of a second of its
rate (or one request's worth of tokens, if larger), so bursts stay small. A 429 from the server pauses
every worker until its Retry-After has passed.
"""

from __future__ import annotations

import asyncio
import time


# The most a bucket holds: a fifth of a second of its rate. A provider's bucket of a second
# then has room left for the jitter with which our requests reach it; a burst of a whole
# second (what we held before) left it empty, and 2.8% of requests at 30,000 rpm met a 429.
BURST_S = 0.2


class _Bucket:
    def __init__(self, per_minute: float):
        self.rate = per_minute / 60.0
        self.capacity = max(self.rate * BURST_S, 1.0)
        self.level = self.capacity
        self.t = time.monotonic()

    def _refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.t) * self.rate)
        self.t = now

    def wait_time(self, amount: float, now: float) -> float:
        self._refill(now)
        need = min(amount, self.capacity)
        # A request larger than the bucket waits for a full bucket, then overdraws it: it must
        # be able to go at all, and the debt slows the next ones down correctly.
        if self.level >= need:
            return 0.0
        return (need - self.level) / self.rate

    def take(self, amount: float) -> None:
        self.level -= amount


class RateLimiter:
    def __init__(self, requests_per_minute: float | None = None, tokens_per_minute: float | None = None):
        self._req = _Bucket(requests_per_minute) if requests_per_minute else None
        self._tok = _Bucket(tokens_per_minute) if tokens_per_minute else None
        self._lock = asyncio.Lock()
        self._paused_until = 0.0

    def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    async def acquire(self, tokens: float = 0.0) -> None:
        # One waiter at a time, so requests go out in arrival order and none starves.
        async with self._lock:
            while True:
                now = time.monotonic()
                wait = self._paused_until - now
                if self._req:
                    wait = max(wait, self._req.wait_time(1.0, now))
                if self._tok:
                    wait = max(wait, self._tok.wait_time(tokens, now))
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
            if self._req:
                self._req.take(1.0)
            if self._tok:
                self._tok.take(tokens)
