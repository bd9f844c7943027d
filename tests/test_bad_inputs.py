"""Bad inputs and the exact error text users see.

One row per mistake a user (or an API, or a proxy in between) can make: the connection, the
operator's arguments, the Jobs API's answers. Every row must end in an error that names the
field or the cause -- raised when the operator is built if the value is literal -- never a
bare requests / aiohttp / KeyError traceback, and must leave nothing running in the workspace.
Rows marked xfail are bugs (the reason says where); they turn green when the code is fixed.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from airflow_dbx import compat, errors, models, payloads
from airflow_dbx.auth import InvalidConnectionError
from airflow_dbx.hook import DatabricksHook
from airflow_dbx.operators import (
    DatabricksCopyIntoOperator,
    DatabricksCreateJobsOperator,
    DatabricksNotebookOperator,
    DatabricksRunNowOperator,
    DatabricksSqlOperator,
    DatabricksSQLStatementsOperator,
    DatabricksStartWarehouseOperator,
    DatabricksSubmitRunOperator,
    DatabricksWorkflowTaskGroup,
)
from airflow_dbx.sensors import DatabricksPartitionSensor
from airflow_dbx.trigger import DatabricksRunTrigger
from tests.integration.conftest import TryContext

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_dbx.emulator import Emulator

CLUSTER = "emulator-cluster"
# Runs outlive every row's task by far, so a run a failed task left behind is still active
# when the row checks for one (a leaked short run would end by itself before the check).
NOTEBOOK = {"notebook_path": "/Shared/nb", "base_parameters": {"emulator_duration": 36_000}}
QUICK_NOTEBOOK = {"notebook_path": "/Shared/nb", "base_parameters": {"emulator_duration": 1}}
FAST = {"polling_period_seconds": 0.05, "databricks_retry_delay": 0.01}
CLIENT_ID, CLIENT_SECRET = "chaos-client", "oauth-secret-bad-inputs-77"


@dataclass
class Env:
    emu: Emulator
    set_connection: Callable[..., str]

    def conn(self, conn_id: str = "bad", **fields: Any) -> str:
        return self.set_connection(conn_id, **fields)

    def good_conn(self, conn_id: str = "databricks_default") -> str:
        return self.conn(conn_id, host=self.emu.url, password=self.emu.token)

    def job(self, name: str = "nightly") -> int:
        return self.emu.create_job({"name": name, "tasks": [
            {"task_key": "only", "existing_cluster_id": CLUSTER, "notebook_task": {"notebook_path": "/nb"}}]})


def sql_statement(**kwargs: Any) -> DatabricksSQLStatementsOperator:
    kwargs.setdefault("statement", "SELECT 1")
    kwargs.setdefault("warehouse_id", "a1b2c3d4e5f60718")
    return DatabricksSQLStatementsOperator(task_id="bad_sql", **kwargs)


def submit(**kwargs: Any) -> DatabricksSubmitRunOperator:
    kwargs.setdefault("task_id", "bad_input")
    for key, value in FAST.items():
        kwargs.setdefault(key, value)
    if not any(k in kwargs for k in ("json", "tasks", *payloads.SINGLE_TASK_FIELDS)):
        kwargs["notebook_task"] = NOTEBOOK
    if "tasks" not in kwargs and "json" not in kwargs:
        kwargs.setdefault("existing_cluster_id", CLUSTER)
    return DatabricksSubmitRunOperator(**kwargs)


def run_now(**kwargs: Any) -> DatabricksRunNowOperator:
    kwargs.setdefault("task_id", "bad_input")
    for key, value in FAST.items():
        kwargs.setdefault(key, value)
    return DatabricksRunNowOperator(**kwargs)


def execute(op: Any) -> Any:
    return op.execute(TryContext())


def submit_with(env: Env, conn_id: str, **fields: Any) -> Any:
    """A good operator against a bad connection: what users see when their task runs."""
    env.conn(conn_id, **fields)
    return execute(submit(databricks_conn_id=conn_id, databricks_retry_limit=2))


def api_answer(method: str, path: str, count: int = 1, **fault: Any) -> Callable[[Env], Any]:
    def scenario(env: Env) -> Any:
        env.good_conn()
        env.emu.fail_next(method, path, count=count, **fault)
        return execute(submit(databricks_retry_limit=3))

    return scenario


def trigger_events(run_id: int) -> list[dict[str, Any]]:
    async def events() -> Any:
        trigger = DatabricksRunTrigger(run_id=run_id, polling_period_seconds=0.05, retry_delay=0.01)
        return [event.payload async for event in trigger.run()]

    return asyncio.run(events())


def trigger_for(run_id: int) -> Any:
    """A deferred task resumed with its trigger's event: what the user sees of a failed wait."""
    [event] = trigger_events(run_id)
    op = submit(notebook_task=NOTEBOOK, existing_cluster_id=CLUSTER, deferrable=True)
    return op.execute_complete(TryContext(), event)


