"""The pure parts of the shared watcher: pacing, sweep scheduling, which runs a sweep shows ended."""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING, Any

import pytest

from airflow_dbx import sharing
from airflow_dbx._http.pacing import DEFAULT_LIMIT, LIMITS, START_SHARE, Pace, Pacing, endpoint_of
from airflow_dbx.models import Run
from airflow_dbx.sharing import StatementWatcher, Sweep, wait_shared, watcher_for
from airflow_dbx.sql_models import Statement

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def no_jitter(low: float, high: float) -> float:
    return low


def test_a_pace_lets_a_burst_through_then_spaces_requests() -> None:
    clock = FakeClock()
    pace = Pace(10.0, burst=3, clock=clock, uniform=no_jitter)
    assert [pace.reserve() for _ in range(3)] == [0.0, 0.0, 0.0]
    waits = [pace.reserve() for _ in range(3)]
    assert waits == pytest.approx([0.1, 0.2, 0.3])
    clock.now += 10  # idle: the bucket refills, but never beyond its burst
    assert [pace.reserve() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert pace.reserve() == pytest.approx(0.1)


def test_over_any_window_a_pace_keeps_to_its_rate() -> None:
    clock = FakeClock()
    pace = Pace(50.0, clock=clock, uniform=no_jitter)
    sends = []
    for _ in range(1000):  # 1,000 requests reserved at once: when would each go?
        sends.append(clock.now + pace.reserve())
    last = max(sends)
    assert last == pytest.approx(1000.0 + (1000 - 50) / 50.0)
    def in_second(start: float) -> int:
        return sum(1 for s in sends if start <= s < start + 1)

    assert max(in_second(start) for start in sends) <= 50 + 50  # the burst, then the rate
    assert max(in_second(start) for start in sends if start >= 1001.0) <= 50 + 1


def test_jitter_only_delays_a_request_within_one_slot() -> None:
    clock = FakeClock()
    pace = Pace(10.0, burst=1, clock=clock, uniform=lambda low, high: high)
    assert pace.reserve() == 0.0
    assert pace.reserve() == pytest.approx(0.2)  # its slot (0.1) plus at most one slot of jitter


def test_a_429_holds_the_endpoint_for_its_retry_after() -> None:
    clock = FakeClock()
    pace = Pace(100.0, clock=clock, uniform=no_jitter)
    pace.throttled(4.0)
    assert pace.reserve() == pytest.approx(4.02)  # the Retry-After, then a slot at the halved rate
    clock.now += 5
    assert pace.reserve() == 0.0


def test_a_429_halves_the_rate_once_per_moment_down_to_an_eighth_and_calm_brings_it_back() -> None:
    clock = FakeClock()
    pace = Pace(80.0, clock=clock, uniform=no_jitter)
    for _ in range(20):  # the 429s of requests sent together: one cut
        pace.throttled(1.0)
    assert pace.rate == 40.0
    for _ in range(10):  # a 429 every few seconds: a cut each time, never below 80 / 8
        clock.now += 2
        pace.throttled(1.0)
    assert pace.rate == 10.0
    clock.now += Pace.CALM - 1
    pace.reserve()
    assert pace.rate == 10.0  # not calm for long enough yet
    clock.now += 1
    pace.reserve()
    assert pace.rate == 12.5
    for _ in range(20):
        clock.now += Pace.CALM
        pace.reserve()
    assert pace.rate == 80.0  # never above where it started


def test_two_paced_clients_settle_under_a_limit_they_both_started_near() -> None:
    """Two triggerers at 80% of a 30/s limit each: the workspace's 429s cut both within seconds,
    and once cut they stay under the limit together."""
    clock = FakeClock()
    clients = [Pace(24.0, clock=clock, uniform=no_jitter) for _ in range(2)]
    tokens, stamp = 30.0, clock.now  # the workspace's bucket: 30/s, a second of burst
    next_send = [clock.now, clock.now]
    throttled_at = []
    step = 0.001
    while clock.now < 1000.0 + 120:
        clock.now = round(clock.now + step, 6)
        for i, pace in enumerate(clients):
            if clock.now >= next_send[i]:
                tokens = min(30.0, tokens + (clock.now - stamp) * 30.0)
                stamp = clock.now
                if tokens >= 1:
                    tokens -= 1
                else:
                    pace.throttled(1.0)
                    throttled_at.append(clock.now - 1000.0)
                next_send[i] = clock.now + max(pace.reserve(), step)
    assert throttled_at and max(throttled_at) < 60  # 429s in the first minute only
    assert sum(pace.rate for pace in clients) <= 30.0


def test_a_pace_refuses_a_rate_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match="per_second must be positive"):
        Pace(0)


