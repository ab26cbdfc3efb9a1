"""Client-side rate limits for one teacher: request and token budgets per minute, a pause that
honours Retry-After for every worker, and a concurrency limit that adapts to overload.

- `RateLimiter`: two token buckets (requests/min, tokens/min), each refilled continuously and
  holding at most one second of its rate (so a fresh run does not burst a minute's quota at
  once). A call's tokens are estimated before it (prompt chars // 4 + max_tokens) and corrected
  with the real usage after it. A call bigger than the bucket may still go (the bucket goes into
  debt and later calls wait it off): a limit lowers the rate, it never blocks forever.
- `AdaptiveConcurrency`: AIMD like TCP. Starts at the configured concurrency; a 429 / 5xx /
  timeout / connection error halves it (down to 1), once per round: failures of calls that
  started before the last cut do not cut again; after `limit` successes in a row it grows by 1,
  back up to the configured value.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable


def estimate_tokens(messages: list[dict], max_tokens: int) -> int:
    """Tokens a call may use before it is made: prompt chars // 4 plus the output cap."""
    chars = sum(len(str(m.get("content", ""))) for m in messages)
    return chars // 4 + max_tokens


class _Bucket:
    def __init__(self, per_minute: float, clock: Callable[[], float]) -> None:
        self.rate = per_minute / 60.0  # units per second
        self.capacity = max(1.0, self.rate)  # one second's worth
        self.level = self.capacity
        self._clock = clock
        self._at = clock()

    def refill(self) -> None:
        now = self._clock()
        self.level = min(self.capacity, self.level + (now - self._at) * self.rate)
        self._at = now

    def wait_s(self, amount: float) -> float:
        """Seconds until `amount` (capped at the capacity) is available."""
        need = min(amount, self.capacity)
        return 0.0 if self.level >= need else (need - self.level) / self.rate


class RateLimiter:
    """requests/min and tokens/min caps (None: no cap) plus a shared Retry-After pause."""

    def __init__(
        self,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._requests = _Bucket(requests_per_minute, clock) if requests_per_minute else None
        self._tokens = _Bucket(tokens_per_minute, clock) if tokens_per_minute else None
        self._paused_until = 0.0
        self._lock = asyncio.Lock()

    def pause_for(self, seconds: float) -> None:
        """No new call starts for `seconds` (a 429's Retry-After applies to the whole teacher)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    async def wait_pause(self) -> None:
        while (left := self._paused_until - self._clock()) > 0:
            await asyncio.sleep(left)

    async def acquire(self, est_tokens: int) -> None:
        """Wait until one more call of about `est_tokens` tokens fits under every cap."""
        await self.wait_pause()
        if self._requests is None and self._tokens is None:
            return
        async with self._lock:  # FIFO: callers are served in arrival order
            buckets = [(b, n) for b, n in ((self._requests, 1.0), (self._tokens, float(est_tokens))) if b]
            while True:
                for bucket, _ in buckets:
                    bucket.refill()
                wait = max(bucket.wait_s(n) for bucket, n in buckets)
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
            for bucket, n in buckets:
                bucket.level -= n
        await self.wait_pause()

    def correct(self, est_tokens: int, actual_tokens: int) -> None:
        """Give back (or charge) the difference between the estimate and the real usage."""
        if self._tokens is not None:
            self._tokens.refill()
            self._tokens.level = min(self._tokens.capacity, self._tokens.level + est_tokens - actual_tokens)


class AdaptiveConcurrency:
    """An async semaphore whose size halves on overload and creeps back after successes."""

    def __init__(self, max_limit: int) -> None:
        if max_limit < 1:
            raise ValueError(f"concurrency must be >= 1, got {max_limit}")
        self.max_limit = max_limit
        self.limit = max_limit
        self.in_flight = 0
        self.cuts = 0  # how many times the limit was halved (a "round" counter)
        self._successes = 0
        self._waiters: deque[asyncio.Future] = deque()

    async def acquire(self) -> int:
        """Take a slot; returns the round it started in (pass it to release)."""
        if self.in_flight < self.limit and not self._waiters:
            self.in_flight += 1
            return self.cuts
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut  # release() hands the slot over: in_flight already counts it
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._free_slot()
            else:
                try:
                    self._waiters.remove(fut)
                except ValueError:
                    pass
            raise
        return self.cuts

    def release(self, round_started: int, overloaded: bool = False, succeeded: bool = False) -> None:
        """Free the slot; `overloaded` (429, 5xx, timeout, connection) halves the limit once per
        round, `succeeded` counts towards growing it back."""
        if overloaded:
            self._successes = 0
            if round_started == self.cuts and self.limit > 1:
                self.limit = max(1, self.limit // 2)
                self.cuts += 1
        elif succeeded:
            self._successes += 1
            if self._successes >= self.limit and self.limit < self.max_limit:
                self.limit += 1
                self._successes = 0
        self._free_slot()

    def _free_slot(self) -> None:
        self.in_flight -= 1
        while self._waiters and self.in_flight < self.limit:
            fut = self._waiters.popleft()
            if not fut.done():
                self.in_flight += 1
                fut.set_result(None)