def row(
    row_id: str,
    scenario: Callable[[Env], Any],
    message: str,
    *,
    at: str = "execute",
    error: type[BaseException] = errors.DatabricksError,
    marks: Any = (),
    answer_ends_run: bool = False,
) -> Any:
    """``at``: "parse" (the operator's constructor raises) or "execute" (running it does).
    ``answer_ends_run``: an injected answer says the run ended while the emulator's run goes
    on; nothing the task sees asks for a cancel, so that run is not counted as left behind."""
    return pytest.param(scenario, message, at, error, answer_ends_run, id=row_id, marks=marks)


SHARED = {"job_cluster_key": "shared", "new_cluster": {"spark_version": "15.4.x-scala2.12", "num_workers": 1}}


def notebook_op(task_id: str = "nb", **kwargs: Any) -> DatabricksNotebookOperator:
    kwargs.setdefault("notebook_path", "/Shared/nb")
    kwargs.setdefault("source", "WORKSPACE")
    return DatabricksNotebookOperator(task_id=task_id, **kwargs)


def in_group(build: Callable[[], Any], **group: Any) -> Callable[[Env], Any]:
    """A workflow group whose tasks ``build`` makes, in a DAG file being parsed."""

    def scenario(env: Env) -> Any:
        from airflow.sdk import DAG

        with DAG("bad_group", schedule=None), DatabricksWorkflowTaskGroup(
            group_id="g", job_clusters=group.get("job_clusters", [SHARED])
        ):
            build()

    return scenario


def cycle() -> None:
    first, second = notebook_op("first", job_cluster_key="shared"), notebook_op("second", job_cluster_key="shared")
    first >> second >> first


def two_jobs_named_alike(env: Env) -> Any:
    env.good_conn()
    env.job("twice")
    env.job("Twice")
    return execute(DatabricksCreateJobsOperator(task_id="jobs", name="twice", tasks=[
        {"task_key": "a", "existing_cluster_id": CLUSTER, "notebook_task": QUICK_NOTEBOOK}]))


HTML_502 = b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>"

