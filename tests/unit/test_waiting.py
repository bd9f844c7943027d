"""waiting: the poll schedule, throttling stretch, outage pauses and the deadline, on a fake clock.

Nothing here sleeps: the wait plan's Sleep effects move the fake clock forward.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from airflow_dbx.errors import DatabricksApiError
from airflow_dbx.models import Run
from airflow_dbx.waiting import Outage, Sleep, Watcher, patiently, watch


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def low(a: float, b: float) -> float:
    return a


def high(a: float, b: float) -> float:
    return b


def mid(a: float, b: float) -> float:
    return (a + b) / 2


def error(status: int | None, code: str | None = None) -> DatabricksApiError:
    return DatabricksApiError(method="GET", endpoint="/api/2.2/jobs/runs/get", status_code=status, error_code=code)


def run(state: str, result: str | None = None) -> Run:
    return Run.from_dict({"run_id": 7, "state": {"life_cycle_state": state, "result_state": result}})


def follow(watcher: Watcher, clock: FakeClock, until: float) -> list[float]:
    """The pauses of a wait whose every check is answered, until ``until`` seconds have passed."""
    pauses, start = [], clock.now
    while clock.now - start < until:
        pause = watcher.pause()
        assert pause is not None
        pauses.append(pause)
        clock.now += pause
        watcher.answered(throttled=False)
    return pauses


class TestSchedule:
    def test_first_check_comes_a_second_in(self) -> None:
        assert Watcher(30, clock=FakeClock(), uniform=mid).pause() == pytest.approx(1.0)

    def test_pauses_grow_with_the_time_waited_between_floor_and_period(self) -> None:
        clock = FakeClock()
        pauses = follow(Watcher(30, clock=clock, uniform=mid), clock, until=600)
        assert pauses[1] == pytest.approx(Watcher.FLOOR)  # 1 s waited: 0.15 s, raised to the floor
        assert all(b >= a for a, b in itertools.pairwise(pauses))
        assert max(pauses) == pytest.approx(30)
        grown = next(p for p in pauses if Watcher.FLOOR < p < 30)
        assert grown == pytest.approx(Watcher.GROWTH * (sum(pauses[: pauses.index(grown)])))

    def test_a_minute_long_run_costs_few_checks(self) -> None:
        clock = FakeClock()
        assert len(follow(Watcher(30, clock=clock, uniform=high), clock, until=60)) <= 20

    def test_a_short_period_caps_even_the_first_pause(self) -> None:
        assert Watcher(0.5, clock=FakeClock(), uniform=mid).pause() == pytest.approx(0.5)

    @pytest.mark.parametrize(("uniform", "factor"), [(low, 0.9), (high, 1.1)])
    def test_jitter_is_ten_percent_either_way(self, uniform: Any, factor: float) -> None:
        clock = FakeClock()
        watcher = Watcher(30, waited=100, clock=clock, uniform=uniform)
        assert watcher.pause() == pytest.approx(15 * factor)

    def test_a_rebuilt_wait_resumes_its_schedule(self) -> None:
        assert Watcher(30, waited=100, clock=FakeClock(), uniform=mid).pause() == pytest.approx(15)
        assert Watcher(30, waited=3600, clock=FakeClock(), uniform=mid).pause() == pytest.approx(30)


class TestDeadline:
    def test_pause_never_passes_the_deadline_and_ends_there(self) -> None:
        clock = FakeClock()
        watcher = Watcher(30, waited=3600, deadline=clock.now + 10, clock=clock, uniform=mid)
        assert watcher.pause() == pytest.approx(10)
        clock.now += 10
        assert watcher.pause() is None


class TestThrottling:
    def test_pauses_stretch_while_throttled_and_ease_back(self) -> None:
        clock = FakeClock()
        watcher = Watcher(30, waited=3600, clock=clock, uniform=mid)
        stretched = []
        for _ in range(5):
            watcher.answered(throttled=True)
            stretched.append(watcher.pause())
        assert stretched == pytest.approx([60, 120, 240, 240, 240])  # doubles, up to MAX_STRETCH
        watcher.answered(throttled=False)
        assert watcher.pause() == pytest.approx(30 * 8 * 0.95)
        for _ in range(200):
            watcher.answered(throttled=False)
        assert watcher.pause() == pytest.approx(30)


class TestOutage:
    @pytest.mark.parametrize(("status", "code"), [(429, None), (503, None), (None, None), (400, "COULD_NOT_ACQUIRE_LOCK")])
    def test_passing_failures_pause_longer_each_time_up_to_the_cap(self, status: int | None, code: str | None) -> None:
        outage = Outage(clock=FakeClock(), uniform=low)
        pauses = [outage.failed(error(status, code)) for _ in range(9)]
        assert pauses == [1, 2, 4, 8, 16, 32, 60, 60, 60]

    def test_pauses_are_jittered_up_to_twice_as_long(self) -> None:
        assert Outage(clock=FakeClock(), uniform=high).failed(error(503)) == 2

    @pytest.mark.parametrize("status", [400, 401, 403, 404])
    def test_errors_retrying_cannot_mend_end_the_wait(self, status: int) -> None:
        failure = error(status)
        with pytest.raises(DatabricksApiError) as caught:
            Outage(clock=FakeClock()).failed(failure)
        assert caught.value is failure

    def test_an_outage_longer_than_the_limit_ends_the_wait_and_a_new_one_starts_afresh(self) -> None:
        clock = FakeClock()
        outage = Outage(limit=600, clock=clock, uniform=low)
        outage.failed(error(503))
        clock.now += 599
        outage.failed(error(503))
        clock.now += 2
        with pytest.raises(DatabricksApiError):
            outage.failed(error(503))
        outage.ended()
        clock.now += 100
        assert outage.failed(error(503)) == 1

    def test_a_failed_check_pauses_the_watcher_by_the_outage_policy(self) -> None:
        clock = FakeClock()
        watcher = Watcher(30, waited=3600, clock=clock, uniform=low)
        watcher.failed(error(503))
        watcher.failed(error(503))
        assert watcher.pause() == 2
        watcher.answered(throttled=False)
        assert watcher.outage.failures == 0
        assert watcher.pause() == pytest.approx(27)


def drive(plan: Any, clock: FakeClock) -> tuple[Any, list[float]]:
    """Run a plan whose only effect is Sleep, moving the fake clock; its result and the sleeps."""
    sleeps: list[float] = []
    result = None
    while True:
        try:
            effect = plan.send(result)
        except StopIteration as done:
            return done.value, sleeps
        assert isinstance(effect, Sleep), effect
        sleeps.append(effect.seconds)
        clock.now += effect.seconds
        result = None


def checks(*answers: Any) -> Any:
    """A status check answering each of ``answers`` in turn: a (run, throttled) pair, or an error to raise."""
    script = list(answers)
    calls: list[int] = []

    def check() -> Any:
        calls.append(1)
        answer = script.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer
        yield  # a plan, like the hook's

    check.calls = calls  # type: ignore[attr-defined]
    return check


class TestWatchPlan:
    def test_returns_the_run_once_it_ends(self) -> None:
        clock = FakeClock()
        check = checks((run("PENDING"), False), (run("RUNNING"), False), (run("TERMINATED", "SUCCESS"), False))
        ended, sleeps = drive(watch(7, check, Watcher(30, clock=clock, uniform=mid)), clock)
        assert ended.state.result_state == "SUCCESS"
        assert len(check.calls) == 3
        assert sleeps[0] == pytest.approx(1.0)

    def test_goes_on_through_passing_failures_and_stretches_when_throttled(self) -> None:
        clock = FakeClock()
        check = checks(error(503), (run("RUNNING"), True), (run("TERMINATED", "FAILED"), False))
        watcher = Watcher(30, waited=3600, clock=clock, uniform=low)
        ended, sleeps = drive(watch(7, check, watcher), clock)
        assert ended.state.result_state == "FAILED"
        assert sleeps == pytest.approx([27, 1, 30 * 0.9 * 2])  # the throttled answer doubles the pause

    def test_a_final_error_ends_the_wait(self) -> None:
        clock = FakeClock()
        with pytest.raises(DatabricksApiError, match="HTTP 403"):
            drive(watch(7, checks(error(403)), Watcher(30, clock=clock)), clock)

    def test_returns_none_at_the_deadline(self) -> None:
        clock = FakeClock()
        watcher = Watcher(30, waited=3600, deadline=clock.now + 45, clock=clock, uniform=mid)
        ended, sleeps = drive(watch(7, checks((run("RUNNING"), False), (run("RUNNING"), False)), watcher), clock)
        assert ended is None
        assert sleeps == pytest.approx([30, 15])


class TestPatiently:
    def test_made_again_after_passing_failures(self) -> None:
        clock = FakeClock()
        attempts = checks(error(503), error(None), ({"ok": True}, False))
        (answer, _), sleeps = drive(patiently(attempts, Outage(clock=clock, uniform=low)), clock)
        assert answer == {"ok": True}
        assert sleeps == [1, 2]

    def test_a_final_error_is_raised_at_once(self) -> None:
        clock = FakeClock()
        with pytest.raises(DatabricksApiError, match="HTTP 404"):
            drive(patiently(checks(error(404)), Outage(clock=clock)), clock)
