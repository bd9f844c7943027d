"""What a run's end means: the outputs worth reading, the summary a task reports, the failure
report users read, and the plan of a repair."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_dbx.models import SUCCESS, Run, TaskRun

if TYPE_CHECKING:
    from collections.abc import Mapping


def output_targets(run: Run, *, successful: bool) -> list[TaskRun]:
    """The task runs whose runs/get-output is worth reading once ``run`` has ended.

    A failed run needs its failed tasks' errors for the report; a successful one, its
    notebooks' results for XCom.
    """
    if not successful:
        # A task run read on its own (a workflow task's) has no task list: it is its own target.
        return run.failed_tasks() if run.tasks else [TaskRun(run.run_name, run.run_id, run.state)]
    return [task for task in run.tasks if task.is_notebook]


def summarise_run(
    run: Run, outputs: Mapping[int, Mapping[str, Any]], *, allow_success_with_failures: bool = False
) -> dict[str, Any]:
    """What a finished run means for its Airflow task, as plain JSON (a trigger event payload)."""
    successful = run.state.is_successful(allow_success_with_failures=allow_success_with_failures)
    results = {
        task.task_key: outputs[task.run_id]["notebook_output"]["result"]
        for task in run.tasks
        if task.is_notebook and "result" in (outputs.get(task.run_id, {}).get("notebook_output") or {})
    }
    notebook_output: Any = results or None
    if len(run.tasks) == 1 and results:
        notebook_output = next(iter(results.values()))
    return {
        "run_id": run.run_id,
        "run_page_url": run.run_page_url,
        "state": run.state.to_dict(),
        "successful": successful,
        "report": None if successful else format_failure_report(run, outputs),
        "notebook_output": notebook_output,
    }


def format_failure_report(run: Run, outputs: Mapping[int, Mapping[str, Any]], *, trace_lines: int = 10) -> str:
    """The text users read when a run fails: result, message, each failed task, the URL.

    ``outputs`` maps a task run id to its runs/get-output answer (``error``, ``error_trace``).
    """
    lines = [f"Databricks run {run.run_id} ended {run.state.outcome}"]
    if run.state.state_message:
        lines[0] += f": {run.state.state_message}"
    targets = run.failed_tasks() or ([] if run.tasks else [TaskRun(run.run_name, run.run_id, run.state)])
    for task in targets:
        output = outputs.get(task.run_id, {})
        name = f"task {task.task_key}" if task.task_key else "run"
        head = f"- {name} ({task.state.outcome})"
        error = output.get("error") or task.state.state_message
        if error:
            head += f": {error}"
        lines.append(head)
        trace = (output.get("error_trace") or "").strip().splitlines()
        lines.extend(f"    {line}" for line in trace[:trace_lines])
        if len(trace) > trace_lines:
            lines.append(f"    ... ({len(trace) - trace_lines} more lines)")
    if run.run_page_url:
        lines.append(f"Run page: {run.run_page_url}")
    return "\n".join(lines)


# Results that a repair can turn into a success: the task itself failed or ran out of time.
_REPAIRABLE_RESULTS = frozenset({"FAILED", "TIMEDOUT"})
# Results of tasks that have nothing to redo: they succeeded, or their condition excluded them.
_DONE_RESULTS = frozenset({SUCCESS, "EXCLUDED"})


def is_repairable(run: Run, *, allow_success_with_failures: bool = False) -> bool:
    """True when ``run`` ended unsuccessfully because a task failed or timed out.

    A cancelled run (by a user, or by the task's own timeout) is not: a fresh run replaces it.
    """
    if not run.state.is_terminal or run.state.is_successful(allow_success_with_failures=allow_success_with_failures):
        return False
    failed = run.state.result_state in _REPAIRABLE_RESULTS or any(
        task.state.result_state in _REPAIRABLE_RESULTS for task in run.tasks
    )
    return failed and bool(tasks_to_rerun(run))


def tasks_to_rerun(run: Run) -> list[str]:
    """The task keys a repair of ``run`` reruns: each task that did not succeed, and every task
    downstream of one (even one that succeeded, since its input changes), in the API's order."""
    keys = {t.task_key for t in run.tasks if t.state.is_terminal and t.state.result_state not in _DONE_RESULTS}
    grew = True
    while grew:
        downstream = {t.task_key for t in run.tasks if t.task_key not in keys and keys.intersection(t.depends_on)}
        grew = bool(downstream)
        keys |= downstream
    return [task.task_key for task in run.tasks if task.task_key in keys]


def repair_request(
    run: Run, parameters: Mapping[str, Any] | None = None, rerun: list[str] | None = None
) -> dict[str, Any]:
    """The runs/repair body that reruns ``rerun`` (by default :func:`tasks_to_rerun`) of ``run``.

    ``latest_repair_id`` names the repair this one follows (``run`` must be read with
    ``include_history``); the API refuses a request built from a stale view, so a repair
    can never be requested twice from the same view. ``rerun_dependent_tasks`` lets the
    service add any dependant the task list did not show. ``parameters`` are run-now's
    overriding parameters (``notebook_params``, ``job_parameters``, ...), applied again.
    """
    tasks = tasks_to_rerun(run) if rerun is None else rerun
    body: dict[str, Any] = {"run_id": run.run_id, "rerun_tasks": tasks, "rerun_dependent_tasks": True}
    if run.repair_ids:
        body["latest_repair_id"] = run.repair_ids[-1]
    body.update({key: value for key, value in (parameters or {}).items() if value is not None})
    return body
