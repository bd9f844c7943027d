"""Pacing: the async transport's requests to one workspace, per endpoint, under the documented
limits and with jitter; a 429 holds the endpoint for its Retry-After. Pure, with an injectable
clock, apart from :meth:`Pacing.wait`."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

Clock = Callable[[], float]
Uniform = Callable[[float, float], float]

# Requests per second this process sends to one workspace, per endpoint: half the documented
# limit (Databricks resource limits page: runs/get 100/s, runs/submit 35/s, run-now 20/s), so two
# triggerers stay under it together. Endpoints the page does not list get DEFAULT_RATE.
CLIENT_RATES = {
    "jobs/runs/get": 50.0,
    "jobs/runs/get-output": 50.0,  # not on the page; read with each end like runs/get
    "jobs/runs/submit": 17.0,
    "jobs/run-now": 10.0,
    "jobs/create": 10.0,
    "jobs/runs/list": 15.0,  # not on the page either: half of the 30/s most unlisted APIs get
}
DEFAULT_RATE = 15.0


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
    reserve together. :meth:`hold` keeps every slot closed until a Retry-After has passed.
    """

    def __init__(
        self, per_second: float, burst: float | None = None, *,
        clock: Clock = time.monotonic, uniform: Uniform = random.uniform,
    ) -> None:
        if per_second <= 0:
            raise ValueError(f"per_second must be positive, got {per_second!r}")
        self.interval = 1.0 / per_second
        self.burst = max(1.0, per_second if burst is None else burst)
        self._clock = clock
        self._uniform = uniform
        self._free = clock() - self.burst * self.interval  # when the bucket would be full

    def reserve(self) -> float:
        """Seconds to wait before sending one request (0: send now)."""
        now = self._clock()
        self._free = max(self._free, now - self.burst * self.interval) + self.interval
        wait = self._free - now
        return 0.0 if wait <= 1e-9 else wait + self._uniform(0.0, self.interval)

    def hold(self, seconds: float) -> None:
        """No slot before ``seconds`` from now (a 429's Retry-After)."""
        self._free = max(self._free, self._clock() + seconds)


class Pacing:
    """One :class:`Pace` per (workspace, endpoint) in this process."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._paces: dict[tuple[str, str], Pace] = {}
        self._clock = clock

    def pace(self, base_url: str, path: str) -> Pace:
        endpoint = endpoint_of(path)
        pace = self._paces.get((base_url, endpoint))
        if pace is None:
            rate = CLIENT_RATES.get(endpoint, DEFAULT_RATE)
            pace = self._paces[(base_url, endpoint)] = Pace(rate, clock=self._clock)
        return pace

    async def wait(self, base_url: str, path: str) -> None:
        delay = self.pace(base_url, path).reserve()
        if delay > 0:
            await asyncio.sleep(delay)

    def throttled(self, base_url: str, path: str, retry_after: float | None) -> None:
        self.pace(base_url, path).hold(1.0 if retry_after is None else retry_after)


PACING = Pacing()
