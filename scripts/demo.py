"""The demo: the example DAGs against the local emulator, the deferrable one through ``airflow dags test``.

Run it with ``python3 run.py demo``, which prepares the environment first.

The deferrable example runs as a user would run it, through the ``airflow dags test``
command (which runs its trigger in-process). Starting Airflow costs far more CPU than running
one of these DAGs, so the other examples run side by side with it in a few worker processes
(one per core, at most two) that each start Airflow once and call ``dag.test()`` -- what
``airflow dags test`` runs -- for their share, one after another. Each DAG runs against an
emulator of its own (its Databricks runs are the runs that emulator saw), with its output in
a log file of its own, and each process has its own copy of a migrated metadata database.
"""

from __future__ import annotations

import datetime
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

from airflow_dbx.emulator import Emulator


@dataclass(frozen=True)
class Example:
    dag_id: str
    succeeds: bool = True
    command: bool = False  # through the `airflow dags test` command rather than a worker


# One DAG per thing worth showing; the integration tests run every example.
EXAMPLES = [
    Example("dbx_submit_then_sense"),  # the longest first: the others run while it waits
    Example("dbx_notebook_submit"),
    Example("dbx_multi_task_submit"),
    Example("dbx_run_now_by_name"),
    Example("dbx_deferrable", command=True),
    Example("dbx_workflow"),
    Example("dbx_failure_report", succeeds=False),
    Example("dbx_sql"),  # judged by its SQL statements: it starts no run
]
IN_WORKERS = [example for example in EXAMPLES if not example.command]
WORKERS = max(1, min(2, os.cpu_count() or 1, len(IN_WORKERS)))
LOGICAL_DATE = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
# Emulated runs last 15 % of their nominal length: every path shows, without the waiting.
TIME_SCALE = 0.15
RESULT = "demo-result: "
RUN_NOW_JOB = {
    "name": "nightly-sales",
    "tasks": [
        {
            "task_key": "sales",
            "existing_cluster_id": "emulator-shared-cluster",
            "notebook_task": {"notebook_path": "/Shared/sales"},
        }
    ],
}


@dataclass
class Outcome:
    example: Example
    state: str
    seconds: float
    log: Path
    runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def as_expected(self) -> bool:
        succeeded = bool(self.runs) and all(run["result"] == "SUCCESS" for run in self.runs)
        wanted = "success" if self.example.succeeds else "failed"
        return succeeded == self.example.succeeds and self.state == wanted

    @property
    def verdict(self) -> str:
        if not self.as_expected:
            return f"NOT AS EXPECTED (DAG run {self.state})"
        return "succeeded" if self.example.succeeds else "failed, as it should"


# --------------------------------------------------------------------------- worker


def work_done(emu: Emulator) -> list[dict[str, Any]]:
    """What a DAG did in Databricks, as the emulator saw it: its runs, then its SQL statements."""
    done = [
        {"result": (run.get("state") or {}).get("result_state"), "url": run["run_page_url"]} for run in emu.runs()
    ]
    with emu.sql.lock:
        statements = list(emu.sql.statements.values())
    done += [
        {"result": "SUCCESS" if s.state == "SUCCEEDED" else s.state, "url": f"SQL statement {s.statement_id}"}
        for s in statements
    ]
    return done


def _load_dags(dag_ids: list[str]) -> dict[str, Any]:
    try:
        dagbag = importlib.import_module("airflow.dag_processing.dagbag")
    except ImportError:  # Airflow 3.1
        dagbag = importlib.import_module("airflow.models.dagbag")
    bag = dagbag.DagBag(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    return {dag_id: bag.dags[dag_id] for dag_id in dag_ids}


def work(work_dir: Path, dag_ids: list[str]) -> int:
    """Run ``dag_ids`` one after another in this process; a result line per DAG on stdout.

    Everything else this process prints goes to the worker's log (its stderr), or to the
    DAG's own log while the DAG runs.
    """
    report = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    saved = os.dup(2)
    dags = _load_dags(dag_ids)
    for dag_id in dag_ids:
        log = work_dir / f"{dag_id}.log"
        started = time.monotonic()
        with Emulator(time_scale=TIME_SCALE) as emu, log.open("w") as out:
            emu.create_job(RUN_NOW_JOB)
            os.environ["AIRFLOW_CONN_DATABRICKS_DEFAULT"] = emu.conn_json()
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(out.fileno(), 1)
            os.dup2(out.fileno(), 2)
            try:
                state = str(dags[dag_id].test(logical_date=LOGICAL_DATE).state)
            except Exception as exc:  # a demo reports every DAG, whatever one of them does
                print(f"dag.test() raised {exc!r}", flush=True)
                state = "error"
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved, 1)
                os.dup2(saved, 2)
            runs = work_done(emu)
        line = {"dag_id": dag_id, "state": state, "seconds": time.monotonic() - started, "runs": runs}
        report.write(RESULT + json.dumps(line) + "\n")
    return 0


# --------------------------------------------------------------------------- coordinator


def airflow(*args: str, env: dict[str, str], log: Path) -> int:
    command = [str(Path(sys.executable).with_name("airflow")), *args]
    with log.open("w") as out:
        return subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT, check=False).returncode


