"""Shared fixtures: a live emulator per test, and Airflow connections from AIRFLOW_CONN_* variables."""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_dbx import auth
from airflow_dbx.emulator import Emulator

EMULATOR_TOKEN = "dapi-emulator-test-token-5f3c9a"
FAST_TIME_SCALE = 0.05

SetConnection = Callable[..., str]


@pytest.fixture(scope="session", autouse=True)
def _warm_airflow_connection_lookup() -> None:
    """Airflow 3.1's env-var secrets backend imports modules that emit its own deprecation
    warnings on first use; under ``filterwarnings = error`` that first lookup would fail, so
    make it once with those warnings ignored."""
    import os

    from airflow.sdk import BaseHook

    os.environ["AIRFLOW_CONN_DBX_TEST_WARMUP"] = json.dumps({"conn_type": "dbx", "host": "warmup.invalid"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        BaseHook.get_connection("dbx_test_warmup")


@pytest.fixture(autouse=True)
def _empty_token_cache() -> Iterator[None]:
    """OAuth/Azure tokens are cached per process; each test starts without any."""
    auth.TOKEN_CACHE.clear()
    yield
    auth.TOKEN_CACHE.clear()


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    """A fresh emulator on 127.0.0.1 (it starts in milliseconds), runs 20x faster than real time."""
    with Emulator(time_scale=FAST_TIME_SCALE, token=EMULATOR_TOKEN) as emu:
        yield emu


@pytest.fixture
def set_connection(monkeypatch: pytest.MonkeyPatch) -> SetConnection:
    """``set_connection(conn_id="databricks_default", **fields)``: an ``AIRFLOW_CONN_*`` JSON connection."""

    def _set(conn_id: str = "databricks_default", **fields: Any) -> str:
        fields.setdefault("conn_type", "dbx")
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))
        return conn_id

    return _set


@pytest.fixture
def emulator_conn(emulator: Emulator, set_connection: SetConnection) -> Emulator:
    """The emulator, with ``databricks_default`` a PAT connection to it."""
    set_connection(host=emulator.url, password=emulator.token)
    return emulator


@pytest.fixture(params=["sync", "async"])
def call(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """``call(hook, "get_run_state", run_id)`` through the sync method, then (second param) the
    ``a_`` one in a fresh event loop: one test body covers both transports."""

    def _call(hook: Any, method: str, *args: Any) -> Any:
        if request.param == "sync":
            return getattr(hook, method)(*args)
        return asyncio.run(getattr(hook, f"a_{method}")(*args))

    return _call