def test_paths_map_to_their_endpoint_and_ids_do_not_make_new_ones() -> None:
    assert endpoint_of("/api/2.2/jobs/runs/get") == "jobs/runs/get"
    assert endpoint_of("/api/2.0/sql/statements/01ef-77/result/chunks/2") == "sql/statements"
    assert endpoint_of("/api/2.0/sql/statements/01ef-78") == "sql/statements"
    pacing = Pacing(FakeClock())
    one = pacing.pace("https://a", "/api/2.0/sql/statements/01ef-77")
    assert pacing.pace("https://a", "/api/2.0/sql/statements/99aa-01") is one
    assert pacing.pace("https://b", "/api/2.0/sql/statements/01ef-77") is not one  # per workspace
    runs_get = pacing.pace("https://a", "/api/2.2/jobs/runs/get")
    assert runs_get.rate == START_SHARE * LIMITS["jobs/runs/get"] == 80.0
    assert pacing.pace("https://a", "/api/2.2/jobs/runs/list").rate == START_SHARE * DEFAULT_LIMIT


def listed(*pairs: tuple[int, int]) -> list[dict[str, int]]:
    return [{"run_id": run_id, "start_time": start} for run_id, start in pairs]


def test_a_run_missing_from_a_whole_sweep_is_a_candidate_once() -> None:
    sweep = Sweep()
    for run_id in (1, 2, 3):
        sweep.add(run_id, 30)
    sweep.begin()
    assert sweep.page(listed((9, 500), (3, 400))) == []
    assert sweep.page(listed((1, 100))) == []  # start times unknown yet: wait for the end
    assert sweep.finish() == [2]
    sweep.begin()
    assert sweep.page(listed((9, 500), (1, 100))) == [3]  # 3 started at 400: inside what was read
    assert sweep.finish() == [2]  # still registered (not confirmed ended): proposed again


def test_a_run_registered_during_a_sweep_waits_for_the_next_one() -> None:
    sweep = Sweep()
    sweep.add(1, 30)
    sweep.begin()
    sweep.add(2, 30)
    assert sweep.page(listed((1, 100))) == []
    assert sweep.finish() == []
    sweep.begin()
    assert sweep.finish() == [1, 2]


def test_runs_at_the_edge_of_what_was_read_wait_for_the_end_of_the_sweep() -> None:
    sweep = Sweep()
    sweep.add(1, 30)
    sweep.add(2, 30)
    sweep.begin()
    sweep.page(listed((1, 300), (2, 200)))
    sweep.finish()
    sweep.begin()
    assert sweep.page(listed((7, 300))) == []  # run 1 started at 300, not strictly inside
    assert sweep.page(listed((8, 100))) == [2]
    assert sweep.finish() == [1]


def test_a_removed_run_is_never_proposed() -> None:
    sweep = Sweep()
    sweep.add(1, 30)
    sweep.begin()
    sweep.remove(1)
    assert sweep.finish() == []


