"""Fixtures for the emulator's own tests: a running emulator and a small HTTP client for it."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest
import requests

from airflow_dbx.emulator import Emulator

if TYPE_CHECKING:
    from collections.abc import Iterator

TIME_SCALE = 0.02  # a default 2 s task runs 40 ms


class Api:
    """requests against one API version of the emulator, with its PAT."""

    def __init__(self, emu: Emulator, version: str = "2.2", token: str | None = None) -> None:
        self.emu = emu
        self.base = f"{emu.url}/api/{version}/"
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token or emu.token}"

    def get(self, path: str, **params: Any) -> requests.Response:
        return self.session.get(self.base + path, params=params, timeout=10)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        return self.session.post(self.base + path, json=body, timeout=10, **kwargs)

    def ok(self, response: requests.Response) -> Any:
        assert response.status_code == 200, response.text
        return response.json()

    def submit(self, body: dict[str, Any]) -> int:
        return int(self.ok(self.post("jobs/runs/submit", body))["run_id"])

    def run(self, run_id: int, **params: Any) -> dict[str, Any]:
        return self.ok(self.get("jobs/runs/get", run_id=run_id, **params))

    def wait(self, run_id: int, timeout: float = 5.0, **params: Any) -> dict[str, Any]:
        """Poll runs/get until the run is terminal (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.run(run_id, **params)
            if run["status"]["state"] == "TERMINATED":
                return run
            assert time.monotonic() < deadline, f"run {run_id} still {run['status']} after {timeout} s"
            time.sleep(0.01)


class Clock:
    """A hand-stepped clock for ``Emulator(clock=...)``: life cycles advance only when a test says."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def notebook(**params: Any) -> dict[str, Any]:
    return {"notebook_path": "/Shared/nb", "base_parameters": {k: str(v) for k, v in params.items()}}


def task(key: str, *deps: str, cluster: str = "emulator-cluster", **params: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"task_key": key, "existing_cluster_id": cluster, "notebook_task": notebook(**params)}
    if deps:
        spec["depends_on"] = [{"task_key": d} for d in deps]
    return spec


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(time_scale=TIME_SCALE) as emulator:
        yield emulator


@pytest.fixture
def api(emu: Emulator) -> Api:
    return Api(emu)
