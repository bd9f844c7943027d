"""Pacing: the async transport's requests to one workspace, per endpoint, under the documented
limits and with jitter. A process starts at most of a limit and halves its rate on a 429 (the
workspace's budget is shared with other triggerers or tools), holding the endpoint for the
Retry-After; after a long calm it creeps back up. Pure, with an injectable clock, apart from
:meth:`Pacing.wait`."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

Clock = Callable[[], float]
Uniform = Callable[[float, float], float]

# Per-workspace limits, requests per second (Databricks resource limits page: runs/get 100/s,
# runs/submit 35/s, run-now and jobs/create 20/s). runs/get-output is not on the page and is read
# with each end like runs/get; endpoints the page does not list are assumed at DEFAULT_LIMIT.
LIMITS = {
    "jobs/runs/get": 100.0,
    "jobs/runs/get-output": 100.0,
    "jobs/runs/submit": 35.0,
    "jobs/run-now": 20.0,
    "jobs/create": 20.0,
}
DEFAULT_LIMIT = 30.0
START_SHARE = 0.8  # a process starts at this share of a limit: a lone triggerer gets most of it


def endpoint_of(path: str) -> str:
    """The endpoint an API path belongs to: ``/api/2.2/jobs/runs/get`` -> ``jobs/runs/get``,
    ``/api/2.0/sql/statements/01ef.../result/chunks/1`` -> ``sql/statements``."""
    _, api, rest = path.partition("/api/")
    segments = rest.split("/")[1:] if api else [path]
    kept = []
    for segment in segments:
        if any(character.isdigit() for character in segment):
            break
        kept.append(segment)
    return "/".join(kept)


class Pace:
    """A token bucket that says how long to wait before the next request, never refusing one.

    Each request reserves the next free slot; a jitter of up to one slot spreads requests that
    reserve together. :meth:`throttled` (a 429) keeps every slot closed until the Retry-After has
    passed and halves the rate, once for the 429s of one moment, never below an eighth of the
    starting rate; each ``CALM`` seconds without a 429 give back a quarter more, up to the start.
    Several triggerers of one workspace so settle on shares of its limit within their first
    throttled seconds, and stay there while they are busy.
    """

    CALM = 900.0

    def __init__(
        self, per_second: float, burst: float | None = None, *,
        clock: Clock = time.monotonic, uniform: Uniform = random.uniform,
    ) -> None:
        if per_second <= 0:
            raise ValueError(f"per_second must be positive, got {per_second!r}")
        self.top = self.rate = per_second
        self._burst = burst
        self._clock = clock
        self._uniform = uniform
        self._free = clock() - self.burst * self.interval  # when the bucket would be full
        self._calm_since = clock()
        self._cut_until = clock()

    @property
    def interval(self) -> float:
        return 1.0 / self.rate

    @property
    def burst(self) -> float:
        return max(1.0, self.rate if self._burst is None else self._burst)

    def reserve(self) -> float:
        """Seconds to wait before sending one request (0: send now)."""
        now = self._clock()
        if self.rate < self.top and now - self._calm_since >= self.CALM:
            self.rate = min(self.top, self.rate * 1.25)
            self._calm_since = now
        self._free = max(self._free, now - self.burst * self.interval) + self.interval
        wait = self._free - now
        return 0.0 if wait <= 1e-9 else wait + self._uniform(0.0, self.interval)

    def throttled(self, retry_after: float) -> None:
        """A 429: no slot before ``retry_after`` seconds from now, and a slower rate after."""
        now = self._clock()
        if now >= self._cut_until:  # the other 429s of this moment answer requests sent at the old rate
            self.rate = max(self.rate / 2, self.top / 8)
            self._cut_until = now + max(retry_after, 1.0)
        self._calm_since = now
        self._free = max(self._free, now + retry_after)


class Pacing:
    """One :class:`Pace` per (workspace, endpoint) in this process."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._paces: dict[tuple[str, str], Pace] = {}
        self._clock = clock

    def pace(self, base_url: str, path: str) -> Pace:
        endpoint = endpoint_of(path)
        pace = self._paces.get((base_url, endpoint))
        if pace is None:
            rate = START_SHARE * LIMITS.get(endpoint, DEFAULT_LIMIT)
            pace = self._paces[(base_url, endpoint)] = Pace(rate, clock=self._clock)
        return pace

    async def wait(self, base_url: str, path: str) -> None:
        delay = self.pace(base_url, path).reserve()
        if delay > 0:
            await asyncio.sleep(delay)

    def throttled(self, base_url: str, path: str, retry_after: float | None) -> None:
        self.pace(base_url, path).throttled(1.0 if retry_after is None else retry_after)


PACING = Pacing()
