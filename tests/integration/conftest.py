"""Real Airflow against the emulator: a migrated metadata DB, a connection, task contexts."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_dbx import models
from airflow_dbx.emulator import Emulator

try:
    from airflow.sdk.exceptions import TaskDeferred
except ImportError:  # Airflow 3.1 keeps it in airflow.exceptions
    from airflow.exceptions import TaskDeferred  # type: ignore[no-redef]

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["TaskDeferred", "final_state"]

AIRFLOW = str(Path(sys.executable).with_name("airflow"))


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """Airflow's metadata DB in this run's AIRFLOW_HOME, migrated once per session."""
    result = subprocess.run([AIRFLOW, "db", "migrate"], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """A fresh emulator (runs 10x faster than their nominal length) as ``databricks_default``."""
    with Emulator(time_scale=0.1) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_DATABRICKS_DEFAULT", emu.conn_json())
        yield emu


class TryContext(dict):  # type: ignore[type-arg]
    """The part of an Airflow task context the operators read, for driving tries by hand.

    Airflow cannot kill a worker inside a test process; these tests play the tries of one
    task instance in sequence instead, as the scheduler would after a worker died.
    """

    def __init__(
        self,
        try_number: int = 1,
        *,
        task_id: str = "t",
        run_id: str = "manual__1",
        max_tries: int | None = None,
        map_index: int = -1,
        started_now: bool = False,
    ) -> None:
        ti = _TaskInstance(task_id=task_id, run_id=run_id, try_number=try_number, map_index=map_index)
        if max_tries is not None:
            ti.max_tries = max_tries
        if started_now:  # the caller waited a real retry delay between tries
            ti.start_date = datetime.datetime.now(datetime.timezone.utc)
        super().__init__(ti=ti, task_instance=ti)

    @property
    def xcom(self) -> dict[str, Any]:
        return self["ti"].pushed


class _TaskInstance:
    max_tries: int

    def __init__(self, *, task_id: str, run_id: str, try_number: int, map_index: int = -1) -> None:
        self.dag_id = "tests"
        self.task_id = task_id
        self.run_id = run_id
        self.map_index = map_index
        self.try_number = try_number
        # A retry starts after Airflow's retry delay; move its start on rather than sleep.
        delay = datetime.timedelta(seconds=30 * (try_number - 1))
        self.start_date = datetime.datetime.now(datetime.timezone.utc) + delay
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        json.dumps(value)  # XCom values must serialise, as Airflow's backend requires
        self.pushed[key] = value


@pytest.fixture
def try_context() -> type[TryContext]:
    return TryContext


# ``python -W error`` for DAG files, but for a warning Airflow 3.1 raises about itself when a
# DAG uses @task (its standard provider imports a name it deprecated).
STRICT_WARNINGS = ["-W", "error", "-W", "ignore:The `airflow.operators.:FutureWarning"]


def airflow_env(**extra: str) -> dict[str, str]:
    return {**os.environ, **extra}


def final_state(emu: Emulator, run_id: int, timeout: float = 10) -> models.RunState:
    """The run's state once it ended (a cancelled run passes through TERMINATING)."""
    deadline = time.monotonic() + timeout
    while True:
        state = models.RunState.from_dict(emu.run(run_id))
        if state.is_terminal or time.monotonic() > deadline:
            return state
        time.sleep(0.05)
