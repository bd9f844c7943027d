"""Exactly one Databricks run per task try chain: token generations, reattaching, repairing,
and stopping the run a chain that ended for good leaves behind."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from airflow_dbx.errors import DatabricksApiError, DatabricksError
from airflow_dbx.outcome import is_repairable, repair_request
from airflow_dbx.payloads import derive_idempotency_token

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from airflow_dbx.hook import DatabricksHook
    from airflow_dbx.models import Run

log = logging.getLogger("airflow_dbx.operators")

# A run that started before this try did belongs to an earlier try. The try's start is put on
# the workspace's clock, whose distance from this machine's its answers' Date headers bound;
# the margin covers the milliseconds of a run's start time, or, with no dated answer, skew
# between the two clocks (tries are apart by at least the retry delay).
DATED_MARGIN_SECONDS = 0.05
UNDATED_MARGIN_SECONDS = 1.0


def start_or_reattach(
    hook: DatabricksHook,
    ti: Any,
    payload: Mapping[str, Any],
    post: Callable[[dict[str, Any]], int],
    *,
    allow_success_with_failures: bool,
    repair_parameters: Mapping[str, Any] | None,
) -> Run:
    """The run of this try: new, an earlier try's, or an earlier try's repaired.

    Run ``n`` of the chain carries token generation ``n``, so a POST sent twice starts one
    run. A new try walks the generations: a run still active or already successful is
    reattached; a run that ended otherwise sends it to the next generation, whose POST
    starts a fresh run -- or, when ``repair_parameters`` is given (``repair_on_retry``),
    is repaired if a task of it failed.
    """
    chain = (ti.dag_id, ti.task_id, ti.run_id, ti.map_index)
    try_started = ti.start_date.timestamp() if ti.start_date else time.time()
    repairing = repair_parameters is not None
    for generation in range(max(ti.try_number, 1)):
        token = derive_idempotency_token(*chain, generation=generation, base=payload.get("idempotency_token"))
        run = hook.get_run(post({**payload, "idempotency_token": token}), include_history=repairing)
        if ti.try_number <= 1 or run.start_time / 1000 >= _this_try_began(hook, try_started):
            return run
        if not run.state.is_terminal:
            log.info("Reattaching to Databricks run %s, started by an earlier try", run.run_id)
            return run
        if run.state.is_successful(allow_success_with_failures=allow_success_with_failures):
            log.info("Databricks run %s of an earlier try already succeeded", run.run_id)
            return run
        log.info("Databricks run %s of an earlier try ended %s", run.run_id, run.state.outcome)
        if repairing and is_repairable(run, allow_success_with_failures=allow_success_with_failures):
            return repair(hook, run, repair_parameters or {})
    raise DatabricksError(
        f"Every earlier run of this task ended unsuccessfully and no fresh run could be started "
        f"after {ti.try_number} token generations; is the workspace's clock far from Airflow's?"
    )


def _this_try_began(hook: DatabricksHook, try_started: float) -> float:
    """The earliest a run of this try can have started, on the workspace's clock."""
    earliest = hook.earliest_workspace_time(try_started)
    if earliest is None:
        return try_started - UNDATED_MARGIN_SECONDS
    return earliest - DATED_MARGIN_SECONDS


def repair(hook: DatabricksHook, run: Run, parameters: Mapping[str, Any], rerun: list[str] | None = None) -> Run:
    """Repair an earlier try's failed run and return it, active again.

    A new try calls this only for a run that has ended, so a repair requested by a try
    whose worker died is reattached to while it runs; once it ended, the next repair
    names it as ``latest_repair_id``.
    """
    body = repair_request(run, parameters, rerun)
    log.info("Repairing Databricks run %s: rerunning %s", run.run_id, ", ".join(body["rerun_tasks"]))
    try:
        repair_id = hook.repair_run(body)
    except DatabricksApiError:
        # A request whose answer was lost is sent again and refused (the run is active
        # again, or latest_repair_id is stale): the first one went through.
        current = hook.get_run(run.run_id, include_history=True)
        if current.repair_ids == run.repair_ids:
            raise
        log.info("Databricks run %s is already under repair %s", run.run_id, current.repair_ids[-1])
        return current
    log.info("Repair %s of Databricks run %s started", repair_id, run.run_id)
    return hook.get_run(run.run_id, include_history=True)


def stop_run(
    hook: DatabricksHook,
    why: str,
    run_id: int | None,
    in_flight: dict[str, Any] | None,
    post: Callable[[DatabricksHook, dict[str, Any]], int],
) -> bool:
    """Cancel the run of a try that ends for good; False when it could not be (logged: the
    task's own error is the one to report, and Airflow's on_kill after a timeout tries again).

    ``in_flight`` is a POST that went out and whose answer never came: sent again, the same
    token names the run it started, or starts the run here, to be cancelled at once.
    """
    try:
        if run_id is None and in_flight is not None:
            run_id = post(hook, in_flight)
        if run_id is not None:
            log.warning("%s: cancelling Databricks run %s", why, run_id)
            hook.cancel_run(run_id)
    except DatabricksError as exc:
        log.error("%s, but its Databricks run could not be cancelled: %s", why, exc)
        return False
    return True
