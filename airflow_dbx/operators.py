"""The Databricks run operators: one contract for ``runs/submit`` and ``run-now``.

Both operators build a request body the same way (named parameters merged over ``json``,
normalised and validated), start or reattach to exactly one run per task try chain, then
return at once, wait in the worker, or defer to :class:`DatabricksRunTrigger`.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperator, BaseOperatorLink

from airflow_dbx import api
from airflow_dbx.compat import AirflowTaskTimeout, conf
from airflow_dbx.trigger import DatabricksRunTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.sdk.types import TaskInstanceKey  # type: ignore[attr-defined,unused-ignore]  # 3.2+

    from airflow_dbx.hook import DatabricksHook

log = logging.getLogger(__name__)

# A run that started before this try did belongs to an earlier try; the margin absorbs clock
# skew between Airflow and the workspace (tries are apart by at least the retry delay).
_CLOCK_SKEW_SECONDS = 1.0

XCOM_RUN_ID = "run_id"
XCOM_JOB_ID = "job_id"
XCOM_RUN_PAGE_URL = "run_page_url"
XCOM_NOTEBOOK_OUTPUT = "notebook_output"

# Named parameters whose request field name is taken by BaseOperator (``queue`` is the
# executor queue there).
_PAYLOAD_KEY = {"databricks_queue": "queue"}


class DatabricksRunLink(BaseOperatorLink):
    """The "Databricks run" button on a task: the run page URL pushed to XCom at submission."""

    name = "Databricks run"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        return XCom.get_value(ti_key=ti_key, key=XCOM_RUN_PAGE_URL) or ""


def is_literal(value: Any) -> bool:
    """True when ``value`` is final at DAG parse time: no template and no XComArg inside."""
    if isinstance(value, str):
        return "{{" not in value and "{%" not in value
    if isinstance(value, Mapping):
        return all(is_literal(k) and is_literal(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(is_literal(item) for item in value)
    # XComArg and the other values Airflow resolves at run time have ``resolve``.
    return not callable(getattr(value, "resolve", None))


def hook_for(task: Any) -> DatabricksHook:
    """The hook of a task built from its ``databricks_*`` arguments (the operators' and the sensor's)."""
    # Imported here: DAG files load this module, and only running tasks need HTTP clients.
    from airflow_dbx.hook import DatabricksHook

    return DatabricksHook(
        task.databricks_conn_id,
        retry_limit=task.databricks_retry_limit,
        retry_delay=task.databricks_retry_delay,
        retry_args=task.databricks_retry_args,
        caller=type(task).__name__,
    )


def publish_run(context: Context, run: api.Run, *, push: bool) -> None:
    """Log the run page and, when ``push``, put the run's identity in XCom (the extra link reads it)."""
    log.info("Databricks run %s: %s", run.run_id, run.run_page_url)
    if push:
        ti = context["ti"]
        ti.xcom_push(key=XCOM_RUN_ID, value=run.run_id)
        ti.xcom_push(key=XCOM_JOB_ID, value=run.job_id)
        ti.xcom_push(key=XCOM_RUN_PAGE_URL, value=run.run_page_url)


def summarise_ended_run(hook: DatabricksHook, run: api.Run, allow_success_with_failures: bool) -> dict[str, Any]:
    """The outcome of a run that ended, as the trigger's event carries it (outputs read here)."""
    successful = run.state.is_successful(allow_success_with_failures=allow_success_with_failures)
    outputs = {
        task.run_id: api.patiently(functools.partial(hook.get_run_output, task.run_id))
        for task in api.output_targets(run, successful=successful)
    }
    return api.summarise_run(run, outputs, allow_success_with_failures=allow_success_with_failures)


