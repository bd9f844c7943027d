"""Waiting at workspace scale: one watcher per workspace for every run a triggerer waits on.

Polling each run on its own costs one ``runs/get`` per run and period, and thousands of
deferred runs exceed a workspace's documented limit of 100 ``runs/get`` per second. Here the
triggers of one process and connection register their runs with one shared watcher that
reads ``jobs/runs/list?active_only=true`` (25 runs a page), so the cost follows the number of
active runs in pages, not in requests per run. A registered run missing from a sweep is only
a *candidate* end: one ``runs/get`` confirms it before its trigger fires, so the event still
carries the full run. When the workspace holds far more active runs than this process waits
on, a sweep would cost more than per-run polling, and the triggers poll their runs themselves.

Every request of the async transport is also paced per workspace and endpoint
(``_http/pacing.py``). :class:`Sweep`, the pure part, takes an injectable clock.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from airflow_dbx.errors import DatabricksApiError
from airflow_dbx.waiting import Outage, Watcher

if TYPE_CHECKING:
    from airflow_dbx.hook import DatabricksHook
    from airflow_dbx.models import Run

Clock = Callable[[], float]
Uniform = Callable[[float, float], float]
# Runs started from .. to (ms, inclusive), as runs/list's start_time_from/start_time_to filter them.
Window = tuple[int | None, int | None]
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
        self.periods: dict[int, float] = {}
        self.since: dict[int, float] = {}  # run id -> when its wait began (epoch seconds)
        self.alone: dict[int, float] = {}  # runs of this process polled one by one, and their periods
        self.started: dict[int, int] = {}  # run id -> start_time (ms), as listed
        self.pages = 1
        self._members: set[int] = set()
        self._seen: set[int] = set()
        self._proposed: set[int] = set()
        self._spans: dict[Window, tuple[int, int] | None] = {}
        self._read = 0

    def add(self, run_id: int, period: float, since: float | None = None) -> None:
        self.periods[run_id] = max(period, 0.001)
        self.since[run_id] = self._clock() if since is None else since

    def remove(self, run_id: int) -> None:
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
        return self.pages <= 1 or self.worth_it()

    def interval(self) -> float:
        """Seconds between sweep starts, for the pages the last sweep read: a share of what
        watching each run would cost, so sweeps come often while the runs are young."""
        rate = self._watching_rate()
        if rate <= 0:
            return self.SLOWEST
        return min(max(self.SHARE * self.pages / rate, self.FASTEST), self.SLOWEST)

    def windows(self, count: int) -> list[Window]:
        """Up to ``count`` start-time windows (ms, inclusive) that together hold every registered
        run, to list side by side; one window of everything while a start time is unknown, and no
        more windows than the last sweep read pages (each window costs a page at least)."""
        starts = sorted(self.started[r] for r in self.periods if r in self.started)
        count = min(count, self.pages)
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
        self._seen, self._proposed, self._read = set(), set(), 0
        self._spans = dict.fromkeys(windows)

    def page(self, runs: list[dict[str, Any]], window: Window = WHOLE) -> list[int]:
        """Take one page of active runs in ``window``; the registered runs it shows ended (candidates)."""
        if window not in self._spans:  # a page of a sweep that is over
            return []
        self._read += 1
        span = self._spans[window]
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
        low, high = span
        return self._propose(r for r in self._members if low < self.started.get(r, low) < high)

    def finish_window(self, window: Window = WHOLE) -> list[int]:
        """Every page of ``window`` was read: each registered run in it that was not listed is a candidate."""
        if window not in self._spans:
            return []
        low, high = window
        if low is None or high is None:
            return self._propose(self._members)
        return self._propose(r for r in self._members if low <= self.started.get(r, low - 1) <= high)

    def finish(self) -> list[int]:
        """The sweep read its last page: every registered run it did not list is a candidate."""
        self.pages = max(self._read, 1)
        return [r for window in list(self._spans) for r in self.finish_window(window)]

    def _propose(self, runs: Iterable[int]) -> list[int]:
        fresh = [r for r in runs if r not in self._seen and r not in self._proposed and r in self.periods]
        self._proposed.update(fresh)
        return fresh


class _PollYourself:
    """A waiter's answer when the shared watcher stops: the trigger polls its run itself."""


POLL_YOURSELF = _PollYourself()
MAX_PAGES = 400  # 10,000 active runs: beyond any workspace's concurrency limit


