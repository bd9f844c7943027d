"""Waiting at workspace scale: one watcher per workspace for every run a triggerer waits on.

Polling each run on its own costs one ``runs/get`` per run and period, and thousands of
deferred runs exceed a workspace's documented limit of 100 ``runs/get`` per second. Here the
triggers of one process and connection register their runs with one shared watcher that
reads ``jobs/runs/list?active_only=true`` (25 runs a page), so the cost follows the number of
active runs in pages, not in requests per run. A registered run missing from a sweep is only
a *candidate* end: one ``runs/get`` confirms it before its trigger fires, so the event still
carries the full run. When the workspace holds far more active runs than this process waits
on, a sweep would cost more than per-run polling, and the triggers poll their runs themselves.
SQL statement triggers share the same way (:class:`StatementWatcher`), reading their
statements' states from the query history, a hundred a request.

Every request of the async transport is also paced per workspace and endpoint
(``_http/pacing.py``). :class:`Sweep`, the pure part, takes an injectable clock. The whole
design is kept in this one module (under 500 lines) so that it reads in one place.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from airflow_dbx.errors import DatabricksApiError
from airflow_dbx.hook import RUNS_LIST_PAGE
from airflow_dbx.waiting import Outage, Watcher

if TYPE_CHECKING:
    from airflow_dbx.models import Run

Clock = Callable[[], float]
Uniform = Callable[[float, float], float]
# Runs started from .. to (ms, inclusive), as runs/list's start_time_from/start_time_to filter them.
Window = tuple[int | None, int | None]
Key = Any  # what a waiter waits on: a run id (int) or a statement id (str)
WHOLE: Window = (None, None)

log = logging.getLogger(__name__)

class Sweep:
    """Which registered runs a sweep of the active-runs list shows ended, and when to sweep.

    ``runs/list`` pages go newest first. A registered run whose start time (learnt from an
    earlier sweep) lies strictly inside the start times the pages read so far cover, yet was
    not listed, is a candidate end at once; the others at the end of the sweep. A run that
    only moved between pages while they were read comes back as a candidate too: the
    confirming ``runs/get`` sorts it out.
    """

    FASTEST = 2.0  # seconds between sweep starts, at least ...
    SLOWEST = 6.0  # ... and at most
    SHARE = 5.0  # a sweep costs at most 1/SHARE of polling each run on its own schedule ...
    CROWDED = 1.0  # ... and the sweep at SLOWEST at most this share of polling at the period, else per-run polling

    def __init__(self, clock: Clock = time.time) -> None:
        self._clock = clock
        self.periods: dict[Key, float] = {}
        self.since: dict[Key, float] = {}  # run id -> when its wait began (epoch seconds)
        self.alone: dict[Key, float] = {}  # runs of this process polled one by one, and their periods
        self.started: dict[int, int] = {}  # run id -> start_time (ms), as listed
        self.pages = 1  # requests the last sweep took
        self.needed = 1  # pages one listing of what it saw would take
        self._members: set[int] = set()
        self._seen: set[int] = set()
        self._proposed: set[int] = set()
        self._spans: dict[Window, tuple[int, int] | None] = {}
        self._by_start: list[tuple[int, int]] = []  # (start_time, run id) of the members, by start
        self._read = 0

    def add(self, run_id: Key, period: float, since: float | None = None) -> None:
        self.periods[run_id] = max(period, 0.001)
        self.since[run_id] = self._clock() if since is None else since

    def remove(self, run_id: Key) -> None:
        self.periods.pop(run_id, None)
        self.since.pop(run_id, None)
        self.started.pop(run_id, None)

    def _polling_rate(self) -> float:
        """Requests per second polling every registered run at its own period would cost."""
        return sum(1.0 / period for period in (*self.periods.values(), *self.alone.values()))

    def _watching_rate(self) -> float:
        """Requests per second the registered runs would cost on a :class:`Watcher`'s schedule,
        which checks a young run often (most runs end young) and an old one once a period."""
        now = self._clock()
        return sum(
            1.0 / min(max(Watcher.GROWTH * (now - self.since[run_id]), Watcher.FLOOR), period)
            for run_id, period in self.periods.items()
        ) + sum(1.0 / period for period in self.alone.values())

    def worth_it(self, runs: int | None = None, pages: int | None = None) -> bool:
        """Whether sweeping ``pages`` pages every SLOWEST seconds costs less than per-run polling."""
        rate = self._polling_rate() if runs is None else runs / 30.0
        return (self.pages if pages is None else pages) / self.SLOWEST <= self.CROWDED * rate + 1e-9

    def keeps_going(self) -> bool:
        """After a sweep: whether to sweep again. While it pays, and also while one page holds
        every active run: the last runs of a batch cost a page every SLOWEST seconds at most, and
        handed back to per-run polling their ends would be seen up to a period late."""
        return self.needed <= 1 or self.worth_it(pages=self.needed)

    def interval(self) -> float:
        """Seconds between sweep starts, for the pages the last sweep read: a share of what
        watching each run would cost, so sweeps come often while the runs are young."""
        rate = self._watching_rate()
        if rate <= 0:
            return self.SLOWEST
        fastest = min([self.FASTEST, *self.periods.values()])  # a waiter asking for 1 s polling gets 1 s sweeps
        return min(max(self.SHARE * self.pages / rate, fastest), self.SLOWEST)

    def windows(self, count: int) -> list[Window]:
        """Up to ``count`` start-time windows (ms, inclusive) that together hold every registered
        run, to list side by side; one window of everything while a start time is unknown, and
        no more windows than half the pages a whole listing takes (each window costs a page at
        least, so a few pages are read in one)."""
        starts = sorted(self.started[r] for r in self.periods if r in self.started)
        count = min(count, self.needed // 2)
        if not starts or len(starts) < len(self.periods) or count <= 1:
            return [WHOLE]
        size = math.ceil(len(starts) / count)
        windows: list[Window] = []
        first = 0
        while first < len(starts):
            last = min(first + size, len(starts)) - 1
            while last + 1 < len(starts) and starts[last + 1] == starts[last]:
                last += 1
            windows.append((starts[first], starts[last]))
            first = last + 1
        return windows

    def begin(self, windows: Iterable[Window] = (WHOLE,)) -> None:
        self._members = set(self.periods)
        # The members whose start time is known, by start time: a page looks up only those its
        # runs newly cover, so a sweep costs O(pages x log members), not O(pages x members).
        self._by_start = sorted((self.started[r], r) for r in self._members if r in self.started)
        self._seen, self._proposed, self._read = set(), set(), 0
        self._spans = dict.fromkeys(windows)

    def page(self, runs: list[dict[str, Any]], window: Window = WHOLE) -> list[int]:
        """Take one page of active runs in ``window``; the registered runs it shows ended (candidates)."""
        if window not in self._spans:  # a page of a sweep that is over
            return []
        self._read += 1
        before = span = self._spans[window]
        for run in runs:
            run_id, start = run.get("run_id"), run.get("start_time")
            if not isinstance(run_id, int):
                continue
            self._seen.add(run_id)
            if isinstance(start, int):
                if run_id in self.periods:
                    self.started[run_id] = start
                low, high = span or (start, start)
                span = (min(low, start), max(high, start))
        self._spans[window] = span
        if span is None:
            return []
        return self._propose(self._newly_inside(before, span))

    def _newly_inside(self, before: tuple[int, int] | None, after: tuple[int, int]) -> list[int]:
        """Members whose start lies strictly inside ``after`` and not strictly inside ``before``."""
        low, high = after
        first, end = self._index_after(low), self._index_of(high)
        if before is None:
            return [r for _, r in self._by_start[first:end]]
        old_low, old_high = before
        below = min(self._index_after(old_low), end)  # the new part under the old span ...
        above = max(self._index_of(old_high), below, first)  # ... and over it
        return [r for _, r in (*self._by_start[first:below], *self._by_start[above:end])]

    def finish_window(self, window: Window = WHOLE) -> list[int]:
        """Every page of ``window`` was read: each registered run in it that was not listed is a candidate."""
        if window not in self._spans:
            return []
        low, high = window
        if low is None or high is None:
            return self._propose(self._members)
        return self._propose(r for _, r in self._by_start[self._index_of(low):self._index_after(high)])

    def _index_of(self, start: int) -> int:
        """The first member (by start time) that started at ``start`` or later."""
        return bisect.bisect_left(self._by_start, start, key=itemgetter(0))

    def _index_after(self, start: int) -> int:
        """The first member (by start time) that started after ``start``."""
        return bisect.bisect_right(self._by_start, start, key=itemgetter(0))

    def finish(self) -> list[int]:
        """The sweep read its last page: every registered run it did not list is a candidate."""
        self.pages = max(self._read, 1)
        self.needed = max(1, math.ceil(len(self._seen) / RUNS_LIST_PAGE))
        return [r for window in list(self._spans) for r in self.finish_window(window)]

    def _propose(self, runs: Iterable[int]) -> list[int]:
        fresh = [r for r in runs if r not in self._seen and r not in self._proposed and r in self.periods]
        self._proposed.update(fresh)
        return fresh


class _PollYourself:
    """A waiter's answer when the shared watcher stops: the trigger polls by itself."""


