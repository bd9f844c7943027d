"""outcome: the failure report and the repair plan of an ended run."""

from __future__ import annotations

import pytest

from airflow_dbx import models, outcome


class TestFailureReport:
    def test_names_failed_tasks_errors_traces_and_url(self) -> None:
        run = models.Run.from_dict({
            "run_id": 1, "run_page_url": "http://x/#run/1",
            "state": {"life_cycle_state": "TERMINATED", "result_state": "FAILED", "state_message": "1 task failed"},
            "tasks": [
                {"task_key": "ingest", "run_id": 11, "state": {"life_cycle_state": "TERMINATED", "result_state": "SUCCESS"}},
                {"task_key": "clean", "run_id": 12, "state": {"life_cycle_state": "TERMINATED", "result_state": "FAILED"}},
            ],
        })
        trace = "\n".join(f"line {i}" for i in range(30))
        report = outcome.format_failure_report(run, {12: {"error": "ZeroDivisionError", "error_trace": trace}})
        assert report.splitlines()[0] == "Databricks run 1 ended FAILED: 1 task failed"
        assert "- task clean (FAILED): ZeroDivisionError" in report
        assert "    line 9" in report and "line 10\n" not in report
        assert "(20 more lines)" in report
        assert "ingest" not in report
        assert report.endswith("Run page: http://x/#run/1")


class TestRepairRequest:
    """The pure part: which tasks a repair reruns, and its bookkeeping fields."""

    @staticmethod
    def run(tasks: list[tuple[str, str, tuple[str, ...]]], result: str = "FAILED", repairs: int = 0) -> models.Run:
        return models.Run.from_dict({
            "run_id": 7,
            "state": {"life_cycle_state": "TERMINATED", "result_state": result},
            "tasks": [
                {"task_key": key, "run_id": i + 100, "depends_on": [{"task_key": d} for d in deps],
                 "state": {"life_cycle_state": "TERMINATED" if outcome != "UPSTREAM_FAILED" else "SKIPPED",
                           "result_state": outcome}}
                for i, (key, outcome, deps) in enumerate(tasks)
            ],
            "repair_history": [{"type": "ORIGINAL"}] + [{"type": "REPAIR", "id": 50 + i} for i in range(repairs)],
        })

    def test_failed_tasks_and_everything_downstream_even_if_it_succeeded(self) -> None:
        run = self.run([
            ("a", "SUCCESS", ()),
            ("b", "FAILED", ("a",)),
            ("side", "SUCCESS", ("a",)),
            ("c", "SUCCESS", ("b", "side")),  # run_if ALL_DONE: ran despite b
            ("d", "UPSTREAM_FAILED", ("c",)),
            ("skipped_branch", "EXCLUDED", ("a",)),
        ])
        assert outcome.tasks_to_rerun(run) == ["b", "c", "d"]
        assert outcome.repair_request(run, {"notebook_params": {"day": "1"}, "jar_params": None}) == {
            "run_id": 7, "rerun_tasks": ["b", "c", "d"], "rerun_dependent_tasks": True,
            "notebook_params": {"day": "1"},
        }

    def test_a_later_repair_names_the_latest_one(self) -> None:
        run = self.run([("a", "FAILED", ())], repairs=2)
        assert outcome.repair_request(run)["latest_repair_id"] == 51

    @pytest.mark.parametrize(
        ("result", "task_result", "repairable"),
        [("FAILED", "FAILED", True), ("TIMEDOUT", "TIMEDOUT", True), ("SUCCESS_WITH_FAILURES", "FAILED", True),
         ("CANCELED", "CANCELED", False), ("SUCCESS", "SUCCESS", False)],
    )
    def test_only_failures_are_repaired(self, result: str, task_result: str, repairable: bool) -> None:
        assert outcome.is_repairable(self.run([("a", task_result, ())], result=result)) is repairable