ROWS = [
    # ------------------------------------------------------------------ jobs and workflow groups
    row("group-without-tasks", in_group(lambda: None), "g: a DatabricksWorkflowTaskGroup needs at least one task",
        at="parse"),
    row("group-task-keys-collide",
        in_group(lambda: (notebook_op("a.b", job_cluster_key="shared"), notebook_op("a__b", job_cluster_key="shared"))),
        "its task_key 'a__b' is also the key of g.a.b", at="parse"),
    row("group-cycle", in_group(cycle), "depend on each other in a cycle", at="parse"),
    row("group-undefined-job-cluster", in_group(lambda: notebook_op(job_cluster_key="big")),
        "g.nb.job_cluster_key: 'big' is not a job cluster of the group", at="parse"),
    row("group-task-not-databricks",
        in_group(lambda: DatabricksSubmitRunOperator(task_id="plain", notebook_task=NOTEBOOK, existing_cluster_id=CLUSTER)),
        "g.plain: a DatabricksSubmitRunOperator cannot become a Databricks task", at="parse"),
    row("group-trigger-rule-without-run-if",
        in_group(lambda: notebook_op(job_cluster_key="shared", trigger_rule="always")),
        "g.nb.trigger_rule: 'always' has no Databricks run_if", at="parse"),
    row("notebook-both-clusters",
        lambda env: notebook_op(new_cluster={"num_workers": 1}, existing_cluster_id=CLUSTER),
        "new_cluster: give either new_cluster or existing_cluster_id, not both", at="parse"),
    row("notebook-path-not-absolute", lambda env: notebook_op(notebook_path="Shared/nb"),
        "notebook_path: a workspace notebook path must start with /, got 'Shared/nb'", at="parse"),
    row("notebook-source-unknown", lambda env: notebook_op(source="DBFS"),
        "source: expected WORKSPACE or GIT, got 'DBFS'", at="parse"),
    row("notebook-param-not-json", lambda env: notebook_op(notebook_params={"when": object()}),
        "nb.notebook_task.base_parameters.when: a object has no JSON form", at="parse"),
    row("notebook-job-cluster-alone", lambda env: notebook_op(job_cluster_key="shared"),
        "job_cluster_key: only a task of a DatabricksWorkflowTaskGroup runs on a job cluster", at="parse"),
    row("submit-shared-job-clusters",
        lambda env: submit(tasks=[{"task_key": "a", "new_cluster": {"num_workers": 1}, "notebook_task": NOTEBOOK}],
                           job_clusters=[{"job_cluster_key": "shared", "new_cluster": {"num_workers": 1}}]),
        "job_clusters: a one-time run (runs/submit) cannot share job clusters", at="parse"),
    row("submit-task-on-a-job-cluster",
        lambda env: submit(json={"tasks": [{"task_key": "a", "job_cluster_key": "shared", "notebook_task": NOTEBOOK}]}),
        "tasks[0].job_cluster_key: a one-time run (runs/submit) cannot share job clusters", at="parse"),
    row("create-jobs-without-name", lambda env: DatabricksCreateJobsOperator(task_id="jobs", tasks=[]),
        "name: a job needs a non-empty name", at="parse"),
    row("create-jobs-name-of-two-jobs", two_jobs_named_alike,
        "2 Databricks jobs are named 'twice'", error=errors.PayloadError),
    # ------------------------------------------------------------------ the connection
    row("conn-missing-conn-id",
        lambda env: execute(submit(databricks_conn_id="no_such_conn")),
        "The conn_id `no_such_conn` isn't defined", error=Exception),
    row("conn-no-host",
        lambda env: submit_with(env, "nohost", password="dapi-bad-input-1"),
        "no host: set Host to the workspace URL"),
    row("conn-blank-host",
        lambda env: submit_with(env, "blank", host="   ", password="dapi-bad-input-1"),
        "no host: set Host to the workspace URL"),
    row("conn-http-off-loopback",
        lambda env: submit_with(env, "plainhttp", host="http://adb-1.2.azuredatabricks.net", password="dapi-x1"),
        "plain http:// is refused for adb-1.2.azuredatabricks.net: the token would cross the network unencrypted"),
    row("conn-http-private-ip",
        lambda env: submit_with(env, "plainhttp", host="http://10.0.0.5:8080", password="dapi-x1"),
        "plain http:// is refused for 10.0.0.5"),
    row("conn-host-with-path",
        lambda env: submit_with(env, "path", host="https://example.com/api/2.2", password="dapi-x1"),
        "host must be the workspace URL without a path or query, got '/api/2.2' after the host name: "
        "use https://example.com"),
    row("conn-host-with-credentials",
        lambda env: submit_with(env, "creds", host="https://me:pw-in-host@example.com", password="dapi-x1"),
        "host must not carry credentials (user@host): put them in Login/Password"),
    row("conn-host-other-scheme",
        lambda env: submit_with(env, "ftp", host="ftp://example.com", password="dapi-x1"),
        "host scheme 'ftp' is not supported: use https://"),
    row("conn-host-broken-ipv6",
        lambda env: submit_with(env, "v6", host="https://[::1", password="dapi-x1"),
        "host 'https://[::1' is not a valid URL: Invalid IPv6 URL"),
    row("conn-port-out-of-range",
        lambda env: submit_with(env, "port", host="https://example.com", port=70000, password="dapi-x1"),
        "port 70000 is out of range"),
    row("conn-port-disagrees",
        lambda env: submit_with(env, "port2", host="https://example.com:8443", port=443, password="dapi-x1"),
        "the host says port 8443 but the Port field says 443: give one"),
    row("conn-host-with-space",
        lambda env: submit_with(env, "space", host="https://exa mple.com", password="dapi-x1"),
        "Host 'exa mple.com' contains invalid character ' '"),
    row("conn-host-empty-label",
        lambda env: submit_with(env, "label", host="https://example..com", password="dapi-x1"),
        "example..com", error=InvalidConnectionError),
    row("conn-host-with-backslash",
        lambda env: submit_with(env, "slash", host="https://example.com\\evil", password="dapi-x1"),
        "example.com\\evil", error=InvalidConnectionError),
    row("conn-extras-not-json",
        lambda env: submit_with(env, "extras", host=env.emu.url, password=env.emu.token,
                                extra='{"ca_bundle": "/etc/ssl/corp.pem",'),
        "extra",
        marks=pytest.mark.skipif(compat.AIRFLOW_VERSION < (3, 2), reason=(
            "Airflow 3.1 drops an AIRFLOW_CONN_ value whose extra is not JSON before any hook sees it "
            "(the error is then Airflow's: the conn_id isn't defined)"))),
    row("conn-extras-not-an-object",
        lambda env: submit_with(env, "extras2", host="https://example.com", password="dapi-x1",
                                extra={"timeout_seconds": "soon"}),
        "timeout_seconds must be a positive number of seconds, got 'soon'"),
    row("conn-unknown-auth-type",
        lambda env: submit_with(env, "authtype", host="https://example.com", password="dapi-x1",
                                extra={"auth_type": "kerberos"}),
        "unknown auth_type 'kerberos'; valid values: token, basic, oauth-m2m, azure-service-principal, databricks-sdk"),
    row("conn-sdk-mode-without-the-extra",
        lambda env: submit_with(env, "sdk", host=env.emu.url, extra={"auth_type": "databricks-sdk"}),
        "auth_type 'databricks-sdk' needs the databricks-sdk package: pip install 'airflow-dbx[sdk]'"),
    row("conn-oauth-without-secret",
        lambda env: submit_with(env, "oauth", host="https://example.com", login="client-1",
                                extra={"service_principal_oauth": True}),
        "auth_type 'oauth-m2m' needs a client id and secret in Login and Password"),
    row("conn-azure-without-tenant",
        lambda env: submit_with(env, "azure", host="https://example.com", login="client-1", password="s3cr3t-x",
                                extra={"auth_type": "azure-service-principal"}),
        "auth_type 'azure-service-principal' needs the extra 'azure_tenant_id' (a tenant id or domain)"),
    row("conn-no-credentials",
        lambda env: submit_with(env, "nocreds", host="https://example.com"),
        "the connection has no credentials: put a personal access token in Password"),
    row("conn-timeout-zero",
        lambda env: submit_with(env, "timeout", host="https://example.com", password="dapi-x1",
                                extra={"timeout_seconds": 0}),
        "timeout_seconds must be a positive number of seconds, got 0"),
    row("conn-ca-bundle-missing",
        lambda env: submit_with(env, "ca", host="https://example.com", password="dapi-x1",
                                extra={"ca_bundle": "/nonexistent/corp-ca.pem"}),
        "ca_bundle '/nonexistent/corp-ca.pem' is not a readable file"),
    row("conn-proxies-not-json",
        lambda env: submit_with(env, "proxy", host="https://example.com", password="dapi-x1",
                                extra={"proxies": "proxy:3128"}),
        'proxies must be a JSON object such as {"https": "http://proxy:3128"}'),
    row("conn-nothing-listens",
        lambda env: submit_with(env, "closed", host="http://127.0.0.1:9", password="dapi-x1"),
        "POST /api/2.2/jobs/runs/submit failed after 2 attempts: no HTTP answer: connection failed"),
    row("conn-wrong-token-401",
        lambda env: submit_with(env, "wrongtoken", host=env.emu.url, password="dapi-wrong-token-0042"),
        "POST /api/2.2/jobs/runs/submit failed: HTTP 401 UNAUTHENTICATED"),
    row("conn-oauth-wrong-secret",
        lambda env: (env.emu.add_oauth_client(CLIENT_ID, CLIENT_SECRET),
                     submit_with(env, "oauthbad", host=env.emu.url, login=CLIENT_ID, password="not-the-secret-99",
                                 extra={"service_principal_oauth": True})),
        "/oidc/v1/token failed: HTTP 401 invalid_client: Client authentication failed"),
    # ------------------------------------------------------------------ operator arguments
    row("arg-both-cluster-specs",
        lambda env: submit(notebook_task=NOTEBOOK, new_cluster={"num_workers": 1}, existing_cluster_id=CLUSTER),
        "new_cluster: give either new_cluster or existing_cluster_id, not both", at="parse"),
    row("arg-both-cluster-specs-in-a-task",
        lambda env: submit(tasks=[{"task_key": "a", "notebook_task": NOTEBOOK, "new_cluster": {"num_workers": 1},
                                   "existing_cluster_id": CLUSTER}]),
        "tasks[0].new_cluster: give either new_cluster or existing_cluster_id, not both", at="parse"),
    row("arg-nothing-to-run",
        lambda env: submit(json={"run_name": "empty"}),
        "tasks: nothing to run: give tasks, or one of notebook_task, spark_jar_task", at="parse"),
    row("arg-two-task-types",
        lambda env: submit(notebook_task=NOTEBOOK, spark_jar_task={"main_class_name": "Main"}),
        "spark_jar_task: only one task type may be given, got notebook_task and spark_jar_task", at="parse"),
    row("arg-tasks-and-a-task-type",
        lambda env: submit(tasks=[{"task_key": "a", "notebook_task": NOTEBOOK}], notebook_task=NOTEBOOK),
        "notebook_task: give either tasks or a single task type, not both", at="parse"),
    row("arg-tasks-empty",
        lambda env: submit(tasks=[]), "tasks: expected a non-empty list of task objects", at="parse"),
    row("arg-task-not-an-object",
        lambda env: submit(tasks=["notebook"]), "tasks[0]: expected a task object, got str", at="parse"),
    row("arg-job-id-and-job-name",
        lambda env: run_now(job_id=1, job_name="nightly"),
        "job_id: give exactly one of job_id and job_name, not both", at="parse"),
    row("arg-neither-job-id-nor-name",
        lambda env: run_now(notebook_params={"a": "b"}),
        "job_id: give exactly one of job_id and job_name", at="parse"),
    row("arg-job-id-not-a-number",
        lambda env: run_now(job_id="nightly"), "job_id: expected an integer job id, got 'nightly'", at="parse"),
    row("arg-job-id-bool",
        lambda env: run_now(job_id=True), "job_id: expected an integer job id, got True", at="parse"),
    row("arg-unknown-job-name",
        lambda env: (env.good_conn(), env.job("nightly"), execute(run_now(job_name="nightly-typo"))),
        "job_name: no Databricks job is named 'nightly-typo'"),
    row("arg-several-jobs-with-the-name",
        lambda env: (env.good_conn(), env.job("dup"), env.job("dup"), execute(run_now(job_name="dup"))),
        "job_name: 2 Databricks jobs are named 'dup' (ids [1001, 1002]); give job_id instead"),
    row("arg-non-json-object",
        lambda env: submit(notebook_task={"notebook_path": "/x", "base_parameters": {"day": object()}}),
        "json.notebook_task.base_parameters.day: a object has no JSON form; pass a string, number, bool, list or dict",
        at="parse"),
    row("arg-non-json-set",
        lambda env: run_now(job_id=1, notebook_params={"days": {1, 2}}),
        "json.notebook_params.days: a set has no JSON form", at="parse"),
    row("arg-non-json-nan",
        lambda env: submit(timeout_seconds=float("nan")), "json.timeout_seconds: nan has no JSON form", at="parse"),
    row("arg-non-string-key",
        lambda env: run_now(job_id=1, notebook_params={1: "a"}),
        "json.notebook_params.1: keys must be strings, got int", at="parse"),
    row("arg-oversized-notebook-params",
        lambda env: run_now(job_id=1, notebook_params={"k": "v" * 10_001}),
        "notebook_params: 10010 bytes once encoded; the Jobs API takes at most 10000", at="parse"),
    row("arg-oversized-job-parameters",
        lambda env: run_now(job_id=1, job_parameters={f"p{i}": "x" * 100 for i in range(100)}),
        "job_parameters: 11090 bytes once encoded; the Jobs API takes at most 10000", at="parse"),
    row("arg-polling-zero",
        lambda env: submit(polling_period_seconds=0), "polling_period_seconds: expected a positive number, got 0",
        at="parse"),
    row("arg-polling-negative",
        lambda env: run_now(job_id=1, polling_period_seconds=-5),
        "polling_period_seconds: expected a positive number, got -5", at="parse"),
    row("arg-polling-string",
        lambda env: run_now(job_id=1, polling_period_seconds="30"),
        "polling_period_seconds: expected a positive number, got '30'", at="parse"),
    row("arg-retry-limit-zero",
        lambda env: submit(databricks_retry_limit=0), "databricks_retry_limit: expected a positive integer, got 0",
        at="parse"),
    row("arg-retry-limit-negative",
        lambda env: run_now(job_id=1, databricks_retry_limit=-1),
        "databricks_retry_limit: expected a positive integer, got -1", at="parse"),
    row("arg-retry-limit-fraction",
        lambda env: run_now(job_id=1, databricks_retry_limit=2.5),
        "databricks_retry_limit: expected a positive integer, got 2.5", at="parse"),
    row("arg-retry-delay-negative",
        lambda env: run_now(job_id=1, databricks_retry_delay=-1),
        "databricks_retry_delay: expected a positive number, got -1", at="parse"),
    row("arg-retry-args-not-a-dict",
        lambda env: run_now(job_id=1, databricks_retry_args=["stop_after_attempt", 2]),
        "databricks_retry_args", at="parse"),
    row("arg-retry-args-unknown-key",
        lambda env: submit(databricks_retry_args={"stop_after_attempt": 2}),
        "databricks_retry_args: 'stop_after_attempt' not tenacity.Retrying arguments", at="parse"),
    row("arg-json-string-not-json",
        lambda env: submit(json="{'notebook_task': {}}"),
        "json: a string that is not JSON (Expecting property name enclosed in double quotes at position 1)",
        at="parse"),
    row("arg-json-string-of-a-list",
        lambda env: submit(json="[1, 2]"), "json: expected a JSON object, got list", at="parse"),
    row("arg-json-number",
        lambda env: submit(json=5), "json: expected a dict or a JSON string, got int", at="parse"),
    row("arg-idempotency-token-too-long",
        lambda env: submit(idempotency_token="t" * 65),
        "idempotency_token: expected a string of 1 to 64 characters", at="parse"),
    row("arg-idempotency-token-empty",
        lambda env: submit(idempotency_token=""),
        "idempotency_token: expected a string of 1 to 64 characters", at="parse"),
    # ------------------------------------------------------------------ SQL arguments (issue 15)
    row("sql-empty-statement",
        lambda env: sql_statement(statement="   "), "statement: must be a non-empty SQL statement", at="parse"),
    row("sql-parameter-not-name-value",
        lambda env: sql_statement(parameters=[{"key": "a", "value": "1"}]),
        "parameters: each parameter must be {'name': ..., 'value': ...}", at="parse"),
    row("sql-parameter-duplicate-name",
        lambda env: sql_statement(parameters=[{"name": "a", "value": "1"}, {"name": "a", "value": "2"}]),
        "parameters: the parameter name 'a' is given twice", at="parse"),
    row("sql-warehouse-id-not-a-string",
        lambda env: sql_statement(warehouse_id=1234), "warehouse_id: must be a warehouse id (a non-empty string)",
        at="parse"),
    row("sql-row-bound-below-zero",
        lambda env: sql_statement(max_xcom_rows=-1), "max_xcom_rows: must be an integer of at least 0", at="parse"),
    row("sql-partition-table-name-not-an-identifier",
        lambda env: DatabricksPartitionSensor(task_id="p", table_name="sales; DROP TABLE x", partitions={"d": "1"}),
        "table_name: must be [catalog.][schema.]table", at="parse"),
    row("sql-partition-table-name-four-parts",
        lambda env: DatabricksPartitionSensor(task_id="p", table_name="a.b.c.d", partitions={"d": "1"}),
        "table_name: must be [catalog.][schema.]table", at="parse"),
    row("sql-copy-into-unknown-file-format",
        lambda env: DatabricksCopyIntoOperator(task_id="c", table_name="t", file_location="s3://b/x", file_format="XLSX"),
        "file_format: must be one of CSV, JSON, PARQUET, AVRO, ORC, TEXT, BINARYFILE, got 'XLSX'", at="parse"),
    row("sql-statement-retry-args-lambda-deferrable",
        lambda env: sql_statement(deferrable=True, databricks_retry_args={"before_sleep": lambda state: None}),
        "databricks_retry_args['before_sleep']: <function <lambda>", at="parse"),
    row("sql-statement-retry-args-unknown-key",
        lambda env: sql_statement(databricks_retry_args={"attempts": 2}),
        "databricks_retry_args: 'attempts' not tenacity.Retrying arguments", at="parse"),
    row("sql-operator-retry-args-not-a-dict",
        lambda env: DatabricksSqlOperator(task_id="s", sql="SELECT 1", warehouse_id="w1",
                                          databricks_retry_args=["stop_after_attempt", 2]),
        "databricks_retry_args: must be a dict of tenacity.Retrying arguments, got list", at="parse"),
    row("sql-warehouse-retry-args-lambda-deferrable",
        lambda env: DatabricksStartWarehouseOperator(task_id="w", warehouse_id="w1", deferrable=True,
                                                     databricks_retry_args={"retry": lambda state: True}),
        "databricks_retry_args['retry']: <function <lambda>", at="parse"),
    row("sql-copy-into-table-name-not-an-identifier",
        lambda env: DatabricksCopyIntoOperator(task_id="c", table_name="1x", file_location="s3://b/x", file_format="CSV"),
        "table_name: must be [catalog.][schema.]table", at="parse"),
    # ------------------------------------------------------------------ API answers
    row("api-403-on-submit",
        api_answer("POST", "jobs/runs/submit", status=403, body={
            "error_code": "PERMISSION_DENIED", "message": "User chaos@example.com cannot create runs here."}),
        "POST /api/2.2/jobs/runs/submit failed: HTTP 403 PERMISSION_DENIED: User chaos@example.com cannot create runs"),
    row("api-400-refused-payload",
        lambda env: (env.good_conn(), execute(submit(tasks=[
            {"task_key": "a", "existing_cluster_id": CLUSTER, "notebook_task": NOTEBOOK,
             "depends_on": [{"task_key": "ghost"}]}]))),
        "POST /api/2.2/jobs/runs/submit failed: HTTP 400 INVALID_PARAMETER_VALUE: Invalid value for 'tasks[0].depends_on': "
        "task 'a' depends on unknown task 'ghost'"),
    row("api-404-on-the-run-while-waiting",
        api_answer("GET", "jobs/runs/get", count=2, status=404, body={
            "error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Run 1000001 does not exist."}),
        "GET /api/2.2/jobs/runs/get failed: HTTP 404 RESOURCE_DOES_NOT_EXIST: Run 1000001 does not exist."),
    # An unknown run id: Databricks (and the emulator) answer 400 INVALID_PARAMETER_VALUE, not 404.
    row("api-unknown-run-in-the-trigger",
        lambda env: (env.good_conn(), trigger_for(424242)),
        "Lost track of Databricks run 424242: GET /api/2.2/jobs/runs/get failed: HTTP 400 "
        "INVALID_PARAMETER_VALUE: Run 424242 does not exist."),
    row("api-malformed-json-body",
        api_answer("POST", "jobs/runs/submit", status=200, body=b'{"run_id": 10'),
        'POST /api/2.2/jobs/runs/submit failed: HTTP 200: a non-JSON body: {"run_id": 10'),
    row("api-json-list-body",
        api_answer("GET", "jobs/runs/get", status=200, body=b"[1, 2]"),
        "GET /api/2.2/jobs/runs/get failed: HTTP 200: a JSON list instead of an object: [1, 2]"),
    row("api-html-error-page-502",
        api_answer("POST", "jobs/runs/submit", count=3, status=502, body=HTML_502),
        "POST /api/2.2/jobs/runs/submit failed after 3 attempts: HTTP 502: a non-JSON body: <html><head><title>"
        "502 Bad Gateway</title>"),
    row("api-html-login-page-200",
        api_answer("GET", "jobs/runs/get", status=200, body=b"<html><body>Sign in to the corporate proxy</body></html>"),
        "GET /api/2.2/jobs/runs/get failed: HTTP 200: a non-JSON body: <html><body>Sign in to the corporate proxy"),
    row("api-empty-body-500",
        api_answer("POST", "jobs/runs/submit", count=3, status=500, body=b""),
        "POST /api/2.2/jobs/runs/submit failed after 3 attempts: HTTP 500: an empty body"),
    row("api-429-throughout",
        api_answer("POST", "jobs/runs/submit", count=3, status=429, retry_after=0.01),
        "POST /api/2.2/jobs/runs/submit failed after 3 attempts: HTTP 429 REQUEST_LIMIT_EXCEEDED"),
    row("api-empty-body-200-on-submit",
        api_answer("POST", "jobs/runs/submit", status=200, body=b""),
        "run_id"),
    row("api-run-now-answer-without-run-id",
        lambda env: (env.good_conn(), env.emu.fail_next("POST", "jobs/run-now", status=200, body={"number_in_job": 3}),
                     execute(run_now(job_id=env.job()))),
        "run_id"),
    row("api-runs-get-answer-without-run-id",
        api_answer("GET", "jobs/runs/get", status=200, body={"status": {"state": "RUNNING"}}),
        "run_id"),
    row("api-terminal-result-added-later",
        api_answer("GET", "jobs/runs/get", count=50, status=200, body={
            "run_id": 1000001, "state": {"life_cycle_state": "TERMINATED", "result_state": "EXCLUDED",
                                         "state_message": "Excluded by a newer API feature"}}),
        "Databricks run 1000001 ended EXCLUDED: Excluded by a newer API feature", error=errors.DatabricksRunFailed,
        answer_ends_run=True),
]


