"""Runs and task runs, and how their life cycle unfolds in time.

Every outcome follows from the request (see the package docstring for the per-task
``emulator_*`` parameters), so a run's whole timeline is computed when it is scheduled:
each task run gets absolute times for ready / running / stopped / ended. Reading a run
then only compares those times with the clock. Cancel, timeout and repair rewrite the
timeline of the tasks concerned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Phase lengths in emulated seconds; multiplied by the time scale.
RUN_SETUP_SECONDS = 0.3
TASK_PENDING_SECONDS = 0.2
TERMINATING_SECONDS = 0.2
DEFAULT_DURATION_SECONDS = 2.0

OK_RESULTS = frozenset({"SUCCESS", "EXCLUDED"})
ROOT_FAILURES = ("FAILED", "TIMEDOUT", "CANCELED")
RUN_IF = frozenset(
    {"ALL_SUCCESS", "ALL_DONE", "NONE_FAILED", "AT_LEAST_ONE_SUCCESS", "ALL_FAILED", "AT_LEAST_ONE_FAILED"}
)


def ms(seconds: float) -> int:
    return int(seconds * 1000)


@dataclass(frozen=True)
class Outcome:
    """How a run or task run ended: legacy ``state`` and the 2.2 ``status`` in one place."""

    result: str
    message: str = ""
    code: str = "SUCCESS"
    kind: str = "SUCCESS"
    life_cycle: str = "TERMINATED"
    user_cancelled_or_timedout: bool = False

    def state(self) -> dict[str, Any]:
        return {
            "life_cycle_state": self.life_cycle,
            "result_state": self.result,
            "state_message": self.message,
            "user_cancelled_or_timedout": self.user_cancelled_or_timedout,
        }

    def status(self) -> dict[str, Any]:
        return {
            "state": "TERMINATED",
            "termination_details": {"code": self.code, "type": self.kind, "message": self.message},
        }


SUCCESS = Outcome("SUCCESS")


def _live(life_cycle: str, status: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    state = {"life_cycle_state": life_cycle, "state_message": "", "user_cancelled_or_timedout": False}
    return state, {"state": status or life_cycle}


BLOCKED = _live("BLOCKED")
PENDING = _live("PENDING")
RUNNING = _live("RUNNING")
TERMINATING = _live("TERMINATING")


@dataclass
class TaskSpec:
    key: str
    settings: dict[str, Any]
    depends_on: tuple[str, ...]
    run_if: str
    timeout: float | None
    static: dict[str, Any]  # the settings as runs/get shows them


@dataclass(eq=False)
class TaskRun:
    run_id: int
    spec: TaskSpec
    attempt_number: int
    params: dict[str, str]
    ready: float = 0.0
    start: float = 0.0
    stop: float = 0.0
    end: float = 0.0
    outcome: Outcome = SUCCESS
    error: str | None = None
    error_trace: str | None = None
    output: str | None = None
    _final: tuple[dict[str, Any], dict[str, Any]] | None = None

    @property
    def task_key(self) -> str:
        return self.spec.key

    @property
    def result(self) -> str:
        return self.outcome.result

    def finish(self, outcome: Outcome, start: float, stop: float, term: float) -> None:
        self.outcome, self.start, self.stop, self.end = outcome, start, stop, stop + term
        self._final = (outcome.state(), outcome.status())

    def skip(self, outcome: Outcome, at: float) -> None:
        self.ready = self.start = self.stop = self.end = at
        self.outcome = outcome
        self._final = (outcome.state(), outcome.status())

    def phase(self, now: float) -> tuple[dict[str, Any], dict[str, Any]]:
        if now >= self.end:
            assert self._final is not None
            return self._final
        if now >= self.stop:
            return TERMINATING
        if now >= self.start:
            return RUNNING
        return PENDING if now >= self.ready or not self.spec.depends_on else BLOCKED

    def snapshot(self, now: float, job_id: int, base_url: str) -> dict[str, Any]:
        state, status = self.phase(now)
        data = dict(self.spec.static)
        data.update(
            run_id=self.run_id,
            task_key=self.spec.key,
            attempt_number=self.attempt_number,
            state=state,
            status=status,
            run_page_url=f"{base_url}/#job/{job_id}/run/{self.run_id}",
            start_time=ms(self.ready) if now >= self.ready else 0,
            setup_duration=ms(self.start - self.ready) if now >= self.start else 0,
        )
        ended = now >= self.end
        data["execution_duration"] = ms(self.stop - self.start) if ended else 0
        data["cleanup_duration"] = ms(self.end - self.stop) if ended else 0
        data["end_time"] = ms(self.end) if ended else 0
        data["run_duration"] = ms(self.end - self.ready) if ended else 0
        return data


@dataclass(eq=False)
class Epoch:
    """The original run or one repair: the task runs it started and the view after it."""

    repair_id: int | None
    started: float
    task_runs: list[TaskRun]
    view: dict[str, TaskRun]
    first_start: float = 0.0
    last_stop: float = 0.0
    end: float = 0.0
    outcome: Outcome = SUCCESS
    cancelled: bool = False
    timed_out: float | None = None

    def settle(self, order: list[str], leaves: set[str]) -> None:
        runs = self.task_runs or list(self.view.values())
        started = [t.start for t in runs if t.end > t.ready] or [self.started]
        self.first_start = min(started)
        self.last_stop = max([t.stop for t in runs] + [self.started])
        self.end = max([t.end for t in runs] + [self.started])
        self.outcome = _run_outcome(self, order, leaves)

    def state(self, now: float) -> tuple[dict[str, Any], dict[str, Any]]:
        if now >= self.end:
            return self.outcome.state(), self.outcome.status()
        if now >= self.last_stop:
            return TERMINATING
        if now >= self.first_start or self.repair_id is not None:
            return RUNNING
        return PENDING


def _run_outcome(epoch: Epoch, order: list[str], leaves: set[str]) -> Outcome:
    if epoch.cancelled:
        return Outcome("CANCELED", "Run cancelled.", "USER_CANCELED", "CLIENT_ERROR", user_cancelled_or_timedout=True)
    if epoch.timed_out is not None:
        return Outcome(
            "TIMEDOUT",
            f"Run timed out after {epoch.timed_out:g} seconds (timeout_seconds).",
            "CANCELED",
            "CLIENT_ERROR",
            user_cancelled_or_timedout=True,
        )
    tasks = [epoch.view[key] for key in order if key in epoch.view]
    bad = [t for t in tasks if t.result not in OK_RESULTS]
    if not bad:
        return SUCCESS
    roots = [t for t in bad if t.result in ROOT_FAILURES]
    skipped = len(bad) - len(roots)
    for task in roots:
        if task.outcome.life_cycle == "INTERNAL_ERROR":
            return Outcome("FAILED", task.outcome.message, task.outcome.code, task.outcome.kind, "INTERNAL_ERROR")
    if all(epoch.view[key].result == "SUCCESS" for key in leaves if key in epoch.view):
        return Outcome(
            "SUCCESS_WITH_FAILURES",
            f"{len(bad)} task(s) failed but every leaf task succeeded.",
            "SUCCESS_WITH_FAILURES",
            "SUCCESS",
        )
    for result in ROOT_FAILURES:
        culprit = next((t for t in roots if t.result == result), None)
        if culprit is not None:
            message = f"Task {culprit.task_key} ended {result}: {culprit.outcome.message}".rstrip(".") + "."
            if skipped:
                message += f" {skipped} downstream task(s) did not run."
            code = "RUN_EXECUTION_ERROR" if result == "FAILED" else culprit.outcome.code
            return Outcome(result, message, code, "CLIENT_ERROR", user_cancelled_or_timedout=result != "FAILED")
    return Outcome("FAILED", f"{len(bad)} task(s) did not succeed.", "RUN_EXECUTION_ERROR", "CLIENT_ERROR")


@dataclass(eq=False)
class RunRecord:
    run_id: int
    job_id: int
    run_name: str
    run_type: str
    creator: str
    created: float
    specs: dict[str, TaskSpec]
    order: list[str]
    topo: list[str]
    timeout: float | None
    overrides: dict[str, Any]
    job_parameters: list[dict[str, Any]] | None = None
    idempotency_token: str | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    epochs: list[Epoch] = field(default_factory=list)
    # runs/get answers by (version, page, history): (valid from, valid until, body)
    cache: dict[tuple[Any, ...], tuple[float, float, bytes]] = field(default_factory=dict)

    @property
    def current(self) -> Epoch:
        return self.epochs[-1]

    @property
    def leaves(self) -> set[str]:
        used = {d for spec in self.specs.values() for d in spec.depends_on}
        return {key for key in self.order if key not in used}

    def is_terminal(self, now: float) -> bool:
        return now >= self.current.end

    def stable_window(self, now: float) -> tuple[float, float]:
        """The span around ``now`` in which no phase changes, so a snapshot taken now stays exact."""
        epoch = self.current
        times = [self.epochs[0].first_start, epoch.first_start, epoch.last_stop, epoch.end]
        for task in epoch.view.values():
            times += (task.ready, task.start, task.stop, task.end)
        before = [t for t in times if t <= now]
        after = [t for t in times if t > now]
        return (max(before) if before else float("-inf")), (min(after) if after else float("inf"))

    def tasks(self) -> list[TaskRun]:
        view = self.current.view
        return [view[key] for key in self.order if key in view]

    def snapshot(self, now: float, base_url: str, *, tasks: list[TaskRun] | None, history: bool) -> dict[str, Any]:
        epoch = self.current
        state, status = epoch.state(now)
        ended = now >= epoch.end
        first = self.epochs[0].first_start
        data: dict[str, Any] = {
            "job_id": self.job_id,
            "run_id": self.run_id,
            "number_in_job": self.run_id,
            "original_attempt_run_id": self.run_id,
            "creator_user_name": self.creator,
            "run_name": self.run_name,
            "run_type": self.run_type,
            "run_page_url": f"{base_url}/#job/{self.job_id}/run/{self.run_id}",
            "trigger": "ONE_TIME",
            "format": "MULTI_TASK",
            "attempt_number": 0,
            "state": state,
            "status": status,
            "start_time": ms(self.created),
            "setup_duration": ms(first - self.created) if now >= first else 0,
            "execution_duration": ms(epoch.last_stop - first) if ended else 0,
            "cleanup_duration": ms(epoch.end - epoch.last_stop) if ended else 0,
            "end_time": ms(epoch.end) if ended else 0,
            "run_duration": ms(epoch.end - self.created) if ended else 0,
        }
        if self.timeout:
            data["timeout_seconds"] = self.timeout
        if self.job_parameters is not None:
            data["job_parameters"] = self.job_parameters
        if self.overrides:
            data["overriding_parameters"] = self.overrides
        if tasks is not None:
            data["tasks"] = [t.snapshot(now, self.job_id, base_url) for t in tasks]
        if history:
            data["repair_history"] = [self._history(e, now) for e in self.epochs]
        return data

    def _history(self, epoch: Epoch, now: float) -> dict[str, Any]:
        state, status = epoch.state(now)
        item: dict[str, Any] = {
            "type": "ORIGINAL" if epoch.repair_id is None else "REPAIR",
            "start_time": ms(epoch.started),
            "end_time": ms(epoch.end) if now >= epoch.end else 0,
            "state": state,
            "status": status,
            "task_run_ids": [t.run_id for t in epoch.task_runs],
        }
        if epoch.repair_id is not None:
            item["id"] = epoch.repair_id
        return item
