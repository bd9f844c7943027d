"""SQL operators on the Statement Execution API: no driver, the hook's retries, the shared wait.

``DatabricksSQLStatementsOperator`` runs one statement (waiting in the worker or deferred),
``DatabricksSqlOperator`` a script of statements in order. Both keep the official
provider's class and argument names. HTTP clients load only when a task runs.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperator

from airflow_dbx import assets, sql_models
from airflow_dbx._run_tasks import LineageMixin, another_try_will_come, retry_args_for_trigger
from airflow_dbx.compat import AirflowTaskTimeout, conf
from airflow_dbx.errors import DatabricksApiError, PayloadError
from airflow_dbx.models import DEFAULT_CONN_ID
from airflow_dbx.payloads import check_positive, check_retry_args, derive_idempotency_token, is_literal
from airflow_dbx.sql_models import marked
from airflow_dbx.trigger import DatabricksSQLStatementExecutionTrigger
from airflow_dbx.waiting import Watcher

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from airflow.sdk import Context

    from airflow_dbx.sql_hook import DatabricksSqlHook
    from airflow_dbx.sql_models import Statement

__all__ = ["XCOM_QUERY_HISTORY_URL", "XCOM_STATEMENT_ID", "DatabricksSQLStatementsOperator"]

log = logging.getLogger("airflow_dbx.operators")

XCOM_STATEMENT_ID = "statement_id"
XCOM_QUERY_HISTORY_URL = "query_history_url"
WAIT_TIMEOUT = "10s"  # the API's own wait: a short statement ends within its execute request
ACTIVE_HISTORY = frozenset({"QUEUED", "RUNNING", "FINISHED"})


def sql_hook_for(task: Any) -> DatabricksSqlHook:
    from airflow_dbx.sql_hook import DatabricksSqlHook

    retrying = (task.databricks_retry_limit, task.databricks_retry_delay, task.databricks_retry_args)
    return DatabricksSqlHook(task.databricks_conn_id, *retrying, caller=type(task).__name__)


def check_common(task: Any) -> None:
    """Checks every SQL task's retry and polling settings at parse time; a deferrable task's
    ``databricks_retry_args`` must also have the JSON form its trigger carries."""
    check_positive("polling_period_seconds", task.polling_period_seconds)
    check_positive("databricks_retry_limit", task.databricks_retry_limit, integer=True)
    check_positive("databricks_retry_delay", task.databricks_retry_delay)
    if task.databricks_retry_args is not None:
        check_retry_args(task.databricks_retry_args, "databricks_retry_args")
        if getattr(task, "deferrable", False):
            retry_args_for_trigger(task.databricks_retry_args)  # refused now, not in the triggerer


def airflow_tags(context: Context, tags: Mapping[str, Any] | None, include: bool) -> dict[str, Any]:
    ti = context["ti"]
    ours = {"airflow_dag_id": ti.dag_id, "airflow_task_id": ti.task_id} if include else {}
    return {**ours, **(tags or {})}


class WarehouseTask(LineageMixin, BaseOperator):
    """What every warehouse-bound SQL task takes: where to run (``warehouse_id``, ``http_path``,
    or a warehouse name: ``sql_endpoint_name`` for operators, ``sql_warehouse_name`` for
    sensors, as in the official provider), the catalog and schema, tags, and how to wait."""

    warehouse_name_field: ClassVar[str] = "sql_endpoint_name"
    ui_color = "#ff7a59"

    def __init__(
        self,
        *,
        databricks_conn_id: str = DEFAULT_CONN_ID,
        http_path: str | None = None,
        sql_endpoint_name: str | None = None,
        sql_warehouse_name: str | None = None,
        warehouse_id: str | None = None,
        catalog: str | None = None,
        schema: str | None = None,
        query_tags: dict[str, str | None] | None = None,
        include_airflow_query_tags: bool = True,
        polling_period_seconds: float = 5,
        databricks_retry_limit: int = 3,
        databricks_retry_delay: float = 1,
        databricks_retry_args: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.databricks_conn_id = databricks_conn_id
        self.http_path = http_path
        self.sql_endpoint_name = sql_endpoint_name
        self.sql_warehouse_name = sql_warehouse_name
        self.warehouse_id = warehouse_id
        self.catalog = catalog
        self.schema = schema
        self.query_tags = query_tags
        self.include_airflow_query_tags = include_airflow_query_tags
        self.polling_period_seconds = polling_period_seconds
        self.databricks_retry_limit = databricks_retry_limit
        self.databricks_retry_delay = databricks_retry_delay
        self.databricks_retry_args = databricks_retry_args
        check_common(self)
        if warehouse_id is not None and is_literal(warehouse_id):
            sql_models.check_warehouse_id(warehouse_id)
        if http_path and is_literal(http_path):
            sql_models.warehouse_id_from_http_path(http_path)

    def lineage_host_url(self) -> str:
        return sql_hook_for(self).host_url

    def lineage_default_names(self) -> tuple[str | None, str | None]:
        return self.catalog, self.schema


def try_marker(context: Context, *parts: object) -> str:
    """The marker of a task's statement: the same in every try of the task instance."""
    ti = context["ti"]
    return derive_idempotency_token(ti.dag_id, ti.task_id, ti.run_id, ti.map_index, *parts)