@pytest.fixture
def env(emulator: Emulator, set_connection: Callable[..., str]) -> Env:
    return Env(emulator, set_connection)


# A run being cancelled passes through TERMINATING: its end was asked for, so it is not left behind.
_ENDING = frozenset({"TERMINATED", "TERMINATING", "SKIPPED", "INTERNAL_ERROR"})


def left_running(emu: Emulator) -> list[int]:
    """The runs still active, and not being cancelled, by the emulator's own record, now."""
    return [
        run["run_id"] for run in emu.runs()
        if ((run.get("status") or {}).get("state") or run["state"]["life_cycle_state"]) not in _ENDING
    ]


@pytest.mark.parametrize(("scenario", "message", "at", "error", "answer_ends_run"), ROWS)
def test_bad_input_ends_in_a_clear_error(
    env: Env, scenario: Any, message: str, at: str, error: type, answer_ends_run: bool
) -> None:
    if at == "parse":
        # The mistake is literal: the DAG file must fail when it is parsed, not when it runs.
        with pytest.raises(errors.PayloadError) as caught:
            scenario(env)
    else:
        with pytest.raises(error) as caught:
            scenario(env)
    exc = caught.value
    assert message in str(exc), f"{type(exc).__name__}: {exc}"
    # The message users read comes from this package or Airflow, never a bare library exception.
    assert type(exc).__module__.split(".")[0] in ("airflow_dbx", "airflow"), f"{type(exc).__module__}: {exc!r}"
    assert not isinstance(exc, (KeyError, TypeError, AttributeError))
    if not answer_ends_run:
        assert left_running(env.emu) == [], "the task ended for good and left its run running"
    env.emu.clear_faults()


