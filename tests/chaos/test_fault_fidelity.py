"""The emulator's faults must mean what the chaos driver takes them to mean."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from airflow_dbx.hook import DatabricksHook

if TYPE_CHECKING:
    from airflow_dbx.emulator import Emulator

BODY = {"run_name": "slow", "tasks": [{"task_key": "only", "existing_cluster_id": "emulator-c",
                                       "notebook_task": {"notebook_path": "/nb"}}]}


def test_a_slow_post_whose_client_gave_up_is_still_carried_out(emulator: Emulator, set_connection) -> None:
    set_connection(host=emulator.url, password=emulator.token, extra={"timeout_seconds": 0.2})
    emulator.delay_next("POST", "jobs/runs/submit", seconds=0.6)
    with pytest.raises(Exception, match="timed out"):
        DatabricksHook(retry_limit=1).submit_run(BODY)
    deadline = time.monotonic() + 3
    while not emulator.runs() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(emulator.runs()) == 1


def test_a_slow_post_whose_client_waits_is_carried_out_once(emulator: Emulator, set_connection) -> None:
    set_connection(host=emulator.url, password=emulator.token, extra={"timeout_seconds": 2})
    emulator.delay_next("POST", "jobs/runs/submit", seconds=0.3)
    run_id = DatabricksHook(retry_limit=1).submit_run(BODY)
    assert [r["run_id"] for r in emulator.runs()] == [run_id]
