"""Client-side requests-per-minute and tokens-per-minute limits (token buckets).

Staying under the provider's limits is cheaper than being told off: a 429 costs a round trip
and a backoff. Each bucket refills continuously and holds at most a fifth of a second of its
rate (or one request's worth of tokens, if larger), so bursts stay small.

A 429 pauses every worker for its Retry-After when it speaks for the whole account, as a
provider's rate limit does (and while it holds, every request sent is refused and still counts
against the limit). Two rules keep that pause from costing more than the limit itself:
- one pause per window: a 429 that comes inside the window an earlier one announced (its
  Retry-After as the server said it, before max_wait_s capped our wait) does not pause again: we
  waited for that window already, as long as we were willing to. Ten keys told "come back
  tomorrow" are one pause, not ten;
- proportionate: a 429 pauses everyone only where 429s are at least half of the recent answers
  (the last RECENT_ANSWERS since the last pause began). A 429 among successes (a server shedding a tenth of its load, a limit on
  one large request) makes only its own request wait its Retry-After: 10% of 429s then cost
  about 10%, not 5x.
"""

from __future__ import annotations

import asyncio
import collections
import time


# The most a bucket holds: a fifth of a second of its rate. A provider's bucket of a second
# then has room left for the jitter with which our requests reach it; a burst of a whole
# second (what we held before) left it empty, and 2.8% of requests at 30,000 rpm met a 429.
BURST_S = 0.2
# The share of 429s among the recent answers from which a 429 pauses every worker, and how many
# answers are recent: enough to tell a tenth from a half, few enough that a limit hit after hours
# of successes is seen within a round of requests.
GLOBAL_429_SHARE = 0.5
RECENT_ANSWERS = 20


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
        self._window_end = 0.0  # where the server's last announced window ends (uncapped)
        self._recent: collections.deque[bool] = collections.deque(maxlen=RECENT_ANSWERS)  # True: a 429
        self.pauses = 0         # pauses of every worker taken

    def pause(self, seconds: float) -> None:
        """Hold every worker for ``seconds``."""
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    def answered(self) -> None:
        """Count a server answer that was not a 429 (the share of 429s decides the pauses)."""
        self._recent.append(False)

    def rate_limited(self, wait: float, asked: float | None = None) -> bool:
        """A 429 whose request will wait ``wait`` seconds (``asked``: the server's Retry-After,
        before any cap). Returns whether every worker pauses with it (else only its request waits)."""
        now = time.monotonic()
        self._recent.append(True)
        if now < self._window_end or sum(self._recent) < GLOBAL_429_SHARE * len(self._recent):
            return False
        self.pause(wait)
        self._window_end = now + max(wait, asked or 0.0)
        self._recent.clear()
        self.pauses += 1
        return True

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
