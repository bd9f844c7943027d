"""The pure Jobs API vocabulary: state model, payload merge, normalisation, validation."""

from __future__ import annotations

import datetime
import itertools

import pytest

from airflow_dbx import api


def _run(status: dict | None = None, state: dict | None = None, **extra: object) -> dict:
    data: dict = {"run_id": 7, **extra}
    if status is not None:
        data["status"] = status
    if state is not None:
        data["state"] = state
    return data


class TestRunState:
    def test_status_wins_over_deprecated_state(self) -> None:
        state = api.RunState.from_dict(
            _run(
                status={"state": "TERMINATED", "termination_details": {"code": "SUCCESS", "message": "ok"}},
                state={"life_cycle_state": "RUNNING"},
            )
        )
        assert state.is_terminal
        assert state.is_successful()
        assert state.state_message == "ok"

    def test_falls_back_to_deprecated_state(self) -> None:
        state = api.RunState.from_dict(_run(state={"life_cycle_state": "TERMINATED", "result_state": "FAILED"}))
        assert state.is_terminal
        assert not state.is_successful()
        assert state.outcome == "FAILED"

    @pytest.mark.parametrize(
        ("code", "result"),
        [("SUCCESS", "SUCCESS"), ("USER_CANCELED", "CANCELED"), ("RUN_EXECUTION_ERROR", "FAILED"),
         ("SUCCESS_WITH_FAILURES", "SUCCESS_WITH_FAILURES"), ("SOMETHING_NEW", "FAILED")],
    )
    def test_result_derived_from_termination_code(self, code: str, result: str) -> None:
        state = api.RunState.from_dict(_run(status={"state": "TERMINATED", "termination_details": {"code": code}}))
        assert state.result_state == result

    def test_legacy_result_state_is_kept_when_status_is_terminal(self) -> None:
        state = api.RunState.from_dict(
            _run(status={"state": "TERMINATED", "termination_details": {"code": "RUN_EXECUTION_ERROR"}},
                 state={"life_cycle_state": "TERMINATED", "result_state": "TIMEDOUT"})
        )
        assert state.result_state == "TIMEDOUT"

    @pytest.mark.parametrize("life_cycle", ["QUEUED", "PENDING", "RUNNING", "TERMINATING", "BLOCKED", "WAITING"])
    def test_active_states_are_not_terminal(self, life_cycle: str) -> None:
        state = api.RunState.from_dict(_run(status={"state": life_cycle}))
        assert not state.is_terminal
        assert state.is_known

    def test_a_state_added_later_keeps_waiting(self) -> None:
        state = api.RunState.from_dict(_run(status={"state": "HIBERNATING"}))
        assert not state.is_terminal
        assert not state.is_known

    def test_success_with_failures_only_when_allowed(self) -> None:
        state = api.RunState.from_dict(_run(state={"life_cycle_state": "TERMINATED", "result_state": "SUCCESS_WITH_FAILURES"}))
        assert not state.is_successful()
        assert state.is_successful(allow_success_with_failures=True)


class TestFailureReport:
    def test_names_failed_tasks_errors_traces_and_url(self) -> None:
        run = api.Run.from_dict({
            "run_id": 1, "run_page_url": "http://x/#run/1",
            "state": {"life_cycle_state": "TERMINATED", "result_state": "FAILED", "state_message": "1 task failed"},
            "tasks": [
                {"task_key": "ingest", "run_id": 11, "state": {"life_cycle_state": "TERMINATED", "result_state": "SUCCESS"}},
                {"task_key": "clean", "run_id": 12, "state": {"life_cycle_state": "TERMINATED", "result_state": "FAILED"}},
            ],
        })
        trace = "\n".join(f"line {i}" for i in range(30))
        report = api.format_failure_report(run, {12: {"error": "ZeroDivisionError", "error_trace": trace}})
        assert report.splitlines()[0] == "Databricks run 1 ended FAILED: 1 task failed"
        assert "- task clean (FAILED): ZeroDivisionError" in report
        assert "    line 9" in report and "line 10\n" not in report
        assert "(20 more lines)" in report
        assert "ingest" not in report
        assert report.endswith("Run page: http://x/#run/1")


