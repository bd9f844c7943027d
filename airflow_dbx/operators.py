"""The Databricks run operators: one contract for ``runs/submit`` and ``run-now``.

Both operators build a request body the same way (named parameters merged over ``json``,
normalised and validated), start or reattach to exactly one run per task try chain, then
return at once, wait in the worker, or defer to :class:`DatabricksRunTrigger`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperator

from airflow_dbx import payloads
from airflow_dbx._run_tasks import (
    XCOM_JOB_ID,
    XCOM_NOTEBOOK_OUTPUT,
    XCOM_RUN_ID,
    XCOM_RUN_PAGE_URL,
    DatabricksRunLink,
    LineageMixin,
    another_try_will_come,
    hook_for,
    inject_parent_job_info,
    lazy_exports,
    publish_run,
    raise_if_lost,
    report_outcome,
    retry_args_for_trigger,
    wants_parent_job_info,
)
from airflow_dbx.compat import AirflowTaskTimeout, conf
from airflow_dbx.models import DEFAULT_CONN_ID
from airflow_dbx.payloads import is_literal
from airflow_dbx.trigger import DatabricksRunTrigger

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    from airflow.sdk import Context

    from airflow_dbx.hook import DatabricksHook
    from airflow_dbx.models import Run

__all__ = [
    "XCOM_JOB_ID", "XCOM_NOTEBOOK_OUTPUT", "XCOM_RUN_ID", "XCOM_RUN_PAGE_URL", "DatabricksRunLink",
    "DatabricksRunNowOperator", "DatabricksRunOperatorBase", "DatabricksSubmitRunOperator", "is_literal",
]
# Operator families of their own modules (which build on this one), loaded on first use.
__getattr__ = lazy_exports(__name__, {
    "sql_operators": ("DatabricksSQLStatementsOperator",),
    "sql_batch": ("DatabricksCopyIntoOperator", "DatabricksSqlOperator"),
    "warehouse_operators": ("DatabricksStartWarehouseOperator", "DatabricksStopWarehouseOperator"),
    "jobs_operators": ("DatabricksCreateJobsOperator",),
    "task_operators": ("DatabricksNotebookOperator", "DatabricksTaskBaseOperator", "DatabricksTaskOperator"),
    "workflow": ("DatabricksWorkflowTaskGroup",),
})

log = logging.getLogger(__name__)

# Named parameters whose request field name BaseOperator takes (``queue``: the executor queue).
_PAYLOAD_KEY = {"databricks_queue": "queue"}


class DatabricksRunOperatorBase(LineageMixin, BaseOperator):
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
    :param openlineage_inject_parent_job_info: pass the task's OpenLineage identity to the run
        (Spark conf of its new clusters; job parameters of a run-now without task parameters),
        never over a value already set. ``None``: the ``[openlineage] spark_inject_parent_job_info``
        option. Needs the OpenLineage provider.
    """

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
        databricks_conn_id: str = DEFAULT_CONN_ID,
        polling_period_seconds: float = 30,
        databricks_retry_limit: int = 3,
        databricks_retry_delay: float = 1,
        databricks_retry_args: dict[str, Any] | None = None,
        idempotency_token: str | None = None,
        wait_for_termination: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        allow_success_with_failures: bool = False,
        repair_on_retry: bool = False,
        openlineage_inject_parent_job_info: bool | None = None,
        named: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        payloads.check_positive("polling_period_seconds", polling_period_seconds)
        payloads.check_positive("databricks_retry_limit", databricks_retry_limit, integer=True)
        payloads.check_positive("databricks_retry_delay", databricks_retry_delay)
        if databricks_retry_args is not None:
            payloads.check_retry_args(databricks_retry_args, "databricks_retry_args")
            if deferrable:
                retry_args_for_trigger(databricks_retry_args)  # refused now, not in the triggerer
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
        self.openlineage_inject_parent_job_info = openlineage_inject_parent_job_info
        for name in self.named_fields:
            setattr(self, name, (named or {}).get(name))
        self._run_id: int | None = None  # the run this try must not leave behind
        self._in_flight: dict[str, Any] | None = None  # a POST sent, its answer not yet read
        self._check_at_parse_time()

    # ------------------------------------------------------------------ payload

    def _named_values(self) -> dict[str, Any]:
        return {_PAYLOAD_KEY.get(name, name): getattr(self, name) for name in self.named_fields}

    def _named_with_token(self) -> dict[str, Any]:
        return {"idempotency_token": self.idempotency_token, **self._named_values()}

    def _check_at_parse_time(self) -> None:
        """Validate what is already known, so a literal mistake fails the DAG file, not the run."""
        if isinstance(self.json, str) and self.json.endswith(tuple(self.template_ext)):
            return  # a template file, read when the task runs
        payloads.check_literals(self.json, self._named_with_token(), self.validate_payload)

    def validate_payload(self, payload: Mapping[str, Any]) -> None:
        """Refuse a body the endpoint would refuse; subclasses say how."""
        raise NotImplementedError

    def build_payload(self, hook: DatabricksHook) -> dict[str, Any]:
        """The request body after rendering: merged, normalised, validated."""
        payload = payloads.normalise_payload(payloads.merge_payload(self.json, self._named_with_token()))
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
        if wants_parent_job_info(self.openlineage_inject_parent_job_info):
            payload = inject_parent_job_info(payload, context)
        with self._leaving_no_run(context):
            run = self._start(hook, payload, context)
            self.remember(run_id=run.run_id, job_id=run.job_id, run_page_url=run.run_page_url)
            publish_run(context, run, push=self.do_xcom_push)
            if not self.wait_for_termination:
                return run.run_id
            if not run.state.is_terminal and self.deferrable:
                self._defer(context, run)
            run = self._wait(hook, run)
            self._run_id = None  # it ended
            outcome = hook.summarise(run, allow_success_with_failures=self.allow_success_with_failures)
        self.remember_run_outcome(outcome)
        return report_outcome(context, outcome, push=self.do_xcom_push)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> int:
        """Resume after the trigger fired: its event carries the run's outcome."""
        if event.get("timed_out"):  # the trigger cancelled the run
            raise AirflowTaskTimeout(
                f"Databricks run {event['run_id']} was cancelled: the task's execution_timeout "
                f"passed while it waited. Run page: {event.get('run_page_url') or 'unknown'}"
            )
        self._run_id = event["run_id"]
        self.remember(run_id=event["run_id"], run_page_url=event.get("run_page_url"))
        with self._leaving_no_run(context):
            raise_if_lost(event)
            self._run_id = None
        self.remember_run_outcome(event)
        return report_outcome(context, event, push=self.do_xcom_push)

    def on_kill(self) -> None:
        self._cancel("Task killed")

    def lineage_host_url(self) -> str:
        return self._hook().host_url

    @contextlib.contextmanager
    def _leaving_no_run(self, context: Context) -> Iterator[None]:
        """Cancel this try's run when the task fails for good or times out; a run that another
        try will reattach to is left running."""
        try:
            yield
        except AirflowTaskTimeout:
            self._cancel("Execution timeout")
            raise
        except Exception:
            if not another_try_will_come(self, context["ti"]):
                self._cancel("The task failed with no try left")
            raise

    def _cancel(self, why: str) -> None:
        from airflow_dbx._starting import stop_run  # run time only, like the hook

        if stop_run(self._hook(), why, self._run_id, self._in_flight, self.post):
            self._run_id = self._in_flight = None

    def _post(self, hook: DatabricksHook, body: dict[str, Any]) -> int:
        self._in_flight = body
        self._run_id = self.post(hook, body)
        self._in_flight = None
        return self._run_id

    def _start(self, hook: DatabricksHook, payload: dict[str, Any], context: Context) -> Run:
        from airflow_dbx._starting import start_or_reattach  # run time only, like the hook

        ti = context["ti"]
        if ti.try_number <= 1:
            self.before_fresh_start(hook, payload)
        return start_or_reattach(
            hook,
            ti,
            payload,
            lambda body: self._post(hook, body),
            allow_success_with_failures=self.allow_success_with_failures,
            repair_parameters=self.repair_parameters(payload) if self.repair_on_retry else None,
        )

    def _defer(self, context: Context, run: Run) -> None:
        deadline = None
        if self.execution_timeout is not None:
            start = context["ti"].start_date
            deadline = (start.timestamp() if start else time.time()) + self.execution_timeout.total_seconds()
        self.defer(
            trigger=DatabricksRunTrigger(
                **self.trigger_target(run),
                databricks_conn_id=self.databricks_conn_id,
                polling_period_seconds=self.polling_period_seconds,
                retry_limit=self.databricks_retry_limit,
                retry_delay=self.databricks_retry_delay,
                retry_args=retry_args_for_trigger(self.databricks_retry_args),
                deadline=deadline,
                run_page_url=run.run_page_url,
                allow_success_with_failures=self.allow_success_with_failures,
                waiting_since=run.attempt_start_time / 1000 or None,
            ),
            method_name="execute_complete",
        )

    def trigger_target(self, run: Run) -> dict[str, Any]:  # a workflow task names its task in the group's run
        return {"run_id": run.run_id}

    def _wait(self, hook: DatabricksHook, run: Run) -> Run:
        from airflow_dbx.waiting import Watcher

        started = run.attempt_start_time / 1000
        waited = max(time.time() - started, 0.0) if started else 0.0
        ended = hook.wait_for_run(run.run_id, Watcher(self.polling_period_seconds, waited=waited))
        assert ended is not None  # no deadline: only the run's end stops the wait
        return ended


