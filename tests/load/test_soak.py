"""Soak: one long-lived trigger process keeps 500 Databricks runs waited on for minutes, on an
OAuth M2M connection whose tokens live a few seconds, so the token is refreshed hundreds of
times. Resident memory and CPU per poll in the last minute must be within 10 % of the second
minute's (the first steady one: see the test).

Opt-in and bounded (``SOAK_SECONDS``, at most 600):

    AIRFLOW_DBX_LOAD=1 AIRFLOW_DBX_SOAK=1 pytest tests/load/test_soak.py -q -s   # prints the figures

(``AIRFLOW_DBX_LOAD=1`` turns the load suite on, as for its other tests; the soak also needs its
own variable, so the load suite on CI does not run it.)

Each of the 500 slots submits a run, waits on it with ``DatabricksRunTrigger`` (as a
triggerer does, in one event loop) and starts the next when the event fires. Every token the
process fetches is registered with Airflow's secrets masker (``mask_secret``); the figures
show how many patterns the masker holds at the end. ``SOAK_MASK=0`` replaces ``mask_secret``
with a no-op, to measure the masker's share.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

import psutil
import pytest

from airflow_dbx import tokens
from airflow_dbx.hook import DatabricksHook
from airflow_dbx.trigger import DatabricksRunTrigger
from tests.load.test_triggers_under_rate_limit import EmulatorProcess

SLOTS = int(os.environ.get("SOAK_SLOTS", "500"))
SECONDS = min(float(os.environ.get("SOAK_SECONDS", "540")), 600.0)
DRAIN = 120.0  # the last runs' waits, after SECONDS

pytestmark = [
    pytest.mark.skipif(os.environ.get("AIRFLOW_DBX_SOAK") != "1", reason="soak: set AIRFLOW_DBX_SOAK=1"),
    pytest.mark.timeout(SECONDS + DRAIN + 60),
]
TOKEN_TTL = float(os.environ.get("SOAK_TOKEN_TTL", "6"))
POLL = 5.0
RUN_SECONDS = (20.0, 40.0)
WINDOW = 60.0  # the first and the last minute are compared
CLIENT_ID, CLIENT_SECRET = "soak-client", "soak-client-secret-" + "7" * 16


@dataclass
class Sample:
    at: float
    rss: int
    cpu: float
    polls: int
    refreshes: int


@dataclass
class Soak:
    samples: list[Sample] = field(default_factory=list)
    events: int = 0
    wrong: list[Any] = field(default_factory=list)  # an event that says the opposite of the run's result
    lost: list[Any] = field(default_factory=list)  # a wait that gave up (its event carries the error)


def _counters(workspace: EmulatorProcess) -> tuple[int, int]:
    counts = workspace.admin("GET", "counters")
    requests = counts.get("requests", counts)
    polls = sum(n for key, n in requests.items() if key.endswith("jobs/runs/get"))
    refreshes = sum(n for key, n in requests.items() if key.endswith("oidc/v1/token"))
    return polls, refreshes


async def _slot(number: int, hook: DatabricksHook, soak: Soak, until: float) -> None:
    rng = random.Random(number)
    cycle = 0
    while time.monotonic() < until:
        fails = rng.random() < 0.2
        params = {"emulator_duration": str(round(rng.uniform(*RUN_SECONDS), 1))}
        if fails:
            params["emulator_result"] = "FAILED"
        payload = {"run_name": f"soak {number}.{cycle}", "idempotency_token": f"soak-{number}-{cycle}",
                   "tasks": [{"task_key": "only", "existing_cluster_id": "emulator-soak",
                              "notebook_task": {"notebook_path": "/soak", "base_parameters": params}}]}  # fmt: skip
        run_id = await asyncio.to_thread(hook.submit_run, payload)
        trigger = DatabricksRunTrigger(run_id=run_id, polling_period_seconds=POLL, retry_limit=5)
        async for event in trigger.run():
            soak.events += 1
            if "successful" not in event.payload:
                soak.lost.append(event.payload)
            elif event.payload["successful"] is fails:
                soak.wrong.append(event.payload)
        cycle += 1


async def _sampler(workspace: EmulatorProcess, soak: Soak, until: float) -> None:
    process = psutil.Process()
    started = time.monotonic()
    while time.monotonic() < until:
        polls, refreshes = await asyncio.to_thread(_counters, workspace)
        times = process.cpu_times()
        soak.samples.append(
            Sample(time.monotonic() - started, process.memory_info().rss, times.user + times.system, polls, refreshes)
        )
        await asyncio.sleep(5)


async def _soak(workspace: EmulatorProcess) -> Soak:
    soak = Soak()
    until = time.monotonic() + SECONDS
    hook = DatabricksHook(retry_limit=5, retry_delay=0.2)
    slots = [_slot(number, hook, soak, until) for number in range(SLOTS)]
    # Slots still waiting when the time is up are abandoned: their runs are not the point.
    await asyncio.wait_for(
        asyncio.gather(_sampler(workspace, soak, until), *slots, return_exceptions=False), SECONDS + DRAIN
    )
    return soak


def _masker_patterns() -> int:
    from airflow.sdk._shared.secrets_masker import _secrets_masker

    return len(_secrets_masker().patterns)


def _per_poll(first: Sample, last: Sample) -> float:
    return 1000 * (last.cpu - first.cpu) / max(last.polls - first.polls, 1)


def test_a_long_lived_trigger_process_stays_flat(monkeypatch: pytest.MonkeyPatch) -> None:
    if os.environ.get("SOAK_MASK") == "0":
        monkeypatch.setattr(tokens, "mask_secret", lambda value: None)
    workspace = EmulatorProcess()
    try:
        workspace.admin("POST", "oauth_clients", client_id=CLIENT_ID, secret=CLIENT_SECRET, ttl_seconds=TOKEN_TTL)
        connection = {"conn_type": "dbx", "host": workspace.url, "login": CLIENT_ID, "password": CLIENT_SECRET,
                      "extra": {"service_principal_oauth": True}}  # fmt: skip
        monkeypatch.setenv("AIRFLOW_CONN_DATABRICKS_DEFAULT", json.dumps(connection))
        tokens.TOKEN_CACHE.clear()
        soak = asyncio.run(_soak(workspace))
    finally:
        workspace.stop()

    # Minute by minute: the first minute holds only the first submits and no finished wait; from
    # the second on, every minute holds the same mix of submits, polls and events. The second
    # minute is the reference the last one is held to.
    minutes = [
        next(s for s in soak.samples if s.at >= n * WINDOW) for n in range(int(soak.samples[-1].at // WINDOW) + 1)
    ]
    cpu = [round(_per_poll(a, b), 3) for a, b in itertools.pairwise(minutes)]
    rss = [round(s.rss / 2**20, 1) for s in minutes[1:]]
    end = minutes[-1]
    figures = {
        "slots": SLOTS, "seconds": round(end.at), "token_ttl_s": TOKEN_TTL, "events": soak.events,
        "lost waits": len(soak.lost), "polls": end.polls, "token refreshes": end.refreshes,
        "rss_mb per minute": rss, "cpu_ms/poll per minute": cpu,
        "masker patterns": _masker_patterns(), "masking": os.environ.get("SOAK_MASK") != "0",
    }  # fmt: skip
    shown = "SOAK FIGURES " + json.dumps(figures)
    print("\n" + shown)
    assert not soak.wrong, soak.wrong[:3]
    assert not soak.lost, (shown, soak.lost[:3])
    assert soak.events >= SLOTS, shown
    assert end.refreshes >= SECONDS / TOKEN_TTL / 2, shown
    assert len(cpu) >= 3, shown
    assert rss[-1] <= rss[1] * 1.10, shown
    assert cpu[-1] <= cpu[1] * 1.10, shown