POLL_YOURSELF = _PollYourself()
MAX_PAGES = 400  # 10,000 active runs: beyond any workspace's concurrency limit
HISTORY_BATCH = 100  # statement ids per query history request: the URL stays a few kB
HISTORY_GRACE = 60.0  # seconds a statement may be missing from the history before it is polled alone
ENDED_IN_HISTORY = frozenset({"FINISHED", "FAILED", "CANCELED"})


class _Shared:
    """What sharing is, apart from how a sweep reads the workspace: the waiters of one
    connection in one event loop, the sweeps that run while they wait, the confirmation of each
    end, and the hand-back to per-run polling. Subclasses read the workspace (``_sweep_once``)
    and one waited-on thing (``_read``)."""

    what = "active runs"  # what a sweep reads, for the log

    def __init__(self, hook: Any) -> None:
        self.hook = hook
        self.sweep = Sweep()
        self.waiters: dict[Key, list[asyncio.Future[Any]]] = {}
        self.task: asyncio.Task[None] | None = None
        self.confirming: dict[Key, asyncio.Task[None]] = {}
        self.crowded_until = 0.0
        self.sweeping = asyncio.Event()  # set while sweeps run: waiters polling alone may join them

    @property
    def crowded(self) -> bool:
        return time.monotonic() < self.crowded_until

    def join(self, key: Key, period: float, since: float | None = None) -> asyncio.Future[Any] | None:
        """A future for the end of ``key``, waited on since ``since`` (epoch seconds; None: now);
        None: poll it yourself, it is cheaper."""
        self.sweep.alone.pop(key, None)
        self.sweep.add(key, period, since)
        sweeping = self.task is not None and not self.task.done()
        if self.crowded or not (sweeping or self.sweep.worth_it(pages=1)):
            # A crowded workspace, or too few waiters yet for a request every few seconds (once
            # sweeps run, one more waiter costs nothing).
            self.sweep.remove(key)
            self.sweep.alone[key] = period
            return None
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiters.setdefault(key, []).append(future)
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._run())
            self.sweeping.set()
        return future

    async def poll_alone(self, key: Key, period: float, alone: Callable[[], Awaitable[Any]], *,
                         until_sweeping: bool = False) -> Any:
        """``alone()``: polling by itself. ``until_sweeping``: only until sweeps begin (then
        POLL_YOURSELF is turned round: join them), unless the workspace is crowded."""
        self.sweep.alone[key] = period
        polling = asyncio.ensure_future(alone())
        try:
            if until_sweeping and not self.crowded:
                begun = asyncio.ensure_future(self.sweeping.wait())
                try:
                    await asyncio.wait({polling, begun}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    begun.cancel()
                if not polling.done():
                    return POLL_YOURSELF
            return await polling
        finally:
            polling.cancel()  # a poll in flight when sweeps began, or the waiter was cancelled
            self.sweep.alone.pop(key, None)

    def leave(self, key: Key, future: asyncio.Future[Any]) -> None:
        futures = self.waiters.get(key, [])
        if future in futures:
            futures.remove(future)
        if not futures:
            self.waiters.pop(key, None)
            self.sweep.remove(key)
        if not future.done():
            future.cancel()

    def _resolve(self, key: Key, *, result: Any = None, error: BaseException | None = None) -> None:
        for future in self.waiters.pop(key, []):
            if future.done():
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)
        self.sweep.remove(key)

    async def _run(self) -> None:
        outage = Outage()
        try:
            while self.waiters:
                began = time.monotonic()
                try:
                    await self._sweep_once()
                except DatabricksApiError as exc:
                    pause = outage.failed(exc)  # raises once the outage lasts too long
                    log.info("A sweep of the workspace's %s failed (%s); next one in %.0fs", self.what, exc, pause)
                    await asyncio.sleep(pause)
                    continue
                outage.ended()
                if not self.sweep.keeps_going():
                    self._stop_sweeping()
                    return
                await asyncio.sleep(max(0.0, self.sweep.interval() - (time.monotonic() - began)))
        except asyncio.CancelledError:
            self._hand_back(0.0)
            raise
        except Exception as exc:  # every waiter goes on by itself; none is left hanging
            log.warning("Stopped sweeping the workspace's %s (%s); each is polled by itself", self.what, exc)
            self._hand_back(60.0)
        finally:
            self.sweeping.clear()

    def _stop_sweeping(self) -> None:
        crowded = self.sweep.worth_it(pages=1)  # one request would do: the workspace's others are the cost
        if crowded:
            log.info("A sweep takes %d requests for %d %s waited on here; polling each by itself",
                     self.sweep.pages, len(self.waiters), self.what)
        self._hand_back(600.0 if crowded else 0.0)

    def _hand_back(self, seconds: float) -> None:
        """Every waiter polls by itself, and so do new ones for ``seconds``."""
        self.crowded_until = time.monotonic() + seconds
        for key in list(self.waiters):
            if key not in self.confirming:  # else its confirmation answers it, one way or the other
                self._resolve(key, result=POLL_YOURSELF)

    async def _sweep_once(self) -> None:
        raise NotImplementedError

    async def _read(self, key: Key) -> tuple[Any, bool]:
        """One waited-on thing as the API shows it, and whether it ended."""
        raise NotImplementedError

    def _confirm_all(self, keys: Iterable[Key]) -> None:
        for key in keys:
            if key not in self.confirming:
                task = self.confirming[key] = asyncio.ensure_future(self._confirm(key))
                task.add_done_callback(lambda _, key=key: self.confirming.pop(key, None))  # type: ignore[misc]

    async def _confirm(self, key: Key) -> None:
        """One read of a candidate end, so the event carries everything the API says of it."""
        found: Any = None
        ended = False
        try:
            found, ended = await self._read(key)
        except DatabricksApiError as exc:
            if not exc.retryable:
                self._resolve(key, error=exc)
                return
        if ended:
            self._resolve(key, result=found)
        elif self.task is None or self.task.done():  # no sweep proposes it again
            self._resolve(key, result=POLL_YOURSELF)