def sqlite_env(env: dict[str, str], database: Path) -> dict[str, str]:
    return {**env, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{database}"}


def migrated_database(work_dir: Path, env: dict[str, str]) -> Path | None:
    """A migrated metadata database to copy for each worker; migrated again only for a new Airflow."""
    template = work_dir / "template.db"
    marker = work_dir / "template.version"
    wanted = version("apache-airflow")
    if template.exists() and marker.exists() and marker.read_text() == wanted:
        return template
    print("Preparing Airflow's metadata database (once per Airflow version) ...", flush=True)
    template.unlink(missing_ok=True)
    log = work_dir / "db-migrate.log"
    if airflow("db", "migrate", env=sqlite_env(env, template), log=log):
        print(f"airflow db migrate failed; see {log}")
        return None
    marker.write_text(wanted)
    return template


def failure_report(log: Path, lines: int = 8) -> list[str]:
    """The report of ``DatabricksRunFailed`` from a DAG's log, up to its run page line."""
    text = log.read_text(errors="replace")
    marker = "DatabricksRunFailed: "
    start = text.find(marker)
    if start < 0:
        return []
    report = text[start + len(marker) :].splitlines()
    end = next((i for i, line in enumerate(report) if line.startswith("Run page:")), lines)
    return report[: end + 1]


def summary(outcomes: list[Outcome]) -> str:
    """A plain table: DAG, outcome, seconds, and one line per Databricks run."""
    rows = [("DAG", "Outcome", "Time", "Databricks run page (emulator)")]
    for outcome in outcomes:
        runs = [f"{run['result']} {run['url']}" for run in outcome.runs]
        first, *more = runs or ["no run"]
        rows.append((outcome.example.dag_id, outcome.verdict, f"{outcome.seconds:.0f} s", first))
        rows.extend(("", "", "", line) for line in more)
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    lines = [
        f"{dag:<{widths[0]}}  {verdict:<{widths[1]}}  {seconds:>{widths[2]}}  {runs}".rstrip()
        for dag, verdict, seconds, runs in rows
    ]
    lines.insert(1, re.sub(r"[^ ]", "-", lines[0]))
    return "\n".join(lines)


def run_command(example: Example, template: Path, work_dir: Path, env: dict[str, str]) -> Outcome:
    """``airflow dags test`` of one example, against an emulator of its own."""
    database = work_dir / f"{example.dag_id}.db"
    shutil.copyfile(template, database)
    log = work_dir / f"{example.dag_id}.log"
    started = time.monotonic()
    with Emulator(time_scale=TIME_SCALE) as emu:
        emu.create_job(RUN_NOW_JOB)
        variables = {**sqlite_env(env, database), "AIRFLOW_CONN_DATABRICKS_DEFAULT": emu.conn_json()}
        code = airflow("dags", "test", example.dag_id, LOGICAL_DATE.date().isoformat(), env=variables, log=log)
        runs = work_done(emu)
    database.unlink(missing_ok=True)
    return Outcome(example, "success" if code == 0 else "failed", time.monotonic() - started, log, runs)


def start_worker(index: int, template: Path, work_dir: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    share = [example.dag_id for example in IN_WORKERS[index::WORKERS]]
    database = work_dir / f"worker-{index}.db"
    shutil.copyfile(template, database)
    with (work_dir / f"worker-{index}.log").open("w") as worker_log:
        return subprocess.Popen(
            [sys.executable, __file__, "--worker", str(work_dir), *share],
            env=sqlite_env(env, database),
            stdout=subprocess.PIPE,
            stderr=worker_log,
            text=True,
        )


def run_workers(template: Path, work_dir: Path, env: dict[str, str]) -> dict[str, Outcome]:
    """Start the command and the workers, print each DAG's end as it comes, and collect the outcomes."""
    examples = {example.dag_id: example for example in EXAMPLES}
    outcomes: dict[str, Outcome] = {}
    lock = threading.Lock()

    def record(outcome: Outcome) -> None:
        with lock:
            outcomes[outcome.example.dag_id] = outcome
            print(f"  {outcome.example.dag_id}: {outcome.verdict} after {outcome.seconds:.0f} s", flush=True)

    def follow(process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith(RESULT):
                done = json.loads(line[len(RESULT) :])
                log = work_dir / f"{done['dag_id']}.log"
                record(Outcome(examples[done["dag_id"]], done["state"], done["seconds"], log, done["runs"]))
        process.wait()

    threads = [
        threading.Thread(target=lambda example=example: record(run_command(example, template, work_dir, env)))
        for example in EXAMPLES
        if example.command
    ]
    threads += [
        threading.Thread(target=follow, args=(start_worker(index, template, work_dir, env),))
        for index in range(WORKERS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index in range(WORKERS):
        (work_dir / f"worker-{index}.db").unlink(missing_ok=True)
    return outcomes


def main() -> int:
    started = time.monotonic()
    work_dir = Path(os.environ["AIRFLOW_HOME"]) / "demo-logs"
    work_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    template = migrated_database(work_dir, env)
    if template is None:
        return 1
    print(
        f"Running {len(EXAMPLES)} example DAGs side by side, each against its own emulator "
        f"({', '.join(e.dag_id for e in EXAMPLES if e.command)} through `airflow dags test`):"
    )
    outcomes = run_workers(template, work_dir, env)
    ordered = [
        outcomes.get(example.dag_id) or Outcome(example, "not run (see worker-*.log)", 0, work_dir / "none")
        for example in EXAMPLES
    ]
    for outcome in ordered:
        if not outcome.example.succeeds and outcome.log.exists() and (report := failure_report(outcome.log)):
            print(f"\nThe failure report of {outcome.example.dag_id}, as its task logged it:")
            print("\n".join(f"    {line}" for line in report))
    print(f"\n{summary(ordered)}\n")
    failures = sum(not outcome.as_expected for outcome in ordered)
    print(f"Each DAG's log: {work_dir}/<dag>.log (the run pages closed with the emulator).")
    print(
        f"{len(ordered) - failures} of {len(ordered)} example DAGs behaved as expected, "
        f"in {time.monotonic() - started:.0f} s."
    )
    return 1 if failures else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        sys.exit(work(Path(sys.argv[2]), sys.argv[3:]))
    sys.exit(main())