class DatabricksRunOperatorBase(BaseOperator):
    """What both operators share; subclasses name their endpoint and parameters.

    :param json: the request body as a dict or a JSON string (or a ``.json`` template file).
        Named parameters are merged over it and win; ``None`` means "not given".
    :param databricks_conn_id: the Airflow connection to the workspace.
    :param polling_period_seconds: the longest wait between two status checks. Checks start
        a second after submission and space out as the run goes on.
    :param databricks_retry_limit: attempts per API call before giving up.
    :param databricks_retry_delay: base of the exponential backoff between attempts, seconds.
    :param databricks_retry_args: tenacity arguments (``stop``, ``wait``) replacing the above.
    :param idempotency_token: the token of the first run; by default one is derived from the
        task instance, so a retried request never starts a second run.
    :param wait_for_termination: wait for the run to end (default), or return once it started.
    :param deferrable: wait in the triggerer instead of the worker.
    :param allow_success_with_failures: count a SUCCESS_WITH_FAILURES run as a success.
    :param repair_on_retry: when a new try finds that an earlier try's run failed or timed out
        in a task, repair that run (``jobs/runs/repair``: rerun its unsuccessful tasks and those
        downstream of them) instead of starting a fresh run. A cancelled run is replaced.
    """

    endpoint: ClassVar[api.Endpoint]
    named_fields: ClassVar[tuple[str, ...]] = ()
    template_fields: Sequence[str] = ("json", "databricks_conn_id", "idempotency_token")
    template_ext: Sequence[str] = (".json",)
    template_fields_renderers: ClassVar[dict[str, str]] = {"json": "json"}
    operator_extra_links = (DatabricksRunLink(),)
    ui_color = "#ff7a59"

    def __init__(
        self,
        *,
        json: Mapping[str, Any] | str | None = None,
        databricks_conn_id: str = api.DEFAULT_CONN_ID,
        polling_period_seconds: float = 30,
        databricks_retry_limit: int = 3,
        databricks_retry_delay: float = 1,
        databricks_retry_args: dict[str, Any] | None = None,
        idempotency_token: str | None = None,
        wait_for_termination: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        allow_success_with_failures: bool = False,
        repair_on_retry: bool = False,
        named: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        api.check_positive("polling_period_seconds", polling_period_seconds)
        api.check_positive("databricks_retry_limit", databricks_retry_limit, integer=True)
        api.check_positive("databricks_retry_delay", databricks_retry_delay)
        if databricks_retry_args is not None:
            api.check_retry_args(databricks_retry_args, "databricks_retry_args")
        self.json = json
        self.databricks_conn_id = databricks_conn_id
        self.polling_period_seconds = polling_period_seconds
        self.databricks_retry_limit = databricks_retry_limit
        self.databricks_retry_delay = databricks_retry_delay
        self.databricks_retry_args = databricks_retry_args
        self.idempotency_token = idempotency_token
        self.wait_for_termination = wait_for_termination
        self.deferrable = deferrable
        self.allow_success_with_failures = allow_success_with_failures
        self.repair_on_retry = repair_on_retry
        for name in self.named_fields:
            setattr(self, name, (named or {}).get(name))
        self._run_id: int | None = None
        self._check_at_parse_time()

    # ------------------------------------------------------------------ payload

    def _named_values(self) -> dict[str, Any]:
        return {_PAYLOAD_KEY.get(name, name): getattr(self, name) for name in self.named_fields}

    def _check_at_parse_time(self) -> None:
        """Validate what is already known, so a literal mistake fails the DAG file, not the run."""
        if not is_literal(self.json) or (
            isinstance(self.json, str) and self.json.endswith(tuple(self.template_ext))
        ):
            return
        known = {"idempotency_token": self.idempotency_token, **self._named_values()}
        payload = api.merge_payload(self.json, {k: v if is_literal(v) else api.UNRENDERED for k, v in known.items()})
        literal = {k: v for k, v in payload.items() if v is not api.UNRENDERED}
        api.normalise_payload(literal)
        self.validate_payload({**payload, **api.normalise_payload(literal)})

    def validate_payload(self, payload: Mapping[str, Any]) -> None:
        """Refuse a body the endpoint would refuse; subclasses say how."""
        raise NotImplementedError

    def build_payload(self, hook: DatabricksHook) -> dict[str, Any]:
        """The request body after rendering: merged, normalised, validated."""
        named = {"idempotency_token": self.idempotency_token, **self._named_values()}
        payload = api.normalise_payload(api.merge_payload(self.json, named))
        self.validate_payload(payload)
        return payload

    # ------------------------------------------------------------------ execution

    def _hook(self) -> DatabricksHook:
        return hook_for(self)

    def post(self, hook: DatabricksHook, payload: dict[str, Any]) -> int:
        """Start a run; subclasses call their endpoint."""
        raise NotImplementedError

    def before_fresh_start(self, hook: DatabricksHook, payload: Mapping[str, Any]) -> None:
        """Called once per task instance before its first run starts (run-now cancels others here)."""

    def repair_parameters(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """The parameters a repair of this operator's run applies again (run-now's overrides)."""
        return {}

    def execute(self, context: Context) -> int:
        hook = self._hook()
        payload = self.build_payload(hook)
        run = self._start_or_reattach(hook, payload, context)
        self._run_id = run.run_id
        publish_run(context, run, push=self.do_xcom_push)
        if not self.wait_for_termination:
            return run.run_id
        if not run.state.is_terminal and self.deferrable:
            self._defer(context, run)
        try:
            run = self._wait(hook, run)
        except AirflowTaskTimeout:
            log.warning("Execution timeout: cancelling Databricks run %s", run.run_id)
            hook.cancel_run(run.run_id)
            raise
        return self._complete(context, summarise_ended_run(hook, run, self.allow_success_with_failures))

    def execute_complete(self, context: Context, event: dict[str, Any]) -> int:
        """Resume after the trigger fired: its event carries the run's outcome."""
        if event.get("timed_out"):
            raise AirflowTaskTimeout(
                f"Databricks run {event['run_id']} was cancelled: the task's execution_timeout "
                f"passed while it waited. Run page: {event.get('run_page_url') or 'unknown'}"
            )
        return self._complete(context, event)

    def on_kill(self) -> None:
        if self._run_id is not None:
            log.info("Task killed: cancelling Databricks run %s", self._run_id)
            self._hook().cancel_run(self._run_id)

    def _start_or_reattach(self, hook: DatabricksHook, payload: dict[str, Any], context: Context) -> api.Run:
        """Exactly one run per task try chain.

        Run ``n`` of the chain carries token generation ``n``. A new try walks the
        generations: a run still active or already successful is reattached; a run that
        ended otherwise sends it to the next generation, whose POST starts a fresh run -- or,
        with ``repair_on_retry``, is repaired when a task of it failed.
        """
        ti = context["ti"]
        chain = (ti.dag_id, ti.task_id, ti.run_id, ti.map_index)
        if ti.try_number <= 1:
            self.before_fresh_start(hook, payload)
        try_started = ti.start_date.timestamp() if ti.start_date else time.time()
        for generation in range(max(ti.try_number, 1)):
            token = api.derive_idempotency_token(*chain, generation=generation, base=payload.get("idempotency_token"))
            run_id = self.post(hook, {**payload, "idempotency_token": token})
            run = hook.get_run(run_id, include_history=self.repair_on_retry)
            if ti.try_number <= 1 or run.start_time / 1000 >= try_started - _CLOCK_SKEW_SECONDS:
                return run
            if not run.state.is_terminal:
                log.info("Reattaching to Databricks run %s, started by an earlier try", run.run_id)
                return run
            if run.state.is_successful(allow_success_with_failures=self.allow_success_with_failures):
                log.info("Databricks run %s of an earlier try already succeeded", run.run_id)
                return run
            log.info("Databricks run %s of an earlier try ended %s", run.run_id, run.state.outcome)
            allow = self.allow_success_with_failures
            if self.repair_on_retry and api.is_repairable(run, allow_success_with_failures=allow):
                return self._repair(hook, run, payload)
        raise api.DatabricksError(
            f"Every earlier run of this task ended unsuccessfully and no fresh run could be started "
            f"after {ti.try_number} token generations; is the workspace's clock far from Airflow's?"
        )

    def _repair(self, hook: DatabricksHook, run: api.Run, payload: Mapping[str, Any]) -> api.Run:
        """Repair an earlier try's failed run and return it, active again.

        A new try calls this only for a run that has ended, so a repair requested by a try
        whose worker died is reattached to while it runs; once it ended, the next repair
        names it as ``latest_repair_id``.
        """
        body = api.repair_request(run, self.repair_parameters(payload))
        log.info("Repairing Databricks run %s: rerunning %s", run.run_id, ", ".join(body["rerun_tasks"]))
        try:
            repair_id = hook.repair_run(body)
        except api.DatabricksApiError:
            # A request whose answer was lost is sent again and refused (the run is active
            # again, or latest_repair_id is stale): the first one went through.
            current = hook.get_run(run.run_id, include_history=True)
            if current.repair_ids == run.repair_ids:
                raise
            log.info("Databricks run %s is already under repair %s", run.run_id, current.repair_ids[-1])
            return current
        log.info("Repair %s of Databricks run %s started", repair_id, run.run_id)
        return hook.get_run(run.run_id, include_history=True)

    def _defer(self, context: Context, run: api.Run) -> None:
        deadline = None
        if self.execution_timeout is not None:
            start = context["ti"].start_date
            deadline = (start.timestamp() if start else time.time()) + self.execution_timeout.total_seconds()
        self.defer(
            trigger=DatabricksRunTrigger(
                run_id=run.run_id,
                databricks_conn_id=self.databricks_conn_id,
                polling_period_seconds=self.polling_period_seconds,
                retry_limit=self.databricks_retry_limit,
                retry_delay=self.databricks_retry_delay,
                retry_args=self.databricks_retry_args,
                deadline=deadline,
                run_page_url=run.run_page_url,
                allow_success_with_failures=self.allow_success_with_failures,
                waiting_since=run.attempt_start_time / 1000 or None,
            ),
            method_name="execute_complete",
        )

    def _wait(self, hook: DatabricksHook, run: api.Run) -> api.Run:
        started = run.attempt_start_time / 1000
        waited = max(time.time() - started, 0.0) if started else 0.0
        delays = api.poll_delays(self.polling_period_seconds, waited=waited)
        outage = api.PollOutage()
        pause = next(delays)
        throttled = hook.throttled
        while not run.state.is_terminal:
            time.sleep(pause)
            try:
                current = hook.get_run(run.run_id)
            except api.DatabricksApiError as exc:
                pause = outage.failed(exc, time.monotonic())
                # A throttled workspace is routine with many waiters; say so loudly only when it lasts.
                level = logging.WARNING if outage.failures >= 3 else logging.INFO
                log.log(level, "Could not check Databricks run %s (%s); next check in %.0fs", run.run_id, exc, pause)
                continue
            outage.succeeded()
            if current.state.outcome != run.state.outcome:
                log.info("Databricks run %s is %s", current.run_id, current.state.outcome)
            run = current
            pause = outage.pace(next(delays), throttled=hook.throttled > throttled)
            throttled = hook.throttled
        return run

    def _complete(self, context: Context, outcome: Mapping[str, Any]) -> int:
        self._run_id = None
        if outcome.get("notebook_output") is not None and self.do_xcom_push:
            context["ti"].xcom_push(key=XCOM_NOTEBOOK_OUTPUT, value=outcome["notebook_output"])
        if not outcome["successful"]:
            raise api.DatabricksRunFailed(
                outcome["report"], run_id=outcome["run_id"], result_state=outcome["state"]["result_state"]
            )
        log.info("Databricks run %s succeeded", outcome["run_id"])
        return int(outcome["run_id"])


class DatabricksSubmitRunOperator(DatabricksRunOperatorBase):
    """Submit a one-time run (``POST /api/2.2/jobs/runs/submit``) and wait for it.

    Give the run as ``json`` (the endpoint's body), as named parameters, or both: named
    parameters override the top-level keys of ``json``. Either ``tasks``, or one task type
    (``notebook_task``, ``spark_jar_task``, ...) with its cluster, says what runs; the
    single-task form is sent as a one-task ``tasks`` list. The request's ``queue`` field is
    ``databricks_queue`` here, since ``queue`` is Airflow's executor queue. Returns the run id.
    """

    endpoint = api.SUBMIT_RUN
    named_fields = (
        "tasks", "spark_jar_task", "notebook_task", "spark_python_task", "spark_submit_task",
        "python_wheel_task", "pipeline_task", "dbt_task", "sql_task", "new_cluster",
        "existing_cluster_id", "libraries", "run_name", "timeout_seconds", "job_clusters",
        "environments", "git_source", "access_control_list", "databricks_queue",
    )
    template_fields = (*DatabricksRunOperatorBase.template_fields, *named_fields)

    def __init__(
        self,
        *,
        tasks: list[dict[str, Any]] | None = None,
        spark_jar_task: dict[str, Any] | None = None,
        notebook_task: dict[str, Any] | None = None,
        spark_python_task: dict[str, Any] | None = None,
        spark_submit_task: dict[str, Any] | None = None,
        python_wheel_task: dict[str, Any] | None = None,
        pipeline_task: dict[str, Any] | None = None,
        dbt_task: dict[str, Any] | None = None,
        sql_task: dict[str, Any] | None = None,
        new_cluster: dict[str, Any] | None = None,
        existing_cluster_id: str | None = None,
        libraries: list[dict[str, Any]] | None = None,
        run_name: str | None = None,
        timeout_seconds: int | None = None,
        job_clusters: list[dict[str, Any]] | None = None,
        environments: list[dict[str, Any]] | None = None,
        git_source: dict[str, Any] | None = None,
        access_control_list: list[dict[str, Any]] | None = None,
        databricks_queue: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        # Every named parameter is an argument of its own (for readers and type checkers);
        # they travel to the base as one mapping.
        named = {name: value for name, value in locals().items() if name in self.named_fields}
        super().__init__(named=named, **kwargs)

    def validate_payload(self, payload: Mapping[str, Any]) -> None:
        api.validate_submit(payload)

    def build_payload(self, hook: DatabricksHook) -> dict[str, Any]:
        payload = super().build_payload(hook)
        payload.setdefault("run_name", self.task_id)
        return api.to_tasks_form(payload, payload["run_name"])

    def post(self, hook: DatabricksHook, payload: dict[str, Any]) -> int:
        return hook.submit_run(payload)


class DatabricksRunNowOperator(DatabricksRunOperatorBase):
    """Run an existing job now (``POST /api/2.2/jobs/run-now``) and wait for it.

    Name the job by ``job_id`` or ``job_name`` (looked up at run time; it must match exactly
    one job). Parameters given as lists or maps are sent as strings, as the API types them.
    ``cancel_previous_runs`` cancels the job's active runs before the first try starts its
    run; a retry that reattaches to its own run never cancels it. Returns the run id.
    """

    endpoint = api.RUN_NOW
    named_fields = (
        "job_id", "job_name", "notebook_params", "python_params", "python_named_params",
        "jar_params", "spark_submit_params", "sql_params", "dbt_commands", "job_parameters", "databricks_queue",
    )
    template_fields = (*DatabricksRunOperatorBase.template_fields, *named_fields)

    def __init__(
        self,
        *,
        job_id: int | str | None = None,
        job_name: str | None = None,
        notebook_params: dict[str, Any] | None = None,
        python_params: list[Any] | None = None,
        python_named_params: dict[str, Any] | None = None,
        jar_params: list[Any] | None = None,
        spark_submit_params: list[Any] | None = None,
        sql_params: dict[str, Any] | None = None,
        dbt_commands: list[str] | None = None,
        job_parameters: dict[str, Any] | None = None,
        databricks_queue: dict[str, Any] | None = None,
        cancel_previous_runs: bool = False,
        **kwargs: Any,
    ) -> None:
        named = {name: value for name, value in locals().items() if name in self.named_fields}
        super().__init__(named=named, **kwargs)
        self.cancel_previous_runs = cancel_previous_runs

    def validate_payload(self, payload: Mapping[str, Any]) -> None:
        api.validate_run_now(payload)

    def build_payload(self, hook: DatabricksHook) -> dict[str, Any]:
        payload = super().build_payload(hook)
        if payload.get("job_name") is not None:
            payload["job_id"] = hook.find_job_id_by_name(payload.pop("job_name"))
        payload["job_id"] = int(payload["job_id"])
        return payload

    def before_fresh_start(self, hook: DatabricksHook, payload: Mapping[str, Any]) -> None:
        if self.cancel_previous_runs:
            log.info("Cancelling the active runs of job %s", payload["job_id"])
            hook.cancel_all_runs(payload["job_id"])

    def repair_parameters(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        return {name: payload[name] for name in api.RUN_NOW_PARAMETER_FIELDS if payload.get(name) is not None}

    def post(self, hook: DatabricksHook, payload: dict[str, Any]) -> int:
        return hook.run_now(payload)