class SharedWatcher(_Shared):
    """Runs: sweeps of the workspace's active-runs list, each end confirmed with ``runs/get``."""

    WINDOWS = 4  # listings side by side: a page's answer time does not add up over a sweep

    async def _sweep_once(self) -> None:
        """Read every page of active runs, a few start-time windows side by side; confirm each
        candidate end meanwhile, without waiting for it."""
        windows = self.sweep.windows(self.WINDOWS)
        self.sweep.begin(windows)
        listings = [asyncio.ensure_future(self._list(window)) for window in windows]
        try:
            await asyncio.gather(*listings)
        finally:
            for listing in listings:
                listing.cancel()
        self._confirm_all(self.sweep.finish())

    async def _list(self, window: Window) -> None:
        token: str | None = None
        for _ in range(MAX_PAGES):
            runs, token = await self.hook.a_active_runs_page(token, *window)
            self._confirm_all(self.sweep.page(runs, window))
            if not token:
                break
        self._confirm_all(self.sweep.finish_window(window))

    async def _read(self, key: Key) -> tuple[Run, bool]:
        run: Run = await self.hook.a_get_run(key)
        return run, run.state.is_terminal


class StatementWatcher(_Shared):
    """SQL statements: their statuses read from the query history, a hundred statements a
    request; each end confirmed by reading the statement. A statement the history has not shown
    for HISTORY_GRACE seconds (the history lags, or hides others' statements) is polled alone."""

    what = "SQL statements"

    def __init__(self, hook: Any) -> None:
        super().__init__(hook)
        self.last_listed: dict[Key, float] = {}

    async def _sweep_once(self) -> None:
        ids = sorted(self.waiters, key=str)
        batches = [ids[first:first + HISTORY_BATCH] for first in range(0, len(ids), HISTORY_BATCH)]
        self.sweep.pages = self.sweep.needed = max(len(batches), 1)
        now = time.monotonic()
        for batch in batches:
            statuses = await self.hook.a_statement_statuses([str(key) for key in batch])
            for key in batch:
                self.last_listed.setdefault(key, now)
                if key in statuses:
                    self.last_listed[key] = now
            self._confirm_all(key for key in batch if statuses.get(str(key)) in ENDED_IN_HISTORY)
        for key in [key for key in self.last_listed if key not in self.waiters]:
            del self.last_listed[key]
        for key, listed in list(self.last_listed.items()):
            if now - listed > HISTORY_GRACE and key not in self.confirming:
                self._resolve(key, result=POLL_YOURSELF)

    async def _read(self, key: Key) -> tuple[Any, bool]:
        statement = await self.hook.a_get_statement(str(key))
        return statement, statement.state.is_terminal


