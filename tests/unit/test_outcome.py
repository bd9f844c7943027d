"""outcome: the failure report and the summary of an ended run."""

from __future__ import annotations

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
