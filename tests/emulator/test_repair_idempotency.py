"""idempotency_token and jobs/runs/repair."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.emulator.conftest import Api, notebook, task

if TYPE_CHECKING:
    from airflow_dbx.emulator import Emulator


def test_same_token_returns_the_first_run_and_starts_nothing(emu: Emulator, api: Api) -> None:
    body = {"run_name": "x", "idempotency_token": "tok-1", "notebook_task": notebook()}
    first = api.submit(body)
    assert api.submit(body) == first
    api.wait(first)
    assert api.submit(body) == first  # also once that run ended
    assert [r["run_id"] for r in emu.runs()] == [first]
    assert emu.run(first)["idempotency_token"] == "tok-1"
    assert emu.counters["idempotent_replays"] == 2
    assert api.submit(dict(body, idempotency_token="tok-2")) != first


def test_run_now_honours_the_token(emu: Emulator, api: Api) -> None:
    job_id = emu.create_job({"name": "j", "tasks": [task("a")]})
    first = api.ok(api.post("jobs/run-now", {"job_id": job_id, "idempotency_token": "t"}))["run_id"]
    assert api.ok(api.post("jobs/run-now", {"job_id": job_id, "idempotency_token": "t"}))["run_id"] == first
    assert len(emu.runs()) == 1


def test_token_over_64_characters_is_refused(emu: Emulator, api: Api) -> None:
    response = api.post(
        "jobs/runs/submit", {"run_name": "x", "idempotency_token": "t" * 65, "notebook_task": notebook()}
    )
    assert response.status_code == 400
    assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "idempotency_token" in response.json()["message"]
    assert emu.runs() == []
    assert api.submit({"run_name": "x", "idempotency_token": "t" * 64, "notebook_task": notebook()})


def _failed_run(api: Api) -> dict:
    run_id = api.submit(
        {
            "run_name": "etl",
            "tasks": [
                task("extract"),
                task("transform", "extract", emulator_fail_attempts=1, emulator_error="flaky"),
                task("load", "transform"),
            ],
        }
    )
    return api.wait(run_id)


def test_repair_reruns_failed_and_dependent_tasks_until_success(api: Api) -> None:
    run = _failed_run(api)
    before = {t["task_key"]: t for t in run["tasks"]}
    assert run["state"]["result_state"] == "FAILED"
    assert before["load"]["state"]["result_state"] == "UPSTREAM_FAILED"

    repair = api.ok(
        api.post(
            "jobs/runs/repair",
            {
                "run_id": run["run_id"],
                "rerun_tasks": ["transform"],
                "rerun_dependent_tasks": True,
                "notebook_params": {"emulator_duration": "15"},  # 0.3 s: long enough to see it run
            },
        )
    )
    assert api.run(run["run_id"])["state"]["life_cycle_state"] in ("RUNNING", "TERMINATING")
    after_run = api.wait(run["run_id"], include_history="true")
    after = {t["task_key"]: t for t in after_run["tasks"]}
    assert after_run["state"]["result_state"] == "SUCCESS"
    assert after["extract"] == before["extract"]  # not rerun
    for key in ("transform", "load"):
        assert after[key]["run_id"] != before[key]["run_id"]
        assert after[key]["attempt_number"] == before[key]["attempt_number"] + 1
        assert after[key]["state"]["result_state"] == "SUCCESS"
    history = after_run["repair_history"]
    assert [h["type"] for h in history] == ["ORIGINAL", "REPAIR"]
    assert "id" not in history[0] and history[1]["id"] == repair["repair_id"]
    assert history[0]["state"]["result_state"] == "FAILED"
    assert history[1]["state"]["result_state"] == "SUCCESS"
    assert set(history[1]["task_run_ids"]) == {after["transform"]["run_id"], after["load"]["run_id"]}
    assert set(history[0]["task_run_ids"]) == {t["run_id"] for t in before.values()}
    # the first attempt's output is still there
    old = api.ok(api.get("jobs/runs/get-output", run_id=before["transform"]["run_id"]))
    assert old["error"] == "flaky"
    assert "repair_history" not in api.run(run["run_id"])  # only with include_history


def test_rerun_all_failed_tasks_without_dependents_leaves_them_skipped(api: Api) -> None:
    run = _failed_run(api)
    api.ok(api.post("jobs/runs/repair", {"run_id": run["run_id"], "rerun_all_failed_tasks": True}))
    after = {t["task_key"]: t for t in api.wait(run["run_id"])["tasks"]}
    # every non-successful task is rerun: transform now succeeds and load runs after it
    assert after["transform"]["attempt_number"] == 1
    assert after["load"]["attempt_number"] == 1
    assert after["load"]["state"]["result_state"] == "SUCCESS"


def test_repair_checks_latest_repair_id_and_state(api: Api) -> None:
    run = _failed_run(api)
    run_id = run["run_id"]
    wrong_first = api.post("jobs/runs/repair", {"run_id": run_id, "rerun_tasks": ["transform"], "latest_repair_id": 5})
    assert wrong_first.status_code == 400
    first = api.ok(api.post("jobs/runs/repair", {"run_id": run_id, "rerun_tasks": ["transform"]}))["repair_id"]
    active = api.post("jobs/runs/repair", {"run_id": run_id, "rerun_tasks": ["load"], "latest_repair_id": first})
    assert active.status_code == 400  # still running
    api.wait(run_id)
    missing = api.post("jobs/runs/repair", {"run_id": run_id, "rerun_tasks": ["load"]})
    assert missing.status_code == 400 and "latest_repair_id" in missing.json()["message"]
    stale = api.post("jobs/runs/repair", {"run_id": run_id, "rerun_tasks": ["load"], "latest_repair_id": first + 1})
    assert stale.status_code == 400 and stale.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    second = api.ok(
        api.post("jobs/runs/repair", {"run_id": run_id, "rerun_tasks": ["load"], "latest_repair_id": first})
    )
    assert second["repair_id"] != first
    final = api.wait(run_id, include_history="true")
    assert [h["type"] for h in final["repair_history"]] == ["ORIGINAL", "REPAIR", "REPAIR"]
    assert final["state"]["result_state"] == "SUCCESS"
    unknown = api.post(
        "jobs/runs/repair", {"run_id": run_id, "rerun_tasks": ["nope"], "latest_repair_id": second["repair_id"]}
    )
    assert unknown.status_code == 400 and "nope" in unknown.json()["message"]


def test_repair_overrides_parameters(emu: Emulator, api: Api) -> None:
    job_id = emu.create_job({"name": "j", "tasks": [task("a")]})
    run_id = api.ok(api.post("jobs/run-now", {"job_id": job_id, "notebook_params": {"emulator_result": "FAILED"}}))[
        "run_id"
    ]
    assert api.wait(run_id)["state"]["result_state"] == "FAILED"
    api.ok(
        api.post(
            "jobs/runs/repair",
            {
                "run_id": run_id,
                "rerun_all_failed_tasks": True,
                "notebook_params": {"emulator_result": "SUCCESS"},
            },
        )
    )
    assert api.wait(run_id)["state"]["result_state"] == "SUCCESS"
