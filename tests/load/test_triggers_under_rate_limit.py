"""1,000 deferred runs polled by one triggerer process against a rate-limited workspace.

The emulator runs in its own process (as a workspace would), with a workspace-wide limit
well under the poll rate 1,000 triggers offer (polling_period_seconds=1: about 1,000
requests/s against a limit of 300/s). Every trigger must still fire the right event, none
may fail on 429, and the rate the triggerer sends must settle under the limit.

    AIRFLOW_DBX_LOAD=1 pytest tests/load -q -s      # prints the figures
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_dbx.hook import DatabricksHook
from airflow_dbx.trigger import DatabricksRunTrigger

pytestmark = pytest.mark.load

TRIGGERS = int(os.environ.get("LOAD_TRIGGERS", "1000"))
LIMIT = float(os.environ.get("LOAD_LIMIT", "300"))
POLL = 1.0
TOKEN = "dapi-load-test-token-1000"
FAILING_SHARE = 0.15
BUDGET = 90.0  # seconds for the whole wait


class EmulatorProcess:
    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="dbx-load-"))
        port_file = self.folder / "url"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "airflow_dbx.emulator", "--port-file", str(port_file), "--token", TOKEN,
             "--time-scale", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while not port_file.exists() or not port_file.read_text().strip():
            assert self.proc.poll() is None, "the emulator exited"
            assert time.monotonic() < deadline, "the emulator did not start"
            time.sleep(0.05)
        self.url = port_file.read_text().strip()
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {TOKEN}"

    def admin(self, method: str, route: str, **body: Any) -> Any:
        response = self.session.request(method, f"{self.url}/__emulator__/{route}", json=body or None, timeout=30)
        response.raise_for_status()
        return response.json()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def workspace(monkeypatch: pytest.MonkeyPatch) -> Any:
    emu = EmulatorProcess()
    monkeypatch.setenv("AIRFLOW_CONN_DATABRICKS_DEFAULT",
                       json.dumps({"conn_type": "dbx", "host": emu.url, "password": TOKEN}))
    try:
        yield emu
    finally:
        emu.stop()


def _start_runs(count: int, durations: tuple[float, float]) -> dict[int, bool]:
    """Submit ``count`` runs lasting ``durations`` seconds; a share of them fail. Returns run id -> should succeed."""
    rng = random.Random(1000)
    plans = [rng.random() >= FAILING_SHARE for _ in range(count)]
    hook = DatabricksHook(retry_limit=5, retry_delay=0.1)

    def submit(index: int) -> tuple[int, bool]:
        params: dict[str, Any] = {"emulator_duration": round(rng.uniform(*durations), 2)}
        if not plans[index]:
            params.update(emulator_result="FAILED", emulator_error=f"LoadError: run {index} failed on purpose")
        run_id = hook.submit_run({"run_name": f"load {index}", "idempotency_token": f"load-{index}", "tasks": [
            {"task_key": "only", "existing_cluster_id": "emulator-load",
             "notebook_task": {"notebook_path": "/load", "base_parameters": params}}]})
        return run_id, plans[index]

    with ThreadPoolExecutor(16) as pool:
        return dict(pool.map(submit, range(count)))


async def _wait_all(run_ids: list[int], retry_limit: int) -> tuple[dict[int, Any], dict[int, float]]:
    events: dict[int, Any] = {}
    fired_at: dict[int, float] = {}
    started = time.monotonic()

    async def one(run_id: int) -> None:
        trigger = DatabricksRunTrigger(run_id=run_id, polling_period_seconds=POLL, retry_limit=retry_limit)
        try:
            async for event in trigger.run():
                events[run_id] = event.payload
                fired_at[run_id] = time.monotonic() - started
                return
        except Exception as exc:
            events[run_id] = exc

    await asyncio.wait_for(asyncio.gather(*(one(r) for r in run_ids)), BUDGET)
    return events, fired_at


def _per_second(records: list[dict[str, Any]], start: float) -> list[Counter[str]]:
    seconds: list[Counter[str]] = []
    for record in records:
        if not record["path"].endswith("jobs/runs/get"):
            continue
        slot = int(record["time"] - start)
        while len(seconds) <= slot:
            seconds.append(Counter())
        seconds[slot]["sent"] += 1
        seconds[slot]["429" if record["status"] == 429 else "ok" if record["status"] == 200 else "other"] += 1
    return seconds


@dataclass
class LoadRun:
    retry_limit: int
    expected: dict[int, bool]
    events: dict[int, Any]
    fired_at: dict[int, float]
    seconds: list[Counter[str]]
    figures: dict[str, Any]

    @property
    def errors(self) -> dict[int, BaseException]:
        return {run_id: event for run_id, event in self.events.items() if isinstance(event, BaseException)}


def load_run(workspace: EmulatorProcess, retry_limit: int, durations: tuple[float, float]) -> LoadRun:
    expected = _start_runs(TRIGGERS, durations)
    since = workspace.admin("GET", "requests?since=0")["next"]
    workspace.admin("POST", "rate_limit", path=None, per_second=LIMIT, burst=LIMIT)
    start_wall, start = time.time(), time.monotonic()
    cpu_before = time.process_time()
    events, fired_at = asyncio.run(_wait_all(list(expected), retry_limit))
    elapsed = time.monotonic() - start
    cpu = time.process_time() - cpu_before
    records = workspace.admin("GET", f"requests?since={since}")["requests"]
    seconds = _per_second(records, start_wall)
    run = LoadRun(retry_limit, expected, events, fired_at, seconds, {})
    sent = sum(s["sent"] for s in seconds)
    throttled = sum(s["429"] for s in seconds)
    steady = run_steady(run)
    run.figures = {
        "retry_limit": retry_limit, "triggers": TRIGGERS, "limit_per_s": LIMIT, "elapsed_s": round(elapsed, 1),
        "events": len(events) - len(run.errors), "trigger_errors": len(run.errors),
        "runs/get sent": sent, "429 answers": throttled, "429 share": round(throttled / max(sent, 1), 3),
        "peak sent/s": max(s["sent"] for s in seconds), "peak accepted/s": max(s["ok"] for s in seconds),
        "steady window s": len(steady),
        "steady sent/s (last 5 s)": round(sum(s["sent"] for s in steady[-5:]) / max(len(steady[-5:]), 1), 1),
        "steady accepted/s (last 5 s)": round(sum(s["ok"] for s in steady[-5:]) / max(len(steady[-5:]), 1), 1),
        "client CPU s": round(cpu, 1), "client CPU ms/request": round(1000 * cpu / max(sent, 1), 2),
        "first event at s": round(min(fired_at.values(), default=0), 1),
        "last event at s": round(max(fired_at.values(), default=0), 1),
        "per second (sent/429)": " ".join(f"{s['sent']}/{s['429']}" for s in seconds),
    }
    print("\nLOAD FIGURES " + json.dumps(run.figures))
    report = os.environ.get("LOAD_REPORT")
    if report:
        with Path(report).open("a") as out:
            out.write(json.dumps(run.figures) + "\n")
    return run


def run_steady(run: LoadRun) -> list[Counter[str]]:
    """The seconds in which every trigger was still polling (after the first second)."""
    first_event = int(min(run.fired_at.values(), default=len(run.seconds)))
    return run.seconds[2:first_event]


@pytest.fixture(scope="module")
def long_runs() -> Any:
    """One load run shared by the module's tests: runs of 40-50 s, so the rate has time to settle."""
    with pytest.MonkeyPatch.context() as patch:
        emu = EmulatorProcess()
        patch.setenv("AIRFLOW_CONN_DATABRICKS_DEFAULT",
                     json.dumps({"conn_type": "dbx", "host": emu.url, "password": TOKEN}))
        try:
            yield load_run(emu, retry_limit=30, durations=(40, 50))
        finally:
            emu.stop()


