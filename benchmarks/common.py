"""Helpers shared by the benchmark driver (``run.py``) and its workers (``bench_*.py``).

Standard library only: the driver runs under any Python 3.10+, the workers in either
provider's virtual environment.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TOKEN = "dapi-bench-token"
CONN_ID = "databricks_bench"
HUGE_DURATION = 10_000_000  # seconds: a run that stays RUNNING for the whole benchmark


# ---------------------------------------------------------------------- statistics


def summary(values: list[float]) -> dict[str, Any]:
    """Median and range of a sample (the figures RESULTS.md prints)."""
    values = [v for v in values if v is not None]
    if not values:
        return {"n": 0, "median": None, "min": None, "max": None}
    return {"n": len(values), "median": statistics.median(values), "min": min(values), "max": max(values)}


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100), nearest-rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


# ---------------------------------------------------------------------- emulator process


class EmulatorProcess:
    """``python -m airflow_dbx.emulator`` in its own process, on 127.0.0.1 and a free port."""

    def __init__(self, python: str, workdir: Path, *, time_scale: float = 1.0, name: str = "emulator") -> None:
        self.python = python
        self.workdir = workdir
        self.time_scale = time_scale
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.port = 0

    def start(self, timeout: float = 30.0) -> EmulatorProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        port_file = self.workdir / f"{self.name}.port"
        port_file.unlink(missing_ok=True)
        log = open(self.workdir / f"{self.name}.log", "wb")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [self.python, "-m", "airflow_dbx.emulator", "--host", "127.0.0.1", "--port", "0",
             "--port-file", str(port_file), "--token", TOKEN, "--time-scale", str(self.time_scale)],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
        )
        deadline = time.monotonic() + timeout
        while not port_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the emulator did not start; see {self.workdir / (self.name + '.log')}")
            time.sleep(0.05)
        self.url = port_file.read_text().strip()
        self.port = int(self.url.rsplit(":", 1)[1])
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EmulatorClient:
    """Blocking calls to an emulator (API and admin routes) over one keep-alive connection."""

    def __init__(self, url: str, token: str = TOKEN) -> None:
        import http.client

        host, port = url.split("://", 1)[1].rsplit(":", 1)
        self._conn = http.client.HTTPConnection(host, int(port), timeout=30)
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        self._conn.request(method, path, body=data, headers=self._headers)
        response = self._conn.getresponse()
        raw = response.read()
        if response.status >= 300:
            raise RuntimeError(f"{method} {path} -> {response.status}: {raw[:300]!r}")
        return json.loads(raw) if raw else {}

    def submit(self, duration: float, name: str = "bench") -> int:
        body = {
            "run_name": name,
            "tasks": [{
                "task_key": "main",
                "existing_cluster_id": "emulator-bench",
                "notebook_task": {"notebook_path": "/bench", "base_parameters": {"emulator_duration": str(duration)}},
            }],
        }
        return int(self.call("POST", "/api/2.2/jobs/runs/submit", body)["run_id"])

    def counters(self) -> dict[str, Any]:
        return self.call("GET", "/__emulator__/counters")

    def run(self, run_id: int) -> dict[str, Any]:
        return self.call("GET", f"/__emulator__/runs?run_id={run_id}")

    def reset(self) -> None:
        self.call("POST", "/__emulator__/reset", {})

    def close(self) -> None:
        self._conn.close()


def runs_get_count(counters: dict[str, Any]) -> int:
    return int(counters.get("requests", {}).get("GET jobs/runs/get", 0))


def poll_count(counters: dict[str, Any], kind: str = "run") -> int:
    """The status reads the emulator answered: runs/get, or for ``kind="sql"`` a statement's GET
    and the query history reads (ours reads many statements' states at once)."""
    if kind == "run":
        return runs_get_count(counters)
    # The emulator counts each statement's path apart: GET sql/statements/<id>.
    return sum(
        int(count) for key, count in counters.get("requests", {}).items()
        if (key.startswith("GET sql/statements/") and "/result" not in key) or key == "GET sql/history/queries"
    )


def total_requests(counters: dict[str, Any]) -> int:
    return int(sum(counters.get("requests", {}).values()))


# ---------------------------------------------------------------------- connections


def emulator_client_sockets(port: int) -> tuple[int, set[int], int]:
    """Client-side TCP sockets to 127.0.0.1:``port`` right now: (established, their local ports, time-wait).

    Read from /proc/net/tcp (the network namespace's table), so it needs no access to the
    client process and costs it nothing.
    """
    established = 0
    time_wait = 0
    local_ports: set[int] = set()
    want = f"{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as handle:
                next(handle, None)
                for line in handle:
                    fields = line.split()
                    if len(fields) < 4 or fields[2].rsplit(":", 1)[1] != want:
                        continue
                    if fields[3] == "01":
                        established += 1
                        local_ports.add(int(fields[1].rsplit(":", 1)[1], 16))
                    elif fields[3] == "06":
                        time_wait += 1
        except FileNotFoundError:
            continue
    return established, local_ports, time_wait


# ---------------------------------------------------------------------- machine


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    except OSError:
        pass
    info["loadavg"] = load_average()
    return info


def load_average() -> list[float] | None:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def worker_env(provider: str, emulator_url: str | None, home: Path) -> dict[str, str]:
    """Environment for a worker: a private AIRFLOW_HOME and the bench connection for its provider."""
    home.mkdir(parents=True, exist_ok=True)
    env = {
        key: value for key, value in os.environ.items()
        if not key.startswith("AIRFLOW_CONN_") and key not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    })
    if emulator_url:
        env[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = connection_json(provider, emulator_url)
        env["AIRFLOW_CONN_DATABRICKS_DEFAULT"] = connection_json(provider, emulator_url)
    return env


def connection_json(provider: str, emulator_url: str) -> str:
    """The connection each provider needs to reach the emulator over plain http on loopback.

    Ours takes the URL with its scheme and port in ``host``. The official hook strips any
    scheme from ``host`` and builds ``{schema or 'https'}://{host}{:port}``, so it gets
    ``schema="http"`` and the port in ``port``; with no login, its password is a PAT.
    """
    if provider == "ours":
        return json.dumps({"conn_type": "dbx", "host": emulator_url, "password": TOKEN})
    host, port = emulator_url.split("://", 1)[1].rsplit(":", 1)
    return json.dumps({"conn_type": "databricks", "host": host, "port": int(port), "schema": "http", "password": TOKEN})


def emit(event: str, **data: Any) -> None:
    """A line the driver reads from a worker's stdout."""
    print(json.dumps({"event": event, **data}), flush=True)


def fetch(url: str, token: str = TOKEN) -> dict[str, Any]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())
