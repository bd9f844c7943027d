"""When to check a run next: the poll schedule, throttling and outage pauses, the deadline.

No I/O. The wait is a *plan*: a generator that yields effects (:class:`Sleep` here, HTTP
requests from ``_http``) and receives their results, so the worker's wait and the
triggerer's wait are this one loop, driven by requests or by aiohttp. The clock and the
jitter are injectable, so the schedule is tested without sleeping.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Generator
from typing import Any, NamedTuple, Protocol, TypeVar

from airflow_dbx.errors import DatabricksApiError

T = TypeVar("T")
# A generator of effects whose return value is the result; a driver performs the effects.
Plan = Generator[Any, Any, T]
Clock = Callable[[], float]
Uniform = Callable[[float, float], float]

log = logging.getLogger(__name__)


class Sleep(NamedTuple):
    """An effect: pause this many seconds."""

    seconds: float


class Outage:
    """Keeps a wait going through checks that failed for a passing reason.

    A check that still fails after the hook's retries (the workspace throttling many
    waiters, a 5xx spell, no answer) says nothing about the run, so the wait goes on after a
    jittered pause that doubles with each failure in a row. Only an outage longer than
    ``limit`` seconds, or an error that retrying cannot mend (401, 404, ...), ends the wait.
    """

    def __init__(
        self, limit: float = 600.0, cap: float = 60.0, *, clock: Clock = time.time, uniform: Uniform = random.uniform
    ) -> None:
        self.limit = limit
        self.cap = cap
        self.failures = 0
        self._since: float | None = None
        self._clock = clock
        self._uniform = uniform

    def failed(self, exc: DatabricksApiError) -> float:
        """Seconds to pause before the next check; re-raises ``exc`` when the wait must end."""
        now = self._clock()
        if not exc.retryable:
            raise exc
        self._since = now if self._since is None else self._since
        if now - self._since > self.limit:
            raise exc
        self.failures += 1
        return min(self.cap, 2.0 ** (self.failures - 1)) * self._uniform(1.0, 2.0)

    def ended(self) -> None:
        self._since, self.failures = None, 0


class Watcher:
    """The schedule of status checks of one run.

    The first check comes a second in (a run that fails at once is reported at once); then
    each pause is ``GROWTH`` times the time waited so far, never under ``FLOOR`` nor over
    ``period``, with +-10% jitter so thousands of waiters do not poll in lockstep: a run is
    seen to end within about a seventh of its length, and a long run costs few requests.
    While the workspace throttles, pauses stretch (up to ``MAX_STRETCH`` times) and ease back
    after: Retry-After alone keeps a thousand waiters above a workspace's rate limit; waiters
    that also poll less often let the rate settle under it. ``waited`` resumes a wait that
    began earlier (a rebuilt trigger); ``deadline`` (epoch seconds) bounds it.
    """

    FIRST = 1.0
    FLOOR = 2.0
    GROWTH = 0.15
    MAX_STRETCH = 8.0

    def __init__(
        self,
        period: float,
        *,
        waited: float = 0.0,
        deadline: float | None = None,
        clock: Clock = time.time,
        uniform: Uniform = random.uniform,
    ) -> None:
        self.period = period
        self.deadline = deadline
        self.outage = Outage(clock=clock, uniform=uniform)
        self._clock = clock
        self._uniform = uniform
        self._since = clock() - max(waited, 0.0)
        self._stretch = 1.0
        self._next = self._jitter(min(self.FIRST, period) if waited <= 0 else self._regular())

    def pause(self) -> float | None:
        """Seconds to wait before the next check; None once the deadline has passed."""
        if self.deadline is None:
            return self._next
        remaining = self.deadline - self._clock()
        return None if remaining <= 0 else min(self._next, remaining)

    def answered(self, *, throttled: bool) -> None:
        """A check got the run's state; ``throttled``: some attempt of it was answered 429."""
        self.outage.ended()
        if throttled:
            self._stretch = min(self._stretch * 2.0, self.MAX_STRETCH)
        else:
            self._stretch = max(self._stretch * 0.95, 1.0)
        self._next = self._jitter(self._regular()) * self._stretch

    def failed(self, exc: DatabricksApiError) -> None:
        """A check failed after its retries; re-raises ``exc`` when the wait must end."""
        self._next = self.outage.failed(exc)

    def _regular(self) -> float:
        return min(max(self.GROWTH * (self._clock() - self._since), self.FLOOR), self.period)

    def _jitter(self, delay: float) -> float:
        return delay * self._uniform(0.9, 1.1)


class _State(Protocol):
    @property
    def outcome(self) -> str | None: ...

    @property
    def is_terminal(self) -> bool: ...


class Watched(Protocol):
    """What a wait watches: a run or a SQL statement, whose ``state`` says where it is."""

    @property
    def state(self) -> _State: ...


W = TypeVar("W", bound=Watched)
# A status check: the run (or statement), and whether the workspace throttled any attempt of it.
Check = Callable[[], "Plan[tuple[W, bool]]"]


def watch(run_id: int | str, check: Check[W], watcher: Watcher, what: str = "run") -> Plan[W | None]:
    """Check run ``run_id`` on ``watcher``'s schedule until it ends (the run) or the deadline passes (None)."""
    outcome = None
    while (pause := watcher.pause()) is not None:
        yield Sleep(pause)
        try:
            run, throttled = yield from check()
        except DatabricksApiError as exc:
            watcher.failed(exc)
            # A throttled workspace is routine with many waiters; say so loudly only when it lasts.
            level = logging.WARNING if watcher.outage.failures >= 3 else logging.INFO
            pause = watcher.pause() or 0.0
            log.log(level, "Could not check Databricks %s %s (%s); next check in %.0fs", what, run_id, exc, pause)
            continue
        watcher.answered(throttled=throttled)
        if run.state.outcome != outcome:
            outcome = run.state.outcome
            log.info("Databricks %s %s is %s", what, run_id, outcome)
        if run.state.is_terminal:
            return run
    return None


def patiently(call: Callable[[], Plan[T]], outage: Outage | None = None) -> Plan[T]:
    """``call()``'s plan, made again after an :class:`Outage` pause while it fails for a passing reason."""
    outage = outage or Outage()
    while True:
        try:
            return (yield from call())
        except DatabricksApiError as exc:
            yield Sleep(outage.failed(exc))