def test_every_trigger_fires_the_right_event_despite_429(long_runs: LoadRun) -> None:
    run = long_runs
    assert not run.errors, f"{len(run.errors)} triggers failed, e.g. {next(iter(run.errors.values()))!r}"
    assert len(run.events) == TRIGGERS
    wrong = [r for r, event in run.events.items() if event["successful"] is not run.expected[r]]
    assert not wrong
    unexplained = [r for r, event in run.events.items()
                   if not run.expected[r] and "LoadError: run " not in (event["report"] or "")]
    assert not unexplained
    accepted = max(s["ok"] for s in run.seconds)
    assert accepted <= 2 * LIMIT, "the emulator let through far more than its limit"


def test_the_request_rate_settles_under_the_limit(long_runs: LoadRun) -> None:
    steady = run_steady(long_runs)
    assert len(steady) >= 8, f"no steady window to judge: {long_runs.figures}"
    last = steady[-5:]
    assert sum(s["sent"] for s in last) / len(last) <= LIMIT * 1.15, long_runs.figures


def test_default_retry_settings_survive_the_rate_limit(workspace: EmulatorProcess) -> None:
    run = load_run(workspace, retry_limit=3, durations=(6, 12))
    assert not run.errors, f"{len(run.errors)} of {TRIGGERS} triggers failed, e.g. {next(iter(run.errors.values()))!r}"
