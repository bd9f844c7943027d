"""A workflow task's run time: its task run in the job run the group's launcher started, and
the repair of that task when a new try of the Airflow task follows its failure."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from airflow_dbx._run_tasks import XCOM_RUN_ID
from airflow_dbx._starting import repair
from airflow_dbx.errors import DatabricksError
from airflow_dbx.models import task_attempt
from airflow_dbx.waiting import Watcher

if TYPE_CHECKING:
    from airflow_dbx.hook import DatabricksHook
    from airflow_dbx.models import Run

log = logging.getLogger("airflow_dbx.operators")

# A bound on repair rounds of one try: other tasks' repairs may come first, one at a time.
MAX_ROUNDS = 20


def task_run_to_follow(hook: DatabricksHook, ti: Any, launcher_task_id: str, task: Any) -> tuple[int, Run]:
    """The group's run id and the task run ``task`` of this try follows.

    The task's latest attempt, unless this is a later try and that attempt already ended
    unsuccessfully: a retry or a Clear of the Airflow task then repairs that task and what
    depends on it, in the same run (once the run has ended: Databricks repairs only finished
    runs), once per try.
    """
    parent = ti.xcom_pull(task_ids=launcher_task_id, key=XCOM_RUN_ID)
    if parent is None:
        raise DatabricksError(f"{launcher_task_id} pushed no run id: the group's job run was not started")
    parent = int(parent)
    key = task.databricks_task_key
    repaired = ti.try_number <= 1  # a first try reports what it finds
    for _ in range(MAX_ROUNDS):
        run = hook.get_run(parent, include_history=True)
        current = task_attempt(run, key)
        if repaired or not current.state.is_terminal or current.state.is_successful():
            return parent, current
        if not run.state.is_terminal:
            log.info("Task %s failed in an earlier try; repairing it once Databricks run %s ends", key, parent)
            hook.wait_for_run(parent, Watcher(task.polling_period_seconds))
            continue
        repair(hook, run, repair_parameters(run), rerun=[key])
        repaired = True
    raise DatabricksError(f"Task {key} of Databricks run {parent} could not be repaired in {MAX_ROUNDS} rounds")


def repair_parameters(run: Run) -> dict[str, Any]:
    """The run's parameters, sent again with a repair so that the rerun tasks see what the run saw."""
    params = {k: v for k, v in (run.raw.get("overriding_parameters") or {}).items() if k != "job_parameters"}
    listed = run.raw.get("job_parameters") or ()
    job_parameters = {item["name"]: item.get("value", item.get("default")) for item in listed}
    if job_parameters:
        params["job_parameters"] = job_parameters
    return params