def test_sweeps_come_every_two_to_six_seconds_costing_a_fifth_of_watching_each_run() -> None:
    clock = FakeClock()
    sweep = Sweep(clock)
    for run_id in range(2000):
        sweep.add(run_id, 30)
    sweep.pages = 80  # 2,000 active runs
    # Young runs: a Watcher checks each every 2 s; a fifth of that would be a sweep every 0.4 s.
    assert sweep.interval() == Sweep.FASTEST
    clock.now += 100  # a Watcher checks runs waited on for 100 s every 15 s
    assert sweep.interval() == pytest.approx(5 * 80 / (2000 / 15))
    clock.now += 1000  # old runs: once a period, 30 s
    assert sweep.interval() == Sweep.SLOWEST  # 80 pages / 6 s: 0.2 of 2,000 runs / 30 s
    sweep.pages = 1
    assert sweep.interval() == Sweep.FASTEST
    sweep.add(9999, 1)  # a waiter that asked for 1 s polling
    assert sweep.interval() == 1


def test_a_rebuilt_trigger_keeps_the_age_of_its_wait() -> None:
    clock = FakeClock()
    sweep = Sweep(clock)
    for run_id in range(100):
        sweep.add(run_id, 30, since=clock.now - 3600)  # waited on for an hour before a triggerer restart
    sweep.pages = 4
    assert sweep.interval() == Sweep.SLOWEST


def test_per_run_polling_takes_over_when_the_workspace_is_crowded_or_few_runs_wait() -> None:
    sweep = Sweep()
    for run_id in range(4):
        sweep.add(run_id, 30)
    assert not sweep.worth_it(pages=1)  # four runs at 30 s: 1 request/7.5 s, less than a page every 6 s
    sweep.add(4, 30)
    assert sweep.worth_it(pages=1)
    for run_id in range(5, 1000):
        sweep.add(run_id, 30)
    assert sweep.worth_it(pages=200)  # 5,000 active runs in the workspace, 1,000 of them here
    assert not sweep.worth_it(pages=240)  # 6,000: per-run polling costs less
    fast = Sweep()
    fast.add(1, 1)
    assert fast.worth_it(pages=1)  # one run polled every second costs more than a page every 6 s


def test_once_sweeping_the_last_runs_stay_on_the_sweep_while_one_page_holds_them() -> None:
    sweep = Sweep()
    sweep.add(1, 30)
    assert not sweep.worth_it(pages=1)  # too few to start sweeping for ...
    sweep.begin()
    sweep.page(listed(*((run_id, run_id) for run_id in range(1, 26))))  # 25 active runs: one page
    sweep.finish()
    assert sweep.keeps_going()  # ... but a sweep that runs goes on for the last of a batch
    sweep.begin([(1, 10), (11, 25)])  # even when it was read in two windows (two requests)
    sweep.page(listed(*((run_id, run_id) for run_id in range(1, 11))), (1, 10))
    sweep.page(listed(*((run_id, run_id) for run_id in range(11, 26))), (11, 25))
    sweep.finish()
    assert sweep.pages == 2 and sweep.needed == 1 and sweep.keeps_going()
    sweep.begin()
    sweep.page(listed(*((run_id, run_id) for run_id in range(1, 51))))  # the workspace's other runs: two pages
    sweep.finish()
    assert not sweep.keeps_going()  # polling this one costs less
    for run_id in range(2, 1000):
        sweep.add(run_id, 30)
    sweep.needed = sweep.pages = 160
    assert sweep.keeps_going()


def test_known_start_times_split_into_windows_listed_side_by_side() -> None:
    sweep = Sweep()
    for run_id in range(1, 9):
        sweep.add(run_id, 30)
    assert sweep.windows(4) == [(None, None)]  # start times unknown: one listing of everything
    sweep.begin()
    sweep.page(listed(*((run_id, 100 * run_id) for run_id in range(8, 0, -1))))
    sweep.finish()
    assert sweep.windows(4) == [(None, None)]  # one page held them all: one page again
    sweep.needed = 80
    assert sweep.windows(4) == [(100, 200), (300, 400), (500, 600), (700, 800)]
    sweep.started[3] = 200  # runs that started in the same millisecond stay in one window
    assert sweep.windows(4)[0] == (100, 200) and sweep.windows(4)[1] == (400, 500)