def test_row_count() -> None:
    assert len(ROWS) >= 40


def test_unknown_top_level_json_keys_are_passed_through_unchanged(env: Env) -> None:
    env.good_conn()
    # API fields this package has no name for: they reach Databricks as given.
    future = {"performance_target": "PERFORMANCE_OPTIMIZED", "budget_policy_id": "bp-1", "usage_policy_id": "up-1"}
    op = submit(json={"notebook_task": QUICK_NOTEBOOK, "existing_cluster_id": CLUSTER, **future})
    payload = op.build_payload(DatabricksHook())
    assert {k: payload[k] for k in future} == future
    sent: list[dict[str, Any]] = []
    real_submit = DatabricksHook.submit_run

    def spy(hook: DatabricksHook, body: Any) -> int:
        sent.append(json.loads(json.dumps(body)))
        return real_submit(hook, body)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DatabricksHook, "submit_run", spy)
        run_id = execute(op)
    assert {k: sent[0][k] for k in future} == future
    assert models.RunState.from_dict(env.emu.run(run_id)).is_successful()


def test_a_key_the_api_does_not_know_reaches_it_and_its_refusal_names_the_key(env: Env) -> None:
    env.good_conn()
    op = submit(json={"notebook_task": QUICK_NOTEBOOK, "existing_cluster_id": CLUSTER, "x_new": {"n": [1, 2]}})
    with pytest.raises(errors.DatabricksApiError, match=r"HTTP 400 MALFORMED_REQUEST: .*unknown field 'x_new'"):
        execute(op)
    assert env.emu.runs() == []


