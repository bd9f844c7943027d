"""Runs and task runs, and how their life cycle unfolds in time.

Every outcome follows from the request (see the package docstring for the per-task
``emulator_*`` parameters), so a run's whole timeline is computed when it is scheduled:
each task run gets absolute times for ready / running / stopped / ended. Reading a run
then only compares those times with the clock. Cancel, timeout, repair and a queue that
moves rewrite the timeline of the tasks concerned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from airflow_dbx.emulator.states import (
    BLOCKED,
    OK_RESULTS,
    PENDING,
    QUEUED,
    ROOT_FAILURES,
    RUNNING,
    SUCCESS,
    TERMINATING,
    WAITING_FOR_RETRY,
    Outcome,
    Phase,
)

# Phase lengths in emulated seconds; multiplied by the time scale.
RUN_SETUP_SECONDS = 0.3
TASK_PENDING_SECONDS = 0.2
TERMINATING_SECONDS = 0.2
DEFAULT_DURATION_SECONDS = 2.0

RUN_IF = frozenset(
    {"ALL_SUCCESS", "ALL_DONE", "NONE_FAILED", "AT_LEAST_ONE_SUCCESS", "ALL_FAILED", "AT_LEAST_ONE_FAILED"}
)


def ms(seconds: float) -> int:
    return int(seconds * 1000)


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
    retry_of: TaskRun | None = None  # the failed attempt this one retries, in the same run or repair
    queued_until: float = 0.0
    ready: float = 0.0
    start: float = 0.0
    stop: float = 0.0
    end: float = 0.0
    outcome: Outcome = SUCCESS
    error: str | None = None
    error_trace: str | None = None
    output: str | None = None
    _final: Phase | None = None

    @property
    def task_key(self) -> str:
        return self.spec.key

    @property
    def result(self) -> str:
        return self.outcome.result

    def times(self) -> tuple[float, ...]:
        return self.queued_until, self.ready, self.start, self.stop, self.end

    def finish(self, outcome: Outcome, start: float, stop: float, term: float) -> None:
        self.outcome, self.start, self.stop, self.end = outcome, start, stop, stop + term
        self._final = (outcome.state(), outcome.status())

    def skip(self, outcome: Outcome, at: float) -> None:
        self.ready = self.start = self.stop = self.end = at
        self.outcome = outcome
        self._final = (outcome.state(), outcome.status())

    def shift(self, delta: float) -> None:
        self.queued_until += delta
        self.ready, self.start, self.stop, self.end = (t + delta for t in (self.ready, self.start, self.stop, self.end))

    def shown(self, now: float) -> TaskRun:
        """The attempt runs/get shows at ``now``: a retry appears once the attempt before it ended."""
        task = self
        while task.retry_of is not None and now < task.retry_of.end:
            task = task.retry_of
        return task

    def phase(self, now: float) -> Phase:
        if now >= self.end:
            assert self._final is not None
            return self._final
        if now >= self.stop:
            return TERMINATING
        if now >= self.start:
            return RUNNING
        return self._before_start(now)

    def _before_start(self, now: float) -> Phase:
        if now < self.queued_until:
            return QUEUED
        if now >= self.ready:
            return PENDING
        if self.retry_of is not None:
            return WAITING_FOR_RETRY
        return BLOCKED if self.spec.depends_on else PENDING

    def snapshot(self, now: float, page_url: str) -> dict[str, Any]:
        state, status = self.phase(now)
        data = dict(self.spec.static)
        data.update(
            run_id=self.run_id,
            task_key=self.spec.key,
            attempt_number=self.attempt_number,
            state=state,
            status=status,
            run_page_url=page_url,
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
    """The original run or one repair: the task runs it started (retries too) and the view after it.

    ``view`` holds each task's last planned attempt; ``forced`` is an outcome imposed on the
    whole run (cancelled, timed out, skipped) instead of the one its tasks give.
    """

    repair_id: int | None
    started: float
    task_runs: list[TaskRun]
    view: dict[str, TaskRun]
    queued_until: float = 0.0
    first_start: float = 0.0
    last_stop: float = 0.0
    end: float = 0.0
    outcome: Outcome = SUCCESS
    forced: Outcome | None = None

    def settle(self, order: list[str], leaves: set[str]) -> None:
        runs = self.task_runs or list(self.view.values())
        started = [t.start for t in runs if t.end > t.ready] or [self.started]
        self.first_start = min(started)
        self.last_stop = max([t.stop for t in runs] + [self.started])
        self.end = max([t.end for t in runs] + [self.started])
        self.outcome = self.forced or _run_outcome(self, order, leaves)

    def shift(self, delta: float) -> None:
        """Move the whole plan in time (a queued run whose turn comes earlier)."""
        self.started += delta
        self.queued_until += delta
        self.first_start += delta
        self.last_stop += delta
        self.end += delta
        for task in self.task_runs:
            task.shift(delta)

    def state(self, now: float) -> Phase:
        if now >= self.end:
            return self.outcome.state(), self.outcome.status()
        if now >= self.last_stop:
            return TERMINATING
        if now < self.queued_until:
            return QUEUED
        if now >= self.first_start or self.repair_id is not None:
            return RUNNING
        return PENDING


def _run_outcome(epoch: Epoch, order: list[str], leaves: set[str]) -> Outcome:
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


def page_url(base_url: str, job_id: int, run_id: int) -> str:
    """The run page the emulator serves (Databricks' UI path ``/jobs/<job_id>/runs/<run_id>``)."""
    return f"{base_url}/jobs/{job_id}/runs/{run_id}"


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
    overrides: dict[str, Any] = field(default_factory=dict)
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
        times = [self.epochs[0].first_start, epoch.queued_until, epoch.first_start, epoch.last_stop, epoch.end]
        for task in (*epoch.view.values(), *epoch.task_runs):
            times += task.times()
        before = [t for t in times if t <= now]
        after = [t for t in times if t > now]
        return (max(before) if before else float("-inf")), (min(after) if after else float("inf"))

    def tasks(self, now: float) -> list[TaskRun]:
        """Each task's attempt as runs/get shows it at ``now``, in the run's task order."""
        view = self.current.view
        return [view[key].shown(now) for key in self.order if key in view]

    def snapshot(
        self, now: float, base_url: str, *, tasks: list[TaskRun] | None, history: bool, first_page: bool = True
    ) -> dict[str, Any]:
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
            "run_page_url": page_url(base_url, self.job_id, self.run_id),
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
        queued = self.epochs[0].queued_until
        if queued > self.created:
            data["queue_duration"] = ms(min(now, queued) - self.created)
        if self.timeout:
            data["timeout_seconds"] = self.timeout
        # Array properties appear on the first page only; later pages carry the rest of ``tasks``.
        if self.job_parameters is not None and first_page:
            data["job_parameters"] = self.job_parameters
        if self.overrides:
            data["overriding_parameters"] = self.overrides
        if tasks is not None:
            data["tasks"] = [t.snapshot(now, page_url(base_url, self.job_id, t.run_id)) for t in tasks]
        if history and first_page:
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
            "task_run_ids": [t.run_id for t in epoch.task_runs if t.retry_of is None or now >= t.retry_of.end],
        }
        if epoch.repair_id is not None:
            item["id"] = epoch.repair_id
        return item