class TestMergeAndNormalise:
    def test_named_parameters_win_and_none_means_not_given(self) -> None:
        merged = api.merge_payload({"run_name": "a", "timeout_seconds": 5}, {"run_name": "b", "timeout_seconds": None})
        assert merged == {"run_name": "b", "timeout_seconds": 5}

    def test_json_string_is_parsed(self) -> None:
        assert api.merge_payload('{"job_id": 3}', {}) == {"job_id": 3}

    @pytest.mark.parametrize(("value", "message"), [("{not json", "json: a string that is not JSON"),
                                                    ("[1, 2]", "json: expected a JSON object, got list"),
                                                    (42, "json: expected a dict or a JSON string, got int")])
    def test_bad_json_names_the_field(self, value: object, message: str) -> None:
        with pytest.raises(api.PayloadError, match=message):
            api.merge_payload(value, {})  # type: ignore[arg-type]

    def test_string_fields_become_strings_and_numbers_stay_numbers(self) -> None:
        payload = api.normalise_payload({
            "timeout_seconds": 60,
            "notebook_params": {"dry_run": True, "limit": 5, "day": datetime.date(2026, 1, 2)},
            "python_params": [1, False, "x"],
            "tasks": [{"notebook_task": {"base_parameters": {"n": 1.5}}, "max_retries": 2}],
        })
        assert payload["timeout_seconds"] == 60
        assert payload["notebook_params"] == {"dry_run": "true", "limit": "5", "day": "2026-01-02"}
        assert payload["python_params"] == ["1", "false", "x"]
        assert payload["tasks"][0] == {"notebook_task": {"base_parameters": {"n": "1.5"}}, "max_retries": 2}

    def test_non_json_value_is_refused_with_its_path(self) -> None:
        with pytest.raises(api.PayloadError, match=r"json\.tasks\[0\]\.notebook_task\.base_parameters\.day: a object"):
            api.normalise_payload({"tasks": [{"notebook_task": {"base_parameters": {"day": object()}}}]})

    def test_nan_is_refused(self) -> None:
        with pytest.raises(api.PayloadError, match="timeout_seconds: nan has no JSON form"):
            api.normalise_payload({"timeout_seconds": float("nan")})

    def test_single_task_form_moves_into_tasks(self) -> None:
        payload = api.to_tasks_form(
            {"run_name": "r", "notebook_task": {"notebook_path": "/p"}, "existing_cluster_id": "c", "timeout_seconds": 9},
            "my task.v2",
        )
        assert payload == {
            "run_name": "r", "timeout_seconds": 9,
            "tasks": [{"task_key": "my_task_v2", "notebook_task": {"notebook_path": "/p"}, "existing_cluster_id": "c"}],
        }


class TestValidation:
    @pytest.mark.parametrize(
        ("payload", "message"),
        [
            ({}, "tasks: nothing to run"),
            ({"notebook_task": {}, "spark_jar_task": {}}, "spark_jar_task: only one task type may be given"),
            ({"tasks": [{}], "notebook_task": {}}, "notebook_task: give either tasks or a single task type"),
            ({"notebook_task": {}, "new_cluster": {}, "existing_cluster_id": "c"}, "new_cluster: give either new_cluster or existing_cluster_id"),
            ({"tasks": [{"new_cluster": {}, "existing_cluster_id": "c"}]}, r"tasks\[0\]\.new_cluster: give either"),
            ({"tasks": []}, "tasks: expected a non-empty list"),
            ({"notebook_task": {}, "idempotency_token": "x" * 65}, "idempotency_token: expected a string of 1 to 64"),
        ],
    )
    def test_submit(self, payload: dict, message: str) -> None:
        with pytest.raises(api.PayloadError, match=message):
            api.validate_submit(payload)

    @pytest.mark.parametrize(
        ("payload", "message"),
        [
            ({}, "job_id: give exactly one of job_id and job_name"),
            ({"job_id": 1, "job_name": "n"}, "job_id: give exactly one of job_id and job_name, not both"),
            ({"job_id": "abc"}, "job_id: expected an integer job id, got 'abc'"),
            ({"job_id": 1, "notebook_params": {"k": "v" * 10_000}}, "notebook_params: 10009 bytes once encoded"),
        ],
    )
    def test_run_now(self, payload: dict, message: str) -> None:
        with pytest.raises(api.PayloadError, match=message):
            api.validate_run_now(payload)

    def test_unrendered_values_pass_structural_checks(self) -> None:
        api.validate_run_now({"job_id": api.UNRENDERED, "notebook_params": api.UNRENDERED})
        api.validate_submit({"tasks": api.UNRENDERED})

    @pytest.mark.parametrize("value", [0, -1, "5", None, True])
    def test_positive(self, value: object) -> None:
        with pytest.raises(api.PayloadError, match="polling_period_seconds: expected a positive number"):
            api.check_positive("polling_period_seconds", value)


