"""A local Databricks Jobs API (2.2, and the same routes under 2.1) for tests, demos and DAG development.

    from airflow_dbx.emulator import Emulator

    with Emulator(time_scale=0.05) as emu:
        os.environ["AIRFLOW_CONN_DATABRICKS_DEFAULT"] = emu.conn_uri()
        ...  # point a hook or an operator at it

``python -m airflow_dbx.emulator`` (or ``airflow-dbx-emulator``) serves it from the command
line; the admin API under ``/__emulator__/`` drives it from another process (see ``admin``),
and ``pytest_plugins = ["airflow_dbx.emulator.pytest_plugin"]`` gives tests fixtures.

Per-task behaviour
------------------
What a task run does is read from its parameters. They are gathered, later ones winning,
from the task's own ``notebook_task.base_parameters``, ``python_wheel_task.named_parameters``,
``sql_task.parameters``, ``key=value`` items of ``spark_python_task`` / ``spark_jar_task`` /
``spark_submit_task`` / ``python_wheel_task`` ``parameters``; then the job's ``parameters``
defaults; then a run-now's or a repair's ``job_parameters``, ``notebook_params``,
``python_named_params``, ``sql_params`` and ``key=value`` items of ``python_params``,
``jar_params``, ``spark_submit_params`` (these apply to every task of the run):

``emulator_duration``
    Seconds the task is RUNNING (default 2).
``emulator_result``
    SUCCESS (default), FAILED, TIMEDOUT, CANCELED or INTERNAL_ERROR.
``emulator_error`` / ``emulator_error_trace``
    The error and trace runs/get-output reports for a task that did not succeed.
``emulator_output``
    ``notebook_output.result`` of a notebook task (cut and ``truncated`` over 5 MB).
``emulator_fail_attempts``
    N: attempts 0 .. N-1 of the task fail, later attempts (repairs) follow the rest.

Timeline: a run is PENDING for 0.3 s of setup, each task PENDING 0.2 s once its upstream
tasks ended, RUNNING for its duration, TERMINATING 0.2 s. Every duration, and
``timeout_seconds`` of a run or a task, is multiplied by ``time_scale`` at the moment the
run (or the repair) starts. A cancel leaves the run (or the task run, for a task run id)
TERMINATING for ``cancel_terminating_seconds`` (0.5, not scaled). A task's ``max_retries``,
``min_retry_interval_millis`` and ``retry_on_timeout`` retry failed attempts (the next
attempt shows WAITING_FOR_RETRY meanwhile); ``disabled: true`` skips it (DISABLED). A job
allows ``max_concurrent_runs`` active runs (default 1): beyond that a run-now is QUEUED when
the job (or the run-now) enables ``queue``, else SKIPPED (MAXIMUM_CONCURRENT_RUNS_REACHED).
Runs and their idempotency tokens are forgotten 60 days after they start; ``runs/delete``
removes a finished run, and its token then answers an error. Unknown run and job ids answer
400 INVALID_PARAMETER_VALUE, as Databricks does. Each ``run_page_url``
(``/jobs/<job_id>/runs/<run_id>``) opens a read-only HTML page of the run.
``benchmarks/EMULATOR.md`` lists what is documented Databricks behaviour and what is the
emulator's choice. ``existing_cluster_id`` must start with ``emulator-`` or be
registered with ``add_cluster``; another id ends the task (and the run) INTERNAL_ERROR.
Jobs are created, reset (every setting replaced), read, listed (``name`` filter, paging) and
deleted as the Jobs API does; a task's ``job_cluster_key`` must name one of the job's
``job_clusters``. ``depends_on`` and ``run_if`` are honoured: a task after a failure is skipped
UPSTREAM_FAILED (life cycle SKIPPED), and a run whose leaf tasks all succeeded despite a
failure ends SUCCESS_WITH_FAILURES. ``runs/get`` shows the latest attempt of each task;
``repair_history`` (with ``include_history=true``) lists every attempt's task run ids.
"""

from __future__ import annotations

from airflow_dbx.emulator.app import RequestRecord
from airflow_dbx.emulator.server import DEFAULT_TOKEN, Emulator

__all__ = ["DEFAULT_TOKEN", "Emulator", "RequestRecord"]