def test_neither_cluster_spec_is_serverless_and_accepted(env: Env) -> None:
    """A notebook task without a cluster runs on serverless compute: not a mistake."""
    env.good_conn()
    run_id = execute(DatabricksSubmitRunOperator(task_id="serverless", notebook_task=QUICK_NOTEBOOK, **FAST))
    assert models.RunState.from_dict(env.emu.run(run_id)).is_successful()


@pytest.mark.parametrize("deferrable", [False, True])
def test_a_life_cycle_state_added_later_is_waited_through(env: Env, deferrable: bool) -> None:
    """A state this package does not know is not terminal: wait on, and end with the real result."""
    env.good_conn()
    env.emu.fail_next("GET", "jobs/runs/get", count=4, status=200, body={
        "run_id": 1000001, "status": {"state": "HIBERNATING"}})
    if deferrable:
        (event,) = trigger_events(DatabricksHook().submit_run(
            {"run_name": "r", "tasks": [{"task_key": "a", "existing_cluster_id": CLUSTER, "notebook_task": QUICK_NOTEBOOK}]}))
        assert event["successful"] is True
    else:
        execute(submit(notebook_task=QUICK_NOTEBOOK))
    (run,) = env.emu.runs()
    assert models.RunState.from_dict(run).is_successful()
    assert sum(r.fault == "status" for r in env.emu.requests) == 4
