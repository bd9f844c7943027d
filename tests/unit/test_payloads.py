"""payloads: merge, normalise, validate, the single-task form, idempotency tokens."""

from __future__ import annotations

import datetime

import pytest

from airflow_dbx import errors, payloads


class TestMergeAndNormalise:
    def test_named_parameters_win_and_none_means_not_given(self) -> None:
        merged = payloads.merge_payload({"run_name": "a", "timeout_seconds": 5}, {"run_name": "b", "timeout_seconds": None})
        assert merged == {"run_name": "b", "timeout_seconds": 5}

    def test_json_string_is_parsed(self) -> None:
        assert payloads.merge_payload('{"job_id": 3}', {}) == {"job_id": 3}

    @pytest.mark.parametrize(("value", "message"), [("{not json", "json: a string that is not JSON"),
                                                    ("[1, 2]", "json: expected a JSON object, got list"),
                                                    (42, "json: expected a dict or a JSON string, got int")])
    def test_bad_json_names_the_field(self, value: object, message: str) -> None:
        with pytest.raises(errors.PayloadError, match=message):
            payloads.merge_payload(value, {})  # type: ignore[arg-type]

    def test_string_fields_become_strings_and_numbers_stay_numbers(self) -> None:
        payload = payloads.normalise_payload({
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
        with pytest.raises(errors.PayloadError, match=r"json\.tasks\[0\]\.notebook_task\.base_parameters\.day: a object"):
            payloads.normalise_payload({"tasks": [{"notebook_task": {"base_parameters": {"day": object()}}}]})

    def test_nan_is_refused(self) -> None:
        with pytest.raises(errors.PayloadError, match="timeout_seconds: nan has no JSON form"):
            payloads.normalise_payload({"timeout_seconds": float("nan")})

    def test_single_task_form_moves_into_tasks(self) -> None:
        payload = payloads.to_tasks_form(
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
        with pytest.raises(errors.PayloadError, match=message):
            payloads.validate_submit(payload)

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
        with pytest.raises(errors.PayloadError, match=message):
            payloads.validate_run_now(payload)

    def test_unrendered_values_pass_structural_checks(self) -> None:
        # The same shapes with literal values are refused; stand-ins for later values are not.
        with pytest.raises(errors.PayloadError, match="job_id"):
            payloads.validate_run_now({"job_id": "x", "notebook_params": {}})
        with pytest.raises(errors.PayloadError, match="tasks"):
            payloads.validate_submit({"tasks": []})
        assert payloads.validate_run_now({"job_id": payloads.UNRENDERED, "notebook_params": payloads.UNRENDERED}) is None
        assert payloads.validate_submit({"tasks": payloads.UNRENDERED}) is None

    def test_check_literals_skips_what_is_not_known_yet_and_refuses_the_rest(self) -> None:
        seen: list[dict] = []
        payloads.check_literals({"job_id": 1}, {"notebook_params": "{{ params.p }}"}, seen.append)
        assert seen == [{"job_id": 1, "notebook_params": payloads.UNRENDERED}]
        with pytest.raises(errors.PayloadError, match="job_id"):
            payloads.check_literals(None, {"job_id": "abc"}, payloads.validate_run_now)
        seen.clear()
        payloads.check_literals("{{ var.json.body }}", {}, seen.append)
        assert seen == []

    @pytest.mark.parametrize("value", [0, -1, "5", None, True])
    def test_positive(self, value: object) -> None:
        with pytest.raises(errors.PayloadError, match="polling_period_seconds: expected a positive number"):
            payloads.check_positive("polling_period_seconds", value)


class TestIdempotencyTokens:
    def test_derived_tokens_fit_the_api_and_differ_by_generation(self) -> None:
        first = payloads.derive_idempotency_token("dag", "task", "run", -1, generation=0)
        again = payloads.derive_idempotency_token("dag", "task", "run", -1, generation=0)
        second = payloads.derive_idempotency_token("dag", "task", "run", -1, generation=1)
        assert first == again != second
        assert len(first) <= payloads.IDEMPOTENCY_TOKEN_MAX_LENGTH

    def test_users_token_is_generation_zero(self) -> None:
        assert payloads.derive_idempotency_token("d", generation=0, base="mine") == "mine"
        assert payloads.derive_idempotency_token("d", generation=1, base="mine") != "mine"