def test_a_window_proposes_only_its_own_runs_once_its_pages_are_read() -> None:
    sweep = Sweep()
    for run_id in (1, 2, 3, 4):
        sweep.add(run_id, 30)
        sweep.started[run_id] = 100 * run_id
    early, late = (100, 200), (300, 400)
    sweep.begin([early, late])
    assert sweep.page(listed((2, 200)), early) == []
    assert sweep.finish_window(early) == [1]  # run 1 was not in its window's listing
    assert sweep.page(listed((4, 400), (3, 300)), late) == []
    assert sweep.finish() == []
    assert sweep.page(listed((9, 900)), (500, 600)) == []  # a page from a sweep that is over


def test_each_page_proposes_what_a_scan_of_every_registered_run_would() -> None:
    """The sweep looks up only the start times a page newly covers; a scan of every registered
    run after each page must find the same candidates: ties, unknown start times, and pages that
    repeat or skip runs included."""
    rng = random.Random(17)
    for _ in range(300):
        sweep = Sweep()
        registered = rng.sample(range(1, 500), 40)
        starts = {run_id: rng.randrange(40) * 10 for run_id in range(1, 500)}
        for run_id in registered:
            sweep.add(run_id, 30)
            if rng.random() < 0.8:
                sweep.started[run_id] = starts[run_id]
        known = dict(sweep.started)
        active = rng.sample(range(1, 500), 60)
        # newest first, but a few out of order, so a page can also widen the span upwards
        listing = sorted(active, key=lambda run_id: -starts[run_id] + rng.choice((0, 0, 100)))
        sweep.begin()
        seen: set[int] = set()
        proposed: set[int] = set()
        while listing:
            size, shift = rng.randint(1, 25), rng.randint(-3, 3)  # runs ending mid-sweep shift the pages
            page, listing = listing[:size], listing[max(1, size + shift):]
            seen.update(page)
            covered = [starts[run_id] for run_id in seen]
            low, high = min(covered), max(covered)
            scan = {r for r in registered if r not in seen and low < known.get(r, low) < high} - proposed
            assert set(sweep.page(listed(*((run_id, starts[run_id]) for run_id in page)))) == scan
            proposed |= scan
        assert set(sweep.finish()) == set(registered) - seen - proposed


class Workspace:
    """A stand-in for the hook's two reads: the active runs (one page) and one run."""

    databricks_conn_id = "sweep_test"

    def __init__(self, active: set[int]) -> None:
        self.active = set(active)
        self.gets: list[int] = []

    async def a_active_runs_page(self, token: str | None, *window: int | None) -> tuple[list[dict[str, Any]], None]:
        return listed(*((run_id, 1000 + run_id) for run_id in sorted(self.active, reverse=True))), None

    async def a_get_run(self, run_id: int) -> Run:
        self.gets.append(run_id)
        state = {"life_cycle_state": "RUNNING"} if run_id in self.active else {
            "life_cycle_state": "TERMINATED", "result_state": "SUCCESS"}
        return Run.from_dict({"run_id": run_id, "state": state})


