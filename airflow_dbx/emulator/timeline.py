"""When each task run of a run (or of a repair) is ready, runs, stops and ends, and how.

Scheduling walks the tasks in dependency order: a task is ready when its upstream tasks
ended, is skipped when it is ``disabled`` or its ``run_if`` condition fails, else runs as
its ``emulator_*`` parameters say, and is retried (``max_retries``) while it fails. ``cut``
stops what is unfinished at a moment (cancel, run timeout); ``replan`` moves the tasks
downstream of a cancelled task run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from airflow_dbx.emulator.model import (
    DEFAULT_DURATION_SECONDS,
    RUN_SETUP_SECONDS,
    TASK_PENDING_SECONDS,
    TERMINATING_SECONDS,
    TaskRun,
)
from airflow_dbx.emulator.states import DISABLED, Outcome

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from airflow_dbx.emulator.model import Epoch, TaskSpec

EMULATED_RESULTS = frozenset({"SUCCESS", "FAILED", "TIMEDOUT", "CANCELED", "INTERNAL_ERROR"})
DEFAULT_ERROR = "Workload failed, see run output for details"
MAX_ATTEMPTS = 100  # max_retries -1 retries until an attempt succeeds, at most this many attempts
_FAILED_LIKE = frozenset({"FAILED", "TIMEDOUT", "UPSTREAM_FAILED", "INTERNAL_ERROR"})


def run_if_verdict(run_if: str, upstream: list[str]) -> Outcome | None:
    """None when the task may run after upstream results; else how it is skipped."""
    if not upstream:
        return None
    failed = [r for r in upstream if r in _FAILED_LIKE]
    cancelled = [r for r in upstream if r in ("CANCELED", "UPSTREAM_CANCELED")]
    succeeded = [r for r in upstream if r == "SUCCESS"]
    allowed = {
        "ALL_SUCCESS": len(succeeded) == len(upstream) or (not failed and not cancelled),
        "ALL_DONE": True,
        "NONE_FAILED": not failed and not cancelled,
        "AT_LEAST_ONE_SUCCESS": bool(succeeded),
        "ALL_FAILED": len(failed) == len(upstream),
        "AT_LEAST_ONE_FAILED": bool(failed),
    }[run_if]
    if allowed:
        return None
    if run_if in ("ALL_SUCCESS", "NONE_FAILED") and failed:
        return Outcome("UPSTREAM_FAILED", "Upstream task(s) failed.", "SKIPPED", "CLIENT_ERROR", "SKIPPED")
    if cancelled and run_if in ("ALL_SUCCESS", "NONE_FAILED"):
        return Outcome("UPSTREAM_CANCELED", "Upstream task(s) were cancelled.", "SKIPPED", "CLIENT_ERROR", "SKIPPED")
    return Outcome("EXCLUDED", f"Condition {run_if} was not met.", "SKIPPED", "SUCCESS", "SKIPPED")


@dataclass
class Behaviour:
    """What a task does, read from its ``emulator_*`` parameters."""

    duration: float = DEFAULT_DURATION_SECONDS
    result: str = "SUCCESS"
    error: str | None = None
    error_trace: str | None = None
    output: str | None = None
    fail_attempts: int = 0
    problem: str | None = None

    @classmethod
    def from_params(cls, params: dict[str, str]) -> Behaviour:
        b = cls(
            error=params.get("emulator_error"),
            error_trace=params.get("emulator_error_trace"),
            output=params.get("emulator_output"),
        )
        try:
            b.duration = max(0.0, float(params.get("emulator_duration", DEFAULT_DURATION_SECONDS)))
            b.fail_attempts = int(params.get("emulator_fail_attempts", 0))
        except ValueError as exc:
            b.problem = f"Bad emulator parameter: {exc}"
        result = params.get("emulator_result", "SUCCESS").upper()
        if result not in EMULATED_RESULTS:
            b.problem = f"Bad emulator parameter: emulator_result={result!r} (use one of {sorted(EMULATED_RESULTS)})"
        b.result = result
        return b


@dataclass
class Context:
    """What scheduling needs from the engine."""

    scale: float
    new_id: Callable[[], int]
    cluster_known: Callable[[str], bool]


def schedule(
    specs: dict[str, TaskSpec],
    order: list[str],
    *,
    keys: Iterable[str],
    view: dict[str, TaskRun],
    params: Callable[[TaskSpec], dict[str, str]],
    t0: float,
    ctx: Context,
    queued_until: float = 0.0,
) -> tuple[list[TaskRun], dict[str, TaskRun]]:
    """New task runs (retries included) for ``keys`` starting at ``t0``, in dependency order, over ``view``."""
    wanted = set(keys)
    view = dict(view)
    created: list[TaskRun] = []
    setup = t0 + RUN_SETUP_SECONDS * ctx.scale
    for key in order:
        if key not in wanted:
            continue
        spec = specs[key]
        previous = view.get(key)
        task = TaskRun(ctx.new_id(), spec, previous.attempt_number + 1 if previous else 0, params(spec))
        task.queued_until = queued_until
        attempts = plan(task, [view[d] for d in spec.depends_on if d in view], setup, ctx)
        view[key] = attempts[-1]
        created += attempts
    return created, view


def plan(task: TaskRun, upstream: list[TaskRun], earliest: float, ctx: Context) -> list[TaskRun]:
    """Times and outcome of ``task`` once its upstream tasks ended, then of its retries; every attempt."""
    spec = task.spec
    task.ready = max([earliest] + [u.end for u in upstream])
    task.error = None
    verdict = DISABLED if spec.settings.get("disabled") is True else None
    verdict = verdict or run_if_verdict(spec.run_if, [u.result for u in upstream])
    if verdict is not None:
        task.skip(verdict, task.ready)
        return [task]
    pending = TASK_PENDING_SECONDS * ctx.scale
    _execute(task, task.ready + pending, ctx)
    attempts = [task]
    retries = int(spec.settings.get("max_retries") or 0)
    interval = int(spec.settings.get("min_retry_interval_millis") or 0) / 1000 * ctx.scale
    while _retryable(attempts[-1], spec) and len(attempts) < MAX_ATTEMPTS and (retries < 0 or len(attempts) <= retries):
        failed = attempts[-1]
        retry = TaskRun(ctx.new_id(), spec, failed.attempt_number + 1, failed.params, retry_of=failed)
        retry.ready = max(failed.end, failed.start + interval)  # WAITING_FOR_RETRY until then
        _execute(retry, retry.ready + pending, ctx)
        attempts.append(retry)
    return attempts


def _retryable(task: TaskRun, spec: TaskSpec) -> bool:
    """Databricks retries FAILED (and INTERNAL_ERROR) attempts, TIMEDOUT ones only with ``retry_on_timeout``."""
    return task.result == "FAILED" or (task.result == "TIMEDOUT" and spec.settings.get("retry_on_timeout") is True)


def _execute(task: TaskRun, start: float, ctx: Context) -> None:
    scale = ctx.scale
    term = TERMINATING_SECONDS * scale
    cluster = task.spec.settings.get("existing_cluster_id")
    if cluster is not None and not ctx.cluster_known(str(cluster)):
        message = f"Cluster {cluster} does not exist"
        task.error = message
        task.finish(Outcome("FAILED", message, "CLUSTER_ERROR", "CLIENT_ERROR", "INTERNAL_ERROR"), start, start, term)
        return
    b = Behaviour.from_params(task.params)
    task.output, task.error_trace = b.output, b.error_trace
    result = b.result
    message = b.error or ""
    if b.problem:
        result, message = "FAILED", b.problem
    elif task.attempt_number < b.fail_attempts:
        result = "FAILED"
        message = b.error or f"Attempt {task.attempt_number} fails (emulator_fail_attempts={b.fail_attempts})"
    run_for = b.duration * scale
    if task.spec.timeout and task.spec.timeout * scale < run_for:
        run_for = task.spec.timeout * scale
        result, message = "TIMEDOUT", f"Task timed out after {task.spec.timeout:g} seconds (timeout_seconds)."
    outcome = _task_outcome(result, message)
    if outcome.result != "SUCCESS":
        task.error = outcome.message
    task.finish(outcome, start, start + run_for, term)


def _task_outcome(result: str, message: str) -> Outcome:
    if result == "SUCCESS":
        return Outcome("SUCCESS", message)
    if result == "FAILED":
        return Outcome("FAILED", message or DEFAULT_ERROR, "RUN_EXECUTION_ERROR", "CLIENT_ERROR")
    if result == "INTERNAL_ERROR":
        return Outcome(
            "FAILED", message or "Internal error (emulated).", "INTERNAL_ERROR", "INTERNAL_ERROR", "INTERNAL_ERROR"
        )
    if result == "TIMEDOUT":
        return Outcome(
            "TIMEDOUT", message or "Task timed out.", "CANCELED", "CLIENT_ERROR", user_cancelled_or_timedout=True
        )
    return Outcome(
        "CANCELED", message or "Task was cancelled.", "CANCELED", "CLIENT_ERROR", user_cancelled_or_timedout=True
    )


def cut(
    epoch: Epoch, at: float, *, running: Outcome, waiting: Outcome, term: float, keys: set[str] | None = None
) -> list[TaskRun]:
    """Stop every task run of ``epoch`` (or of ``keys``) not done by ``at``: the running one ends
    ``running``, the rest ``waiting``; retries that had not appeared yet are dropped and returned."""
    kept: list[TaskRun] = []
    dropped: list[TaskRun] = []
    for task in epoch.task_runs:
        if keys is not None and task.task_key not in keys:
            kept.append(task)
            continue
        if task.retry_of is not None and task.retry_of.end > at:
            dropped.append(task)  # its failed attempt had not ended: that attempt is the one stopped
            continue
        kept.append(task)
        if task.stop <= at and task.end > task.ready:
            continue  # already ran to its end (or is terminating)
        if task.end <= at:
            continue  # a skip that already happened
        task.queued_until = min(task.queued_until, at)
        if task.start <= at:
            task.finish(running, task.start, at, term)
        else:
            task.ready = min(task.ready, at)
            task.finish(waiting, at, at, term)
    epoch.task_runs = kept
    _unview(epoch, dropped)
    return dropped


def replan(
    epoch: Epoch, specs: dict[str, TaskSpec], topo: list[str], *, changed: set[str], now: float, ctx: Context
) -> tuple[list[TaskRun], list[TaskRun]]:
    """Plan again the task runs downstream of ``changed`` keys that had not started by ``now``.

    Each keeps its first attempt (and run id); its planned retries are replaced. Returns the
    attempts dropped and the attempts added."""
    changed = set(changed)
    dropped: list[TaskRun] = []
    added: list[TaskRun] = []
    for key in topo:
        spec = specs[key]
        last = epoch.view.get(key)
        if last is None or key in changed or not changed.intersection(spec.depends_on):
            continue
        first = last
        while first.retry_of is not None:
            first = first.retry_of
        if first.start <= now or first not in epoch.task_runs:
            continue
        retries = [t for t in epoch.task_runs if t.task_key == key and t is not first]
        attempts = plan(first, [epoch.view[d] for d in spec.depends_on if d in epoch.view], now, ctx)
        epoch.task_runs = [t for t in epoch.task_runs if t not in retries] + attempts[1:]
        epoch.view[key] = attempts[-1]
        dropped += retries
        added += attempts[1:]
        changed.add(key)
    return dropped, added


def _unview(epoch: Epoch, dropped: list[TaskRun]) -> None:
    if not dropped:
        return
    gone = set(dropped)
    for key, last in epoch.view.items():
        shown = last
        while shown in gone and shown.retry_of is not None:
            shown = shown.retry_of
        epoch.view[key] = shown
