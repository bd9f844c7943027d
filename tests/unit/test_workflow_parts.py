"""The pure parts of jobs as code and workflow groups: task keys, job settings, repair parameters."""

from __future__ import annotations

import pytest

from airflow_dbx import payloads
from airflow_dbx._workflow_runs import repair_parameters
from airflow_dbx.errors import PayloadError
from airflow_dbx.models import Run
from airflow_dbx.outcome import repair_request
from airflow_dbx.task_operators import task_key_for


def test_task_keys_are_stable_api_safe_and_at_most_100_characters() -> None:
    assert task_key_for("extract") == "extract"
    assert task_key_for("inner.load data") == "inner__load_data"
    long_id = "x" * 150
    key = task_key_for(long_id)
    assert len(key) == 100 and key == task_key_for(long_id)
    assert key != task_key_for("x" * 149 + "y")


def test_job_settings_need_a_name_and_defined_job_clusters() -> None:
    with pytest.raises(PayloadError, match="name: a job needs a non-empty name"):
        payloads.validate_job_settings({"tasks": [{"task_key": "a"}]})
    with pytest.raises(PayloadError, match=r"tasks\[0\]\.job_cluster_key: 'big' is not defined in job_clusters"):
        payloads.validate_job_settings({"name": "j", "tasks": [{"task_key": "a", "job_cluster_key": "big"}]})
    with pytest.raises(PayloadError, match=r"job_clusters\[1\]\.job_cluster_key: 's' is defined twice"):
        payloads.job_cluster_keys([{"job_cluster_key": "s"}, {"job_cluster_key": "s"}])
    payloads.validate_job_settings({"name": "j", "tasks": [{"task_key": "a", "job_cluster_key": payloads.UNRENDERED}]})


def test_a_repair_resends_the_runs_parameters_and_names_only_the_task() -> None:
    run = Run.from_dict({
        "run_id": 7,
        "state": {"life_cycle_state": "TERMINATED", "result_state": "FAILED"},
        "overriding_parameters": {"python_params": ["a=1"], "job_parameters": {"ignored": "x"}},
        "job_parameters": [{"name": "day", "default": "mon", "value": "fri"}, {"name": "region", "default": "eu"}],
        "repair_history": [{"type": "ORIGINAL"}, {"type": "REPAIR", "id": 41}],
        "tasks": [{"task_key": "b", "run_id": 8, "state": {"life_cycle_state": "TERMINATED", "result_state": "FAILED"}}],
    })
    params = repair_parameters(run)
    assert params == {"python_params": ["a=1"], "job_parameters": {"day": "fri", "region": "eu"}}
    body = repair_request(run, params, rerun=["b"])
    assert body == {
        "run_id": 7, "rerun_tasks": ["b"], "rerun_dependent_tasks": True, "latest_repair_id": 41, **params,
    }