async def test_a_batch_is_swept_from_its_first_run_to_its_last(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Sweep, "interval", lambda self: 0.01)  # sweeps back to back: the test's time is short
    workspace = Workspace(set(range(1, 11)))
    polled_alone: list[int] = []

    def alone(run_id: int) -> Callable[[], Awaitable[Run | None]]:
        async def poll() -> Run | None:  # per-run polling at the 30 s period: never done within this test
            polled_alone.append(run_id)
            await asyncio.sleep(60)
            raise AssertionError(f"run {run_id} was left to poll alone")
        return poll

    waits = {run_id: asyncio.ensure_future(wait_shared(workspace, run_id, 30, None, alone(run_id)))  # type: ignore[arg-type]
             for run_id in range(1, 11)}
    await asyncio.sleep(0.1)
    # The first four polled alone until the fifth made a page every few seconds worth it; then all joined.
    assert sorted(set(polled_alone)) == [1, 2, 3, 4]
    workspace.active -= set(range(1, 10))  # nine end; run 10, too few to start sweeping for, stays
    for run_id in range(1, 10):
        assert (await asyncio.wait_for(waits[run_id], 5)).run_id == run_id  # type: ignore[union-attr]
    await asyncio.sleep(0.1)
    assert not waits[10].done()
    late = asyncio.ensure_future(wait_shared(workspace, 11, 30, None, alone(11)))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    workspace.active -= {10}
    run = await asyncio.wait_for(waits[10], 5)
    assert run is not None and run.run_id == 10 and run.state.is_terminal
    assert workspace.gets.count(10) == 1  # one confirming runs/get, no polling
    assert 11 not in polled_alone  # a newcomer joins the sweeps that run
    late.cancel()
    watcher = watcher_for(workspace)  # type: ignore[arg-type]
    assert watcher.task is not None
    await asyncio.wait_for(watcher.task, 5)  # nobody waits: the sweeps stop


class History:
    """A stand-in for the SQL hook's two reads: statuses from the query history, one statement."""

    databricks_conn_id = "history_test"

    def __init__(self, statuses: dict[str, str]) -> None:
        self.statuses = statuses
        self.requests: list[list[str]] = []
        self.gets: list[str] = []

    async def a_statement_statuses(self, statement_ids: list[str]) -> dict[str, str]:
        self.requests.append(list(statement_ids))
        return {sid: self.statuses[sid] for sid in statement_ids if sid in self.statuses}

    async def a_get_statement(self, statement_id: str) -> Statement:
        self.gets.append(statement_id)
        state = {"FINISHED": "SUCCEEDED", "FAILED": "FAILED"}.get(self.statuses.get(statement_id, ""), "RUNNING")
        return Statement.from_dict({"statement_id": statement_id, "status": {"state": state}})


async def test_statements_are_watched_through_the_query_history_a_hundred_a_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Sweep, "interval", lambda self: 0.01)
    monkeypatch.setattr(sharing, "HISTORY_GRACE", 0.2)
    ids = [f"01ef-{n:04d}" for n in range(150)]
    history = History(dict.fromkeys(ids[:-1], "RUNNING"))  # the last is never listed
    alone_for: list[str] = []

    def alone(statement_id: str) -> Callable[[], Awaitable[Statement | None]]:
        async def poll() -> Statement | None:  # a Watcher's loop, quicker
            alone_for.append(statement_id)
            while True:
                await asyncio.sleep(0.05)
                statement = await history.a_get_statement(statement_id)
                if statement.state.is_terminal:
                    return statement
        return poll

    waits = {sid: asyncio.ensure_future(wait_shared(history, sid, 30, None, alone(sid), kind=StatementWatcher))
             for sid in ids}
    await asyncio.sleep(0.1)
    assert history.requests and max(len(batch) for batch in history.requests) == 100
    history.statuses.update({ids[0]: "FINISHED", ids[1]: "FAILED"})
    for sid, state in ((ids[0], "SUCCEEDED"), (ids[1], "FAILED")):
        statement = await asyncio.wait_for(waits[sid], 5)
        assert statement.statement_id == sid and statement.state.state == state
        assert history.gets.count(sid) == 1  # the end confirmed by one read
    # The statement the history never showed goes back to polling alone after the grace period.
    await asyncio.sleep(0.4)
    assert ids[-1] in alone_for
    history.statuses[ids[-1]] = "FINISHED"
    assert (await asyncio.wait_for(waits[ids[-1]], 5)).state.state == "SUCCEEDED"
    assert ids[-1] in alone_for
    assert not set(alone_for) - {ids[-1], *ids[:4]}  # only the first four waited alone, until the fifth
    for future in waits.values():
        future.cancel()
    await asyncio.gather(*waits.values(), return_exceptions=True)