def start_once(hook: DatabricksSqlHook, context: Context, body: Mapping[str, Any]) -> Statement:
    """Start the statement of ``body`` (its text marked by :func:`try_marker`), or, in a later
    try, reattach to the earlier try's statement with that marker while it is running or
    succeeded, instead of running the SQL twice."""
    ti = context["ti"]
    marker = sql_models.marker_of(str(body["statement"]))
    if ti.try_number > 1 and marker:
        started = getattr(context.get("dag_run"), "start_date", None)
        since_ms = int((started.timestamp() if started else time.time() - 86_400) * 1000)
        for earlier in hook.find_statements(marker, str(body["warehouse_id"]), since_ms)[:1]:
            if earlier.get("status") in ACTIVE_HISTORY:
                log.info("Reattaching to Databricks SQL statement %s of an earlier try", earlier["query_id"])
                return hook.get_statement(str(earlier["query_id"]))
    return hook.execute_statement(body)


def run_sql(
    task: Any,
    context: Context,
    statement: str,
    parameters: Any = None,
    limit: int | None = None,
    *,
    once_as: tuple[object, ...] | None = None,
) -> list[dict[str, Any]]:
    """Run one statement of a warehouse-bound task (``DatabricksSqlOperator``, the SQL sensors,
    ``DatabricksCopyIntoOperator``) in the worker: its rows as dicts, at most ``limit``.

    The task names its warehouse by ``warehouse_id``, ``http_path`` or the name in the
    attribute ``warehouse_name_field`` names; it has the hook, polling and tag arguments.
    With ``once_as`` (what tells this statement from the task's others), a later try
    reattaches to this statement (:func:`start_once`); without, every call runs it anew, as a
    sensor's pokes must.
    """
    hook = sql_hook_for(task)
    name_field = task.warehouse_name_field
    warehouse_id = hook.resolve_warehouse(task.warehouse_id, task.http_path, getattr(task, name_field), name_field)
    tags = airflow_tags(context, task.query_tags, task.include_airflow_query_tags)
    # The marker also finds a lost request's statement in the query history.
    marker = try_marker(context, *once_as) if once_as is not None else derive_idempotency_token(uuid.uuid4().hex)
    body = {
        "statement": marked(sql_models.check_statement(statement, "sql"), marker),
        "warehouse_id": warehouse_id,
        "catalog": task.catalog or None,
        "schema": task.schema or None,
        "parameters": sql_models.normalise_parameters(parameters) or None,
        "wait_timeout": WAIT_TIMEOUT,
        "query_tags": sql_models.query_tag_list(tags) or None,
    }
    body = {k: v for k, v in body.items() if v is not None}
    started = start_once(hook, context, body) if once_as is not None else hook.execute_statement(body)
    watcher = Watcher(task.polling_period_seconds, deadline=time.time() + task.timeout)
    leave = once_as is not None and another_try_will_come(task, context["ti"])
    try:
        ended = hook.see_through(started, watcher, leave_on_api_error=leave)
    except TimeoutError as exc:
        raise AirflowTaskTimeout(str(exc)) from None
    task.remember(statement_id=ended.statement_id, state=ended.state.state)
    return sql_models.as_dicts(ended.columns, hook.read_rows(ended, limit) if limit != 0 else [])


