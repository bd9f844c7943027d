"""The emulator's preset of Databricks' documented per-endpoint limits: constructor, admin API, CLI."""

from __future__ import annotations

import pytest
import requests

from airflow_dbx.emulator import Emulator
from airflow_dbx.emulator.__main__ import parse_args
from airflow_dbx.emulator.faults import RATE_LIMIT_PRESETS, Faults

from .conftest import Api


def test_the_preset_limits_each_endpoint_at_its_documented_rate() -> None:
    faults = Faults()
    faults.set_rate_limit_preset("databricks")
    # A burst far faster than any refill: runs/get lets its 100 through, then asks for a wait.
    waits = [faults.throttle("jobs/runs/get")[0] for _ in range(101)]
    assert waits[:100] == [0.0] * 100
    assert waits[100] > 0
    assert faults.throttle("jobs/runs/list")[0] == 0.0  # each endpoint has its own bucket
    assert [faults.throttle("jobs/run-now")[0] > 0 for _ in range(21)].count(True) == 1
    assert faults.throttle("jobs/list")[0] == 0.0  # not in the preset: unlimited


def test_an_emulator_started_with_the_preset_enforces_it() -> None:
    with Emulator(rate_limits="databricks") as emu:
        api = Api(emu)
        limits = requests.get(f"{emu.url}/__emulator__/faults", timeout=10,
                              headers={"Authorization": f"Bearer {emu.token}"}).json()["rate_limits"]
        assert limits == RATE_LIMIT_PRESETS["databricks"]
        emu.set_rate_limit("jobs/runs/get", per_second=1, burst=1)
        assert api.get("jobs/runs/get", run_id=1).status_code == 400  # no such run, but let through
        limited = api.get("jobs/runs/get", run_id=1)
        assert limited.status_code == 429
        assert limited.json()["error_code"] == "REQUEST_LIMIT_EXCEEDED"
        assert limited.headers["Retry-After"] == "1"


def test_the_preset_names_the_documented_limits() -> None:
    preset = RATE_LIMIT_PRESETS["databricks"]
    assert preset["jobs/runs/get"] == 100
    assert preset["jobs/runs/submit"] == 35
    assert preset["jobs/run-now"] == 20


def test_the_admin_api_sets_the_preset_and_shows_the_limits(emu: Emulator) -> None:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {emu.token}"
    answer = session.post(f"{emu.url}/__emulator__/rate_limit", json={"preset": "databricks"}, timeout=10)
    assert answer.status_code == 200, answer.text
    limits = session.get(f"{emu.url}/__emulator__/faults", timeout=10).json()["rate_limits"]
    assert limits == RATE_LIMIT_PRESETS["databricks"]
    wrong = session.post(f"{emu.url}/__emulator__/rate_limit", json={"preset": "aws"}, timeout=10)
    assert wrong.status_code == 400 and "preset must be one of ['databricks']" in wrong.text


def test_an_unknown_preset_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="preset must be one of"):
        Emulator(rate_limits="fastest")


def test_the_command_line_takes_a_preset_and_single_limits() -> None:
    args = parse_args(["--rate-limits", "databricks", "--rate-limit", "jobs/runs/get=5", "--rate-limit", "*=50"])
    assert args.rate_limits == "databricks"
    assert args.rate_limit == [("jobs/runs/get", 5.0), (None, 50.0)]
    with pytest.raises(SystemExit):
        parse_args(["--rate-limit", "jobs/runs/get=fast"])
    with pytest.raises(SystemExit):
        parse_args(["--rate-limits", "aws"])
