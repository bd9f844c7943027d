"""models: the run state model, read from status with a fallback to the deprecated state."""

from __future__ import annotations

import pytest

from airflow_dbx import models


def _run(status: dict | None = None, state: dict | None = None, **extra: object) -> dict:
    data: dict = {"run_id": 7, **extra}
    if status is not None:
        data["status"] = status
    if state is not None:
        data["state"] = state
    return data


class TestRunState:
    def test_status_wins_over_deprecated_state(self) -> None:
        state = models.RunState.from_dict(
            _run(
                status={"state": "TERMINATED", "termination_details": {"code": "SUCCESS", "message": "ok"}},
                state={"life_cycle_state": "RUNNING"},
            )
        )
        assert state.is_terminal
        assert state.is_successful()
        assert state.state_message == "ok"

    def test_falls_back_to_deprecated_state(self) -> None:
        state = models.RunState.from_dict(_run(state={"life_cycle_state": "TERMINATED", "result_state": "FAILED"}))
        assert state.is_terminal
        assert not state.is_successful()
        assert state.outcome == "FAILED"

    @pytest.mark.parametrize(
        ("code", "result"),
        [("SUCCESS", "SUCCESS"), ("USER_CANCELED", "CANCELED"), ("RUN_EXECUTION_ERROR", "FAILED"),
         ("SUCCESS_WITH_FAILURES", "SUCCESS_WITH_FAILURES"), ("SOMETHING_NEW", "FAILED")],
    )
    def test_result_derived_from_termination_code(self, code: str, result: str) -> None:
        state = models.RunState.from_dict(_run(status={"state": "TERMINATED", "termination_details": {"code": code}}))
        assert state.result_state == result

    def test_legacy_result_state_is_kept_when_status_is_terminal(self) -> None:
        state = models.RunState.from_dict(
            _run(status={"state": "TERMINATED", "termination_details": {"code": "RUN_EXECUTION_ERROR"}},
                 state={"life_cycle_state": "TERMINATED", "result_state": "TIMEDOUT"})
        )
        assert state.result_state == "TIMEDOUT"

    @pytest.mark.parametrize("life_cycle", ["QUEUED", "PENDING", "RUNNING", "TERMINATING", "BLOCKED", "WAITING"])
    def test_active_states_are_not_terminal(self, life_cycle: str) -> None:
        state = models.RunState.from_dict(_run(status={"state": life_cycle}))
        assert not state.is_terminal

    def test_a_state_added_later_keeps_waiting(self) -> None:
        state = models.RunState.from_dict(_run(status={"state": "HIBERNATING"}))
        assert not state.is_terminal
        assert not state.is_successful(allow_success_with_failures=True)
        assert state.outcome == "HIBERNATING"

    def test_success_with_failures_only_when_allowed(self) -> None:
        state = models.RunState.from_dict(_run(state={"life_cycle_state": "TERMINATED", "result_state": "SUCCESS_WITH_FAILURES"}))
        assert not state.is_successful()
        assert state.is_successful(allow_success_with_failures=True)