class DatabricksSQLStatementsOperator(LineageMixin, BaseOperator):
    """Run one SQL statement on a SQL warehouse (``POST /api/2.0/sql/statements``).

    The statement id and its query history link go to XCom before waiting. A retried task
    reattaches to its previous try's statement while that one is running or succeeded
    (found in the query history by a marker comment this operator puts in front of the
    statement) instead of running the SQL twice. The first ``max_xcom_rows`` rows of the
    result, read across its chunks, are returned (pushed to XCom) as a list of dicts.
    ``timeout`` and ``execution_timeout`` cancel the statement, as do ``on_kill`` and a
    user's stop while deferred.

    :param statement: the SQL (templated; a ``.sql`` file too), with ``:name`` parameter markers.
    :param parameters: ``[{"name", "value", "type"}]`` (or a ``{name: value}`` mapping).
    :param max_xcom_rows: how many result rows to return, at least 0 (default 100).
    :param disposition: ``INLINE`` (default) or ``EXTERNAL_LINKS`` for large results.
    :param emit_assets: when the statement succeeds, record an asset event
        (``databricks://HOST/catalog/schema/table``) for each table it writes, through an asset
        alias in ``outlets``, so DAGs scheduled on those tables run. Needs the OpenLineage SQL parser.
    """

    template_fields: Sequence[str] = (
        "statement", "warehouse_id", "catalog", "schema", "parameters", "databricks_conn_id", "query_tags",
    )
    template_ext: Sequence[str] = (".sql",)
    template_fields_renderers: ClassVar[dict[str, str]] = {"statement": "sql", "parameters": "json"}
    ui_color = "#ff7a59"

    def __init__(
        self,
        statement: str,
        warehouse_id: str,
        *,
        catalog: str | None = None,
        schema: str | None = None,
        parameters: list[dict[str, Any]] | None = None,
        databricks_conn_id: str = DEFAULT_CONN_ID,
        polling_period_seconds: float = 30,
        databricks_retry_limit: int = 3,
        databricks_retry_delay: float = 1,
        databricks_retry_args: dict[str, Any] | None = None,
        wait_for_termination: bool = True,
        timeout: float = 3600,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        query_tags: dict[str, str | None] | None = None,
        include_airflow_query_tags: bool = True,
        max_xcom_rows: int = 100,
        disposition: str = "INLINE",
        emit_assets: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.emit_assets = emit_assets
        self._asset_alias = assets.alias_name(self.dag_id, self.task_id)
        if emit_assets:
            from airflow.sdk import AssetAlias

            self.outlets = [*self.outlets, AssetAlias(self._asset_alias)]
        self.statement = statement
        self.warehouse_id = warehouse_id
        self.catalog = catalog
        self.schema = schema
        self.parameters = parameters
        self.databricks_conn_id = databricks_conn_id
        self.polling_period_seconds = polling_period_seconds
        self.databricks_retry_limit = databricks_retry_limit
        self.databricks_retry_delay = databricks_retry_delay
        self.databricks_retry_args = databricks_retry_args
        self.wait_for_termination = wait_for_termination
        self.timeout = timeout
        self.deferrable = deferrable
        self.query_tags = query_tags
        self.include_airflow_query_tags = include_airflow_query_tags
        self.max_xcom_rows = sql_models.check_row_bound(max_xcom_rows, "max_xcom_rows")
        if disposition not in ("INLINE", "EXTERNAL_LINKS"):
            raise PayloadError("disposition", f"must be INLINE or EXTERNAL_LINKS, got {disposition!r}")
        self.disposition = disposition
        self.statement_id: str | None = None
        check_common(self)
        check_positive("timeout", timeout)
        self._check(literal_only=True)

    def _check(self, *, literal_only: bool) -> None:
        """Refuse a bad statement, warehouse id or parameter list, at parse time when literal."""
        known = is_literal if literal_only else (lambda value: True)
        if known(self.statement) and not str(self.statement).endswith(tuple(self.template_ext)):
            sql_models.check_statement(self.statement)
            if self.emit_assets and known(self.catalog) and known(self.schema):
                assets.written_tables(self.statement, self.catalog, self.schema)
        if known(self.warehouse_id):
            sql_models.check_warehouse_id(self.warehouse_id)
        if known(self.parameters):
            sql_models.normalise_parameters(self.parameters)

    def execute(self, context: Context) -> Any:
        self._check(literal_only=False)
        hook = sql_hook_for(self)
        statement = self._start(hook, context)
        self.statement_id = statement.statement_id
        self.remember(statement_id=statement.statement_id)
        history_url = f"{hook.host_url}/sql/history?queryId={statement.statement_id}"
        log.info("Databricks SQL statement %s: %s", statement.statement_id, history_url)
        if self.do_xcom_push:
            context["ti"].xcom_push(key=XCOM_STATEMENT_ID, value=statement.statement_id)
            context["ti"].xcom_push(key=XCOM_QUERY_HISTORY_URL, value=history_url)
        if not self.wait_for_termination:
            return statement.statement_id
        end_time = time.time() + self.timeout
        if not statement.state.is_terminal and self.deferrable:
            self.defer(
                trigger=DatabricksSQLStatementExecutionTrigger(
                    statement_id=statement.statement_id,
                    databricks_conn_id=self.databricks_conn_id,
                    end_time=end_time,
                    polling_period_seconds=self.polling_period_seconds,
                    retry_limit=self.databricks_retry_limit,
                    retry_delay=self.databricks_retry_delay,
                    retry_args=retry_args_for_trigger(self.databricks_retry_args),
                    caller=type(self).__name__,
                ),
                method_name="execute_complete",
            )
        if not statement.state.is_terminal:
            try:
                statement = self._wait(hook, statement.statement_id, end_time)
            except DatabricksApiError:
                if not another_try_will_come(self, context["ti"]):
                    log.warning("The task failed with no try left: cancelling statement %s", statement.statement_id)
                    hook.cancel_statement(statement.statement_id)
                raise
        return self._finish(hook, statement, context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        self.statement_id = event["statement_id"]
        if event.get("timed_out"):
            raise AirflowTaskTimeout(
                f"Databricks SQL statement {event['statement_id']} was cancelled: its timeout passed"
            )
        hook = sql_hook_for(self)
        self.remember(statement_id=event["statement_id"])
        return self._finish(hook, hook.get_statement(event["statement_id"]), context)

    def on_kill(self) -> None:
        if self.statement_id is not None:
            log.info("Task killed: cancelling Databricks SQL statement %s", self.statement_id)
            sql_hook_for(self).cancel_statement(self.statement_id)

    def _body(self, context: Context, marker: str) -> dict[str, Any]:
        tags = airflow_tags(context, self.query_tags, self.include_airflow_query_tags)
        body = {
            "statement": marked(self.statement, marker),
            "warehouse_id": self.warehouse_id,
            "catalog": self.catalog,
            "schema": self.schema,
            "parameters": sql_models.normalise_parameters(self.parameters) or None,
            "disposition": self.disposition,
            "format": "JSON_ARRAY",
            "wait_timeout": WAIT_TIMEOUT,
            "on_wait_timeout": "CONTINUE",
            "query_tags": sql_models.query_tag_list(tags) or None,
        }
        return {key: value for key, value in body.items() if value is not None}

    def _start(self, hook: DatabricksSqlHook, context: Context) -> Statement:
        return start_once(hook, context, self._body(context, try_marker(context)))

    def _wait(self, hook: DatabricksSqlHook, statement_id: str, end_time: float) -> Statement:
        watcher = Watcher(self.polling_period_seconds, deadline=end_time)
        try:
            ended = hook.wait_for_statement(statement_id, watcher)
        except AirflowTaskTimeout:
            log.warning("Execution timeout: cancelling Databricks SQL statement %s", statement_id)
            hook.cancel_statement(statement_id)
            raise
        if ended is None:
            hook.cancel_statement(statement_id)
            raise AirflowTaskTimeout(f"Databricks SQL statement {statement_id} was cancelled: its timeout passed")
        return ended

    def lineage_host_url(self) -> str:
        return sql_hook_for(self).host_url

    def lineage_query(self) -> str | None:
        return self.statement if isinstance(self.statement, str) else None

    def lineage_default_names(self) -> tuple[str | None, str | None]:
        return self.catalog, self.schema

    def _finish(self, hook: DatabricksSqlHook, statement: Statement, context: Context) -> list[dict[str, Any]]:
        self.statement_id = None
        failed = not statement.state.is_successful
        self.remember(state=statement.state.state, error=statement.report() if failed else None)
        if failed:
            raise sql_models.DatabricksSqlFailed(statement)
        if self.emit_assets:
            written = assets.written_tables(self.statement, self.catalog, self.schema)
            uris = assets.emit_table_events(context, self._asset_alias, hook.host_url, written)
            log.info("Asset events for %s", ", ".join(uris))
        rows = hook.read_rows(statement, self.max_xcom_rows) if self.max_xcom_rows else []
        log.info("Databricks SQL statement %s succeeded: %s rows", statement.statement_id, statement.total_row_count)
        return sql_models.as_dicts(statement.columns, rows)