class TestTokensAndPolling:
    def test_derived_tokens_fit_the_api_and_differ_by_generation(self) -> None:
        first = api.derive_idempotency_token("dag", "task", "run", -1, generation=0)
        again = api.derive_idempotency_token("dag", "task", "run", -1, generation=0)
        second = api.derive_idempotency_token("dag", "task", "run", -1, generation=1)
        assert first == again != second
        assert len(first) <= api.IDEMPOTENCY_TOKEN_MAX_LENGTH

    def test_users_token_is_generation_zero(self) -> None:
        assert api.derive_idempotency_token("d", generation=0, base="mine") == "mine"
        assert api.derive_idempotency_token("d", generation=1, base="mine") != "mine"

    def test_poll_delays_start_soon_grow_and_cap(self) -> None:
        delays = list(itertools.islice(api.poll_delays(30), 60))
        assert delays[0] <= 1.1
        assert all(1.8 <= d <= 33 for d in delays[1:])
        assert max(delays) > 25
        elapsed, count = 0.0, 0
        for delay in api.poll_delays(30):
            elapsed += delay
            count += 1
            if elapsed >= 60:
                break
        assert count <= 20, "a 60 s run should cost at most 20 status checks"

    def test_poll_delays_resume_where_a_wait_left_off(self) -> None:
        assert 0.9 * 15 <= next(api.poll_delays(30, waited=100)) <= 1.1 * 15


class TestPollOutage:
    @staticmethod
    def error(status: int | None, code: str | None = None) -> api.DatabricksApiError:
        return api.DatabricksApiError(method="GET", endpoint="/api/2.2/jobs/runs/get", status_code=status, error_code=code)

    @pytest.mark.parametrize(("status", "code"), [(429, None), (503, None), (None, None), (400, "COULD_NOT_ACQUIRE_LOCK")])
    def test_passing_failures_pause_longer_each_time(self, status: int | None, code: str | None) -> None:
        outage = api.PollOutage()
        pauses = [outage.failed(self.error(status, code), now=float(i)) for i in range(8)]
        assert 1 <= pauses[0] <= 2
        assert pauses[3] >= 8
        assert max(pauses) <= 2 * outage.cap

    @pytest.mark.parametrize("status", [400, 401, 403, 404])
    def test_errors_retrying_cannot_mend_end_the_wait(self, status: int) -> None:
        error = self.error(status)
        with pytest.raises(api.DatabricksApiError) as caught:
            api.PollOutage().failed(error, now=0.0)
        assert caught.value is error

    def test_an_outage_longer_than_the_limit_ends_the_wait(self) -> None:
        outage = api.PollOutage(limit=600)
        outage.failed(self.error(503), now=0.0)
        outage.failed(self.error(503), now=599.0)
        with pytest.raises(api.DatabricksApiError):
            outage.failed(self.error(503), now=601.0)
        outage.succeeded()
        assert outage.failed(self.error(503), now=700.0) <= 2  # a new outage starts afresh

    def test_pace_stretches_while_throttled_and_eases_back(self) -> None:
        outage = api.PollOutage(max_stretch=8)
        assert [outage.pace(1.0, throttled=True) for _ in range(5)] == [2.0, 4.0, 8.0, 8.0, 8.0]
        eased = [outage.pace(1.0, throttled=False) for _ in range(200)]
        assert eased[0] < 8.0
        assert eased[-1] == 1.0