_WATCHERS: dict[tuple[asyncio.AbstractEventLoop, str, type[_Shared]], _Shared] = {}


def watcher_for(hook: Any, kind: type[_Shared] = SharedWatcher) -> Any:
    """The shared watcher of ``kind`` in the running loop for ``hook``'s connection."""
    loop = asyncio.get_running_loop()
    for key in [key for key in _WATCHERS if key[0].is_closed()]:
        del _WATCHERS[key]
    key = (loop, hook.databricks_conn_id, kind)
    watcher = _WATCHERS.get(key)
    if watcher is None:
        watcher = _WATCHERS[key] = kind(hook)
    return watcher


async def wait_shared(
    hook: Any,
    key: Key,
    period: float,
    deadline: float | None,
    alone: Callable[[], Awaitable[Any]],
    *,
    since: float | None = None,
    kind: type[_Shared] = SharedWatcher,
) -> Any:
    """Wait for ``key`` (a run id, or with ``kind=StatementWatcher`` a statement id) to end with
    the connection's other waiters in this process, or with ``alone()`` (polling by itself) when
    that is cheaper: what the confirming read returned, or None once ``deadline`` passed.
    ``since``: when the wait began (epoch seconds)."""
    watcher = watcher_for(hook, kind)
    future = watcher.join(key, period, since)
    if future is None:  # too few waiters yet: poll alone until enough join to sweep
        polled = await watcher.poll_alone(key, period, alone, until_sweeping=True)
        if polled is not POLL_YOURSELF:
            return polled
        future = watcher.join(key, period, since)
    if future is not None:
        timeout = None if deadline is None else max(0.0, deadline - time.time())
        try:
            result = await asyncio.wait_for(asyncio.shield(future), timeout)
        except asyncio.TimeoutError:
            return None
        finally:
            watcher.leave(key, future)
        if result is not POLL_YOURSELF:
            return result
    return await watcher.poll_alone(key, period, alone)
