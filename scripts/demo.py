"""The demo: every example DAG through ``airflow dags test`` against the local emulator.

Run it with ``python3 run.py demo``, which prepares the environment first.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from airflow_dbx.emulator import Emulator

ROOT = Path(__file__).resolve().parent.parent
# (dag id, whether its Databricks runs should succeed)
EXAMPLES = [
    ("dbx_notebook_submit", True),
    ("dbx_multi_task_submit", True),
    ("dbx_run_now_by_name", True),
    ("dbx_deferrable", True),
    ("dbx_failure_report", False),
    ("dbx_submit_then_sense", True),
    ("dbx_sql", True),  # judged by its SQL statements: it starts no run
]


def airflow(*args: str, env: dict[str, str], log: Path) -> int:
    command = [str(Path(sys.executable).with_name("airflow")), *args]
    with log.open("w") as out:
        return subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT, check=False).returncode


def main() -> int:
    home = Path(os.environ["AIRFLOW_HOME"])
    logs = home / "demo-logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    print("Preparing Airflow's metadata database ...", flush=True)
    if airflow("db", "migrate", env=env, log=logs / "db-migrate.log"):
        print(f"airflow db migrate failed; see {logs / 'db-migrate.log'}")
        return 1
    failures = 0
    # Runs last 15 % of their nominal length: every path shows, without the waiting.
    with Emulator(time_scale=0.15) as emu:
        print(f"Databricks emulator on {emu.url}\n", flush=True)
        emu.create_job({"name": "nightly-sales", "tasks": [
            {"task_key": "sales", "existing_cluster_id": "emulator-shared-cluster",
             "notebook_task": {"notebook_path": "/Shared/sales"}},
        ]})
        env["AIRFLOW_CONN_DATABRICKS_DEFAULT"] = emu.conn_json()
        for dag_id, should_succeed in EXAMPLES:
            before = {run["run_id"] for run in emu.runs()}
            started = time.monotonic()
            log = logs / f"{dag_id}.log"
            code = airflow("dags", "test", dag_id, "2026-01-01", env=env, log=log)
            seconds = time.monotonic() - started
            runs = [run for run in emu.runs() if run["run_id"] not in before]
            outcomes = [(run.get("state") or {}).get("result_state") for run in runs]
            if dag_id == "dbx_sql":
                with emu.sql.lock:
                    outcomes = ["SUCCESS" if s.state == "SUCCEEDED" else s.state for s in emu.sql.statements.values()]
            succeeded = bool(outcomes) and all(result == "SUCCESS" for result in outcomes)
            as_expected = succeeded == should_succeed and (code == 0) == should_succeed
            failures += not as_expected
            verdict = "as expected" if as_expected else "NOT AS EXPECTED"
            print(f"{dag_id}: airflow exit {code} after {seconds:.0f} s, {verdict} ({log.relative_to(home)})")
            if dag_id == "dbx_sql":
                print(f"  {len(outcomes)} SQL statements, all SUCCEEDED: {succeeded}")
            for run in runs:
                print(f"  run {run['run_id']} {run['state'].get('result_state')}: {run['run_page_url']}")
            if not should_succeed:
                text = log.read_text(errors="replace")
                marker = "DatabricksRunFailed: "
                start = text.find(marker)
                if start >= 0:
                    report = text[start + len(marker):].splitlines()
                    end = next((i for i, line in enumerate(report) if line.startswith("Run page:")), 8)
                    print("  failure report:")
                    print("\n".join(f"    {line}" for line in report[: end + 1]))
    print(f"\n{len(EXAMPLES) - failures} of {len(EXAMPLES)} example DAGs behaved as expected.")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
