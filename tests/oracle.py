"""Judging runs from the emulator's own records (its raw JSON), never with the package's model
classes: the code under test must not grade itself."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_dbx.emulator import Emulator

# Life cycle states of a run that is over, and of one whose cancel is under way.
OVER = frozenset({"TERMINATED", "SKIPPED", "INTERNAL_ERROR"})
STOPPING = "TERMINATING"


def life_cycle(run: dict[str, Any]) -> str:
    return str((run.get("status") or {}).get("state") or run["state"]["life_cycle_state"])


def result(run: dict[str, Any]) -> str | None:
    """The run's result as the emulator recorded it; None while it has none."""
    value = (run.get("state") or {}).get("result_state")
    return str(value) if value else None


def is_over(run: dict[str, Any]) -> bool:
    return life_cycle(run) in OVER


def finished(emu: Emulator, run_id: int, timeout: float = 10.0) -> dict[str, Any]:
    """The run's record once it is over (a cancelled run passes through TERMINATING), or as it
    is when ``timeout`` runs out."""
    deadline = time.monotonic() + timeout
    while True:
        run = emu.run(run_id)
        if is_over(run) or time.monotonic() > deadline:
            return run
        time.sleep(0.05)


def left_behind(emu: Emulator, at: float) -> list[str]:
    """Runs that were active at epoch second ``at`` (when their task ended for good) and that
    nobody stopped: they went on to end by themselves, or still run."""
    found = []
    for run in emu.runs():
        started = run["start_time"] / 1000
        ended = run["end_time"] / 1000 if run["end_time"] else None
        stopped = result(run) == "CANCELED" or life_cycle(run) == STOPPING
        if started <= at and (ended is None or ended > at) and not stopped:
            found.append(f"run {run['run_id']} ({life_cycle(run)}, result {result(run)})")
    return found
