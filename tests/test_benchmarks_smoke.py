"""The benchmark harness, run tiny (ours only, N=5, windows of a second or two), so it cannot rot.

The full side-by-side benchmarks (``python3 benchmarks/run.py``) are not part of the tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_run_measures_triggers_and_writes_a_report(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    command = [
        sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--providers", "ours",
        "--only", "parse", "triggerer", "--ours-python", sys.executable,
        "--out", str(tmp_path / "out"), "--results", str(results),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    parse = json.loads((tmp_path / "out" / "parse.json").read_text())
    (sample,) = parse["samples"]
    assert sample["provider"] == "ours"
    assert sample["added_s"] > 0
    assert sample["added_modules"] > 0

    triggerer = json.loads((tmp_path / "out" / "triggerer.json").read_text())
    (run,) = triggerer["samples"]
    assert "error" not in run, run
    assert run["n"] == 5
    assert run["failures"] == 0, run["first_failures"]
    # Five runs of one workspace share one sweep every 2 s: the 1.5 s window may hold none of it.
    assert 0 <= run["requests"] <= run["n"] * 2
    assert run["cpu_ms_per_run_minute"] > 0
    assert 1 <= run["connections_opened_total"] <= 5
    assert run["lag_samples"] > 0
    assert run["tasks_not_cancelled"] == 0

    report = results.read_text()
    assert "## 1. DAG parse cost" in report
    assert "## 2. Triggerer" in report
    assert "| 5 | 1 s | ours |" in report


def test_quick_sql_section_measures_footprint_import_and_statement_triggers(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    command = [
        sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--providers", "ours", "--only", "sql",
        "--ours-python", sys.executable, "--out", str(tmp_path / "out"), "--results", str(results),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    sql = json.loads((tmp_path / "out" / "sql.json").read_text())
    (sample,) = sql["samples"]
    assert sample["distribution"] == "airflow-dbx"
    assert "airflow-dbx" in sample["added_names"]
    assert "apache-airflow-core" not in sample["added_names"]
    assert sample["added_mb"] > 0
    assert sample["import_ms"] > 0
    assert sample["import_modules"] > 0
    (run,) = sql["triggerer"]
    assert "error" not in run, run
    assert run["n"] == 5
    assert run["failures"] == 0, run["first_failures"]
    assert run["polls"] > 0  # statement status reads the emulator answered
    assert run["cpu_ms_per_poll"] > 0
    assert run["tasks_not_cancelled"] == 0
    assert "## 5. SQL" in results.read_text()


def test_quick_scale_run_waits_on_every_run_under_the_documented_limits(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    command = [
        sys.executable, str(ROOT / "benchmarks" / "run.py"), "--scale", "--quick", "--providers", "ours",
        "--ours-python", sys.executable, "--out", str(tmp_path / "out"), "--results", str(results),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    (sample,) = json.loads((tmp_path / "out" / "scale.json").read_text())["samples"]
    assert sample["provider"] == "ours" and sample["n"] == 20
    assert (sample["events"], sample["missed"], sample["early"], sample["errors"]) == (20, 0, 0, 0), sample
    assert sample["wrong_outcome"] == 0
    assert sample["by_path"].get("jobs/runs/get", 0) >= 20  # every end confirmed by the emulator's count
    assert sample["latency_p50"] is not None and sample["latency_p50"] >= 0
    assert "## Scale: thousands of deferred runs under the API's limits" in results.read_text()
