"""The client-side limits hold (lower bounds on elapsed time only: a busy machine is slower,
never faster), and Retry-After style pauses stop every worker."""
import asyncio
import time

from alpagasus.judging.judges.openai_judge import retry_after_seconds
from alpagasus.judging.ratelimit import RateLimiter


def _elapsed(limiter, n, tokens=0.0, workers=8):
    async def go():
        q = list(range(n))

        async def worker():
            while q:
                q.pop()
                await limiter.acquire(tokens)

        t0 = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(workers)))
        return time.monotonic() - t0

    return asyncio.run(go())


def test_requests_per_minute():
    # 1,200/min = 20/s with a one-second burst: 60 requests need at least 2 s.
    assert _elapsed(RateLimiter(requests_per_minute=1200), 60) >= 1.9


def test_tokens_per_minute():
    # 60,000 tokens/min = 1,000/s; 30 requests of 100 tokens = 3,000 tokens: at least 2 s.
    assert _elapsed(RateLimiter(tokens_per_minute=60_000), 30, tokens=100) >= 1.9


def test_no_limits_no_waiting():
    assert _elapsed(RateLimiter(), 1000) < 1.0


def test_pause_holds_everyone():
    lim = RateLimiter()
    lim.pause(0.5)
    assert _elapsed(lim, 4) >= 0.45


def test_retry_after_header_forms():
    assert retry_after_seconds({"retry-after": "2"}) == 2.0
    assert retry_after_seconds({"retry-after": "0.25"}) == 0.25
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert 9 <= retry_after_seconds({"retry-after": time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 10))}) <= 11
    assert retry_after_seconds({}) is None and retry_after_seconds(None) is None