class DatabricksSubmitRunOperator(DatabricksRunOperatorBase):
    """Submit a one-time run (``POST /api/2.2/jobs/runs/submit``) and wait for it.

    Give the run as ``json`` (the endpoint's body), as named parameters, or both: named
    parameters override the top-level keys of ``json``. Either ``tasks``, or one task type
    (``notebook_task``, ``spark_jar_task``, ...) with its cluster, says what runs; the
    single-task form is sent as a one-task ``tasks`` list. The request's ``queue`` field is
    ``databricks_queue`` here, since ``queue`` is Airflow's executor queue. Returns the run id.
    """

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
        payloads.validate_submit(payload)

    def build_payload(self, hook: DatabricksHook) -> dict[str, Any]:
        payload = super().build_payload(hook)
        payload.setdefault("run_name", self.task_id)
        return payloads.to_tasks_form(payload, payload["run_name"])

    def post(self, hook: DatabricksHook, payload: dict[str, Any]) -> int:
        return hook.submit_run(payload)


class DatabricksRunNowOperator(DatabricksRunOperatorBase):
    """Run an existing job now (``POST /api/2.2/jobs/run-now``) and wait for it.

    Name the job by ``job_id`` or ``job_name`` (looked up at run time; it must match exactly
    one job). Parameters given as lists or maps are sent as strings, as the API types them.
    ``cancel_previous_runs`` cancels the job's active runs before the first try starts its
    run; a retry that reattaches to its own run never cancels it. Returns the run id.
    """

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
        payloads.validate_run_now(payload)

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
        return {name: payload[name] for name in payloads.RUN_NOW_PARAMETER_FIELDS if payload.get(name) is not None}

    def post(self, hook: DatabricksHook, payload: dict[str, Any]) -> int:
        return hook.run_now(payload)
