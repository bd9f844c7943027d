"""What changes a run once it started: runs/cancel, runs/cancel-all, runs/repair and runs/delete."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_dbx.emulator import payloads as p
from airflow_dbx.emulator.errors import invalid, invalid_state, missing
from airflow_dbx.emulator.queueing import requeue
from airflow_dbx.emulator.states import OK_RESULTS, USER_CANCELED, Outcome
from airflow_dbx.emulator.timeline import cut, replan

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow_dbx.emulator.engine import Engine
    from airflow_dbx.emulator.model import RunRecord, TaskRun

TASK_CANCELED = Outcome(
    "CANCELED", "Task run cancelled by user.", "USER_CANCELED", "CLIENT_ERROR", user_cancelled_or_timedout=True
)


def cancel(engine: Engine, body: Mapping[str, Any]) -> dict[str, Any]:
    """A run id cancels the whole run; a task run id cancels that task run only.

    Tasks downstream of a cancelled task run are then skipped as their ``run_if`` says
    (UPSTREAM_CANCELED by default); tasks on other branches carry on.
    """
    run, task = engine.find(body)
    if task is None:
        cancel_run(engine, run)
    else:
        _cancel_task(engine, run, task)
    return {}


def cancel_run(engine: Engine, run: RunRecord) -> None:
    now = engine.clock()
    if run.is_terminal(now):
        return
    epoch = run.current
    dropped = cut(epoch, now, running=USER_CANCELED, waiting=USER_CANCELED, term=engine.cancel_terminating_seconds)
    epoch.queued_until = min(epoch.queued_until, now)
    epoch.forced = USER_CANCELED
    _settled(engine, run, dropped)


def _cancel_task(engine: Engine, run: RunRecord, task: TaskRun) -> None:
    now = engine.clock()
    epoch = run.current
    key = task.task_key
    if epoch.view.get(key) is None or now >= epoch.view[key].shown(now).end or task not in epoch.task_runs:
        return  # ended already, or an attempt of an earlier run or repair
    term = engine.cancel_terminating_seconds
    dropped = cut(epoch, now, running=TASK_CANCELED, waiting=TASK_CANCELED, term=term, keys={key})
    gone, added = replan(epoch, run.specs, run.topo, changed={key}, now=now, ctx=engine.ctx())
    for new in added:
        engine.task_runs[new.run_id] = (run, new)
    _settled(engine, run, dropped + gone)


def _settled(engine: Engine, run: RunRecord, dropped: list[TaskRun]) -> None:
    """After a cancel: the run's end and outcome again, forgotten retries, queued runs moved up."""
    for task in dropped:
        engine.task_runs.pop(task.run_id, None)
    run.current.settle(run.order, run.leaves)
    run.cache.clear()
    engine.created["cancels"] += 1
    job = engine.jobs.by_id.get(run.job_id)
    if job is not None:
        requeue(engine.job_runs.get(run.job_id, []), job["settings"], engine.clock())


def cancel_all(engine: Engine, body: Mapping[str, Any]) -> dict[str, Any]:
    job_id = p.get_int(body, "job_id")
    queued_only = p.get_bool(body, "all_queued_runs")
    if job_id is None and not queued_only:
        raise invalid("job_id", "give job_id or all_queued_runs")
    if job_id is not None and job_id not in engine.jobs:
        raise missing("Job", job_id)
    now = engine.clock()
    for run in list(engine.runs.values()):
        if job_id is not None and run.job_id != job_id:
            continue
        if queued_only and now >= run.current.queued_until:
            continue
        cancel_run(engine, run)
    return {}


def delete(engine: Engine, body: Mapping[str, Any]) -> dict[str, Any]:
    """runs/delete: "Deletes a non-active run. Returns an error if the run is active."

    The run's idempotency token then answers an error ("If a run with the provided token is
    deleted, an error is returned") until the run would have expired anyway.
    """
    run, task = engine.find(body)
    if task is not None:
        raise invalid("run_id", f"{task.run_id} is a task run; delete its parent run {run.run_id}")
    if not run.is_terminal(engine.clock()):
        raise invalid_state(f"Run {run.run_id} is active; only a run that ended can be deleted.")
    engine.forget(run)
    if run.idempotency_token is not None:
        until = run.created + engine.retention_seconds
        engine.deleted_tokens[run.idempotency_token] = until
        engine.next_expiry = min(engine.next_expiry, until)
    engine.created["deletes"] += 1
    return {}


def repair(engine: Engine, body: Mapping[str, Any]) -> dict[str, Any]:
    run, task = engine.find(body)
    if task is not None:
        raise invalid("run_id", f"{task.run_id} is a task run; repair its parent run {run.run_id}")
    now = engine.clock()
    if not run.is_terminal(now):
        raise invalid_state(f"Run {run.run_id} is still active; only a finished run can be repaired.")
    repairs = [e.repair_id for e in run.epochs if e.repair_id is not None]
    latest = p.get_int(body, "latest_repair_id")
    if repairs and latest != repairs[-1]:
        raise invalid(
            "latest_repair_id", f"expected the latest repair id {repairs[-1]} of run {run.run_id}, got {latest}"
        )
    if not repairs and latest is not None:
        raise invalid("latest_repair_id", f"run {run.run_id} has not been repaired yet, got {latest}")
    extra = p.overrides(body)
    keys = _repair_keys(run, body)
    epoch = engine.schedule_epoch(run, engine.new_id(), keys, now, extra)
    engine.created["repairs"] += 1
    return {"repair_id": epoch.repair_id}


def _repair_keys(run: RunRecord, body: Mapping[str, Any]) -> list[str]:
    rerun = p.get_list(body, "rerun_tasks")
    all_failed = p.get_bool(body, "rerun_all_failed_tasks")
    if rerun and all_failed:
        raise invalid("rerun_tasks", "give rerun_tasks or rerun_all_failed_tasks, not both")
    view = run.current.view
    if all_failed:
        keys = {k for k in run.order if k in view and view[k].result not in OK_RESULTS}
    elif rerun:
        unknown = [k for k in rerun if k not in run.specs]
        if unknown:
            raise invalid("rerun_tasks", f"unknown task key(s) {unknown}")
        keys = set(rerun)
    else:
        raise invalid("rerun_tasks", "give rerun_tasks or rerun_all_failed_tasks")
    if not keys:
        raise invalid("rerun_all_failed_tasks", f"run {run.run_id} has no failed tasks to repair")
    if p.get_bool(body, "rerun_dependent_tasks"):
        changed = True
        while changed:
            more = {k for k, s in run.specs.items() if k not in keys and keys.intersection(s.depends_on)}
            changed = bool(more)
            keys |= more
    return [k for k in run.topo if k in keys]
