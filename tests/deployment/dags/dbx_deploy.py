"""The Databricks DAGs the deployment tests drive through the REST API, against the emulator.

Each Databricks run is named ``<dag id>/<dag run id>/<task id>``, so a test finds its runs in
the emulator; ``dag_run.conf`` sets the emulated durations.
"""

from __future__ import annotations

import datetime

from airflow.sdk import DAG

from airflow_dbx.operators import (
    DatabricksNotebookOperator,
    DatabricksSubmitRunOperator,
    DatabricksWorkflowTaskGroup,
)

START = datetime.datetime(2026, 1, 1)
RUN_NAME = "{{ ti.dag_id }}/{{ ti.run_id }}/{{ ti.task_id }}"
CLUSTER = "emulator-deployment"


def notebook(duration: str, result: str = "SUCCESS") -> dict[str, object]:
    return {
        "notebook_path": "/Shared/deployment",
        "base_parameters": {"emulator_duration": duration, "emulator_result": result},
    }


def submit(task_id: str, duration: str, *, deferrable: bool, result: str = "SUCCESS", **kwargs: object) -> None:
    DatabricksSubmitRunOperator(
        task_id=task_id,
        run_name=RUN_NAME,
        existing_cluster_id=CLUSTER,
        notebook_task=notebook(duration, result),
        deferrable=deferrable,
        polling_period_seconds=2,
        **kwargs,
    )


# 1. Five waits at once with one worker slot; the same with deferrable=False, as the contrast.
with DAG(dag_id="dbx_parallel_deferrable", start_date=START, schedule=None, catchup=False):
    for number in range(5):
        submit(f"run_{number}", "{{ dag_run.conf.get('duration', 30) }}", deferrable=True)

with DAG(dag_id="dbx_parallel_blocking", start_date=START, schedule=None, catchup=False):
    for number in range(3):
        submit(f"run_{number}", "{{ dag_run.conf.get('duration', 10) }}", deferrable=False)

# 2./3. Triggers that outlive their triggerer: each task must end with its run's true result.
with DAG(dag_id="dbx_triggerer_handover", start_date=START, schedule=None, catchup=False):
    for number in range(2):
        submit(f"succeeds_{number}", "{{ dag_run.conf.get('duration', 25) }}", deferrable=True)
    submit("fails", "{{ dag_run.conf.get('duration', 25) }}", deferrable=True, result="FAILED")

# 4. A user marks the waiting task failed, then clears it: the first run is long, the next short.
with DAG(dag_id="dbx_user_stop", start_date=START, schedule=None, catchup=False):
    submit("long_run", "{{ 120 if ti.try_number == 1 else 3 }}", deferrable=True)

# 5. The worker dies while the task waits in it; the retry reattaches to the same run.
with DAG(dag_id="dbx_worker_dies", start_date=START, schedule=None, catchup=False):
    submit(
        "blocking_wait",
        "{{ dag_run.conf.get('duration', 40) }}",
        deferrable=False,
        retries=1,
        retry_delay=datetime.timedelta(seconds=1),
    )

# 6. A workflow group whose middle task fails at its first attempt: the user clears it (and its
# downstream task) and the same Databricks job run is repaired.
SHARED = {"job_cluster_key": "shared", "new_cluster": {"spark_version": "15.4.x-scala2.12", "num_workers": 1}}
with (
    DAG(dag_id="dbx_workflow_repair", start_date=START, schedule=None, catchup=False),
    DatabricksWorkflowTaskGroup(group_id="flow", job_clusters=[SHARED]),
):
    steps = [
        DatabricksNotebookOperator(
            task_id=task_id,
            notebook_path=f"/Shared/{task_id}",
            source="WORKSPACE",
            job_cluster_key="shared",
            notebook_params={"emulator_duration": "3", **params},
            deferrable=task_id == "b",
            polling_period_seconds=2,
        )
        for task_id, params in (("a", {}), ("b", {"emulator_fail_attempts": "1"}), ("c", {}))
    ]
    steps[0] >> steps[1] >> steps[2]

# 7. Seeded chaos through the real deployment: each task's duration and result come from the
# test's plan in dag_run.conf; the emulator's faults are injected while the tasks wait.
CHAOS_TASKS = 4
with DAG(dag_id="dbx_deploy_chaos", start_date=START, schedule=None, catchup=False):
    for number in range(CHAOS_TASKS):
        submit(
            f"chain_{number}",
            "{{ dag_run.conf['plan'][ti.task_id]['duration'] }}",
            deferrable=True,
            result="{{ dag_run.conf['plan'][ti.task_id]['result'] }}",
        )

# 8. The Celery deployment: twenty waits spread over two triggerers and four worker slots; ten
# waits (every third run fails) for a triggerer that dies holding some of them.
with DAG(dag_id="dbx_fan_out", start_date=START, schedule=None, catchup=False):
    for number in range(20):
        submit(f"run_{number:02d}", "{{ dag_run.conf.get('duration', 60) }}", deferrable=True)

with DAG(dag_id="dbx_triggerer_dies", start_date=START, schedule=None, catchup=False):
    for number in range(10):
        outcome = "FAILED" if number % 3 == 2 else "SUCCESS"
        submit(f"wait_{number}", "{{ dag_run.conf.get('duration', 60) }}", deferrable=True, result=outcome)