class SharedWatcher:
    """The sweeps of one connection in one event loop, and the triggers waiting on them."""

    WINDOWS = 4  # listings side by side: a page's answer time does not add up over a sweep

    def __init__(self, hook: DatabricksHook) -> None:
        self.hook = hook
        self.sweep = Sweep()
        self.waiters: dict[int, list[asyncio.Future[Any]]] = {}
        self.task: asyncio.Task[None] | None = None
        self.confirming: dict[int, asyncio.Task[None]] = {}
        self.crowded_until = 0.0
        self.sweeping = asyncio.Event()  # set while sweeps run: runs polled alone may join them

    @property
    def crowded(self) -> bool:
        return time.monotonic() < self.crowded_until

    def join(self, run_id: int, period: float, since: float | None = None) -> asyncio.Future[Any] | None:
        """A future for the end of ``run_id``, waited on since ``since`` (epoch seconds; None: now);
        None: poll it yourself, it is cheaper."""
        self.sweep.alone.pop(run_id, None)
        self.sweep.add(run_id, period, since)
        sweeping = self.task is not None and not self.task.done()
        if self.crowded or not (sweeping or self.sweep.worth_it(pages=1)):
            # A crowded workspace, or too few waiters yet for a page every few seconds (once
            # sweeps run, one more run on their pages costs nothing).
            self.sweep.remove(run_id)
            self.sweep.alone[run_id] = period
            return None
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiters.setdefault(run_id, []).append(future)
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._run())
            self.sweeping.set()
        return future

    async def poll_alone(self, run_id: int, period: float, alone: Callable[[], Awaitable[Run | None]], *,
                         until_sweeping: bool = False) -> Run | _PollYourself | None:
        """``alone()``: the run polled by itself. ``until_sweeping``: only until sweeps begin
        (then POLL_YOURSELF is turned round: join them), unless the workspace is crowded."""
        self.sweep.alone[run_id] = period
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
            self.sweep.alone.pop(run_id, None)

    def leave(self, run_id: int, future: asyncio.Future[Any]) -> None:
        self._release(run_id, future)
        if not future.done():
            future.cancel()

    def _release(self, run_id: int, future: asyncio.Future[Any]) -> None:
        futures = self.waiters.get(run_id, [])
        if future in futures:
            futures.remove(future)
        if not futures:
            self.waiters.pop(run_id, None)
            self.sweep.remove(run_id)

    def _resolve(self, run_id: int, *, result: Any = None, error: BaseException | None = None) -> None:
        for future in self.waiters.pop(run_id, []):
            if future.done():
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)
        self.sweep.remove(run_id)

    async def _run(self) -> None:
        outage = Outage()
        try:
            await self._sweep_until_done(outage)
        finally:
            self.sweeping.clear()

    async def _sweep_until_done(self, outage: Outage) -> None:
        try:
            while self.waiters:
                began = time.monotonic()
                try:
                    await self._sweep_once()
                except DatabricksApiError as exc:
                    pause = outage.failed(exc)  # raises once the outage lasts too long
                    log.info("Could not list the workspace's active runs (%s); next sweep in %.0fs", exc, pause)
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
            log.warning("Stopped sweeping the workspace's active runs (%s); each run is polled by itself", exc)
            self._hand_back(60.0)

    def _stop_sweeping(self) -> None:
        crowded = self.sweep.worth_it(pages=1)  # one page would do: the workspace's other runs are the cost
        if crowded:
            log.info("The workspace lists %d pages of active runs for %d runs waited on here; polling each run",
                     self.sweep.pages, len(self.waiters))
        self._hand_back(600.0 if crowded else 0.0)

    def _hand_back(self, seconds: float) -> None:
        """Every waiter polls its run itself, and so do new ones for ``seconds``."""
        self.crowded_until = time.monotonic() + seconds
        for run_id in list(self.waiters):
            if run_id not in self.confirming:  # else its confirmation answers it, one way or the other
                self._resolve(run_id, result=POLL_YOURSELF)

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

    def _confirm_all(self, run_ids: list[int]) -> None:
        for run_id in run_ids:
            if run_id not in self.confirming:
                task = self.confirming[run_id] = asyncio.ensure_future(self._confirm(run_id))
                task.add_done_callback(lambda _, run_id=run_id: self.confirming.pop(run_id, None))  # type: ignore[misc]

    async def _confirm(self, run_id: int) -> None:
        """One ``runs/get``: the run's end, with everything the event reports."""
        run: Run | None = None
        try:
            run = await self.hook.a_get_run(run_id)
        except DatabricksApiError as exc:
            if not exc.retryable:
                self._resolve(run_id, error=exc)
                return
        if run is not None and run.state.is_terminal:
            self._resolve(run_id, result=run)
        elif self.task is None or self.task.done():  # no sweep proposes it again
            self._resolve(run_id, result=POLL_YOURSELF)


_WATCHERS: dict[tuple[asyncio.AbstractEventLoop, str], SharedWatcher] = {}


def watcher_for(hook: DatabricksHook) -> SharedWatcher:
    """The shared watcher of the running loop for ``hook``'s connection."""
    loop = asyncio.get_running_loop()
    for key in [key for key in _WATCHERS if key[0].is_closed()]:
        del _WATCHERS[key]
    key = (loop, hook.databricks_conn_id)
    watcher = _WATCHERS.get(key)
    if watcher is None:
        watcher = _WATCHERS[key] = SharedWatcher(hook)
    return watcher


async def wait_shared(
    hook: DatabricksHook,
    run_id: int,
    period: float,
    deadline: float | None,
    alone: Callable[[], Awaitable[Run | None]],
    *,
    since: float | None = None,
) -> Run | None:
    """Wait for ``run_id`` to end with the connection's other waiters in this process, or with
    ``alone()`` (polling the run by itself) when that is cheaper: the run, confirmed with
    ``runs/get``, or None once ``deadline`` passed. ``since``: when the wait began (epoch seconds)."""
    watcher = watcher_for(hook)
    future = watcher.join(run_id, period, since)
    if future is None:  # too few waiters yet: poll alone until enough join to sweep
        polled = await watcher.poll_alone(run_id, period, alone, until_sweeping=True)
        if polled is not POLL_YOURSELF:
            return polled  # type: ignore[return-value]
        future = watcher.join(run_id, period, since)
    if future is not None:
        timeout = None if deadline is None else max(0.0, deadline - time.time())
        try:
            result = await asyncio.wait_for(asyncio.shield(future), timeout)
        except asyncio.TimeoutError:
            return None
        finally:
            watcher.leave(run_id, future)
        if result is not POLL_YOURSELF:
            return result  # type: ignore[no-any-return]
    return await watcher.poll_alone(run_id, period, alone)  # type: ignore[return-value]
