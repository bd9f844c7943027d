"""A throwaway Airflow deployment: PostgreSQL, the Airflow components and the emulator, as processes.

Everything listens on 127.0.0.1 and lives in one temporary directory; ``Deployment.stop``
ends every process group it started and removes the directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import requests

if TYPE_CHECKING:
    from collections.abc import Callable

HERE = Path(__file__).resolve().parent
DAGS_FOLDER = HERE / "dags"
BIN = Path(sys.executable).parent
EMULATOR_TOKEN = "dapi-deployment-" + secrets.token_hex(8)
# Drivers Airflow needs for a PostgreSQL metadata database (sync and async engines).
DB_DRIVERS = {"psycopg2": "psycopg2-binary", "asyncpg": "asyncpg"}

CELERY_WORKERS = ("worker-1", "worker-2")
WORKER_SLOTS = 2
TRIGGERER_CAPACITY = 10

T = TypeVar("T")


class DeploymentUnavailable(Exception):
    """This machine cannot host the deployment (no PostgreSQL and no way to install it, ...)."""


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    what: str,
    probe: Callable[[], T],
    *,
    timeout: float,
    interval: float = 0.5,
    diagnose: Callable[[], str] | None = None,
) -> T:
    """Call ``probe`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = probe()
            if result:
                return result
        except (requests.RequestException, OSError, KeyError, ValueError) as exc:
            last_error = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            extra = f"\n{diagnose()}" if diagnose else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{detail}{extra}")
        time.sleep(interval)


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def _error_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if "Error" in line or "Exception" in line or "FATAL" in line]


def ensure_db_drivers() -> None:
    """psycopg2 and asyncpg in this interpreter's environment (installed from PyPI when missing)."""
    import importlib.util

    missing = [dist for module, dist in DB_DRIVERS.items() if importlib.util.find_spec(module) is None]
    if not missing:
        return
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *missing],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise DeploymentUnavailable(f"cannot install {', '.join(missing)}: {done.stderr.strip()[-500:]}")


def _pg_version(initdb: Path) -> tuple[int, ...]:
    with contextlib.suppress(ValueError):
        return tuple(int(part) for part in initdb.parent.parent.name.split("."))
    return (0,)


def find_postgres() -> Path | None:
    """The bin directory of the newest installed PostgreSQL server, if any."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=_pg_version)
    if found:
        return found[-1].parent
    on_path = shutil.which("initdb")
    return Path(on_path).resolve().parent if on_path else None


def apt_install(package: str, find: Callable[[], T | None]) -> T:
    """What ``find`` returns, after installing Debian's ``package`` if it found nothing."""
    found = find()
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise DeploymentUnavailable(f"{package} is not installed and apt-get cannot install it here (needs root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", package]
    if subprocess.run(install, env=env, capture_output=True, check=False).returncode:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=False)
        done = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
        if done.returncode:
            raise DeploymentUnavailable(f"apt-get install {package} failed: {done.stderr.strip()[-500:]}")
    found = find()
    if not found:
        raise DeploymentUnavailable(f"apt-get installed {package} but its programs were not found")
    return found


def ensure_postgres() -> Path:
    """PostgreSQL's server binaries, installing Debian's ``postgresql`` package if needed."""
    return apt_install("postgresql", find_postgres)


def ensure_redis() -> Path:
    """The Redis server (the Celery broker), installing Debian's ``redis-server`` package if needed."""
    return apt_install("redis-server", lambda: Path(found) if (found := shutil.which("redis-server")) else None)


# --------------------------------------------------------------------------- processes


@dataclass
class Component:
    """One long-running process in its own process group, its output in a log file."""

    name: str
    argv: list[str]
    log: Path
    env: dict[str, str]
    user: str | None = None
    popen: subprocess.Popen[bytes] | None = None
    log_start: int = 0  # where this start's output begins in the log

    def start(self) -> Component:
        with open(self.log, "ab") as out:
            self.log_start = out.tell()
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.log.parent,
                start_new_session=True,
                user=self.user,
                group=self.user,
                extra_groups=[] if self.user else None,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def send(self, sig: int, *, group: bool = True) -> None:
        """Send ``sig`` to the whole process group (the component and the children it forked),
        or with ``group=False`` to the component's own process only."""
        if self.popen is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if group:
                    os.killpg(self.popen.pid, sig)
                else:
                    os.kill(self.popen.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        """End the process group: ``sig``, then SIGKILL after ``timeout`` seconds. Returns the exit code."""
        if self.popen is None:
            return None
        self.send(sig)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.send(signal.SIGKILL)
            self.popen.wait(10)
        # Children that outlived their leader (e.g. forked workers) still carry the group id.
        self.send(signal.SIGKILL)
        return self.popen.returncode


@dataclass
class Deployment:
    """PostgreSQL + api-server + scheduler + dag-processor + triggerer(s) + the emulator.

    With ``celery=True``: the CeleryExecutor with Redis as broker and PostgreSQL as result
    backend, two Celery workers (``CELERY_WORKERS``, ``WORKER_SLOTS`` slots each) and two
    triggerers (``triggerer``, ``triggerer-2``) of ``TRIGGERER_CAPACITY`` triggers each.
    """

    celery: bool = False

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="airflow-dbx-deployment-")))
    components: dict[str, Component] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    api_url: str = ""
    emulator_url: str = ""
    pg_port: int = 0
    results: dict[str, Any] = field(default_factory=dict)  # what one scenario leaves for the next
    redis_port: int = 0
    stopped: bool = False

    @property
    def kind(self) -> str:
        return "CeleryExecutor" if self.celery else "LocalExecutor"

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Start every component; on any failure stop what started and raise ``DeploymentUnavailable``
        with one paragraph that says why (the step, the component that exited, a port in use)."""
        try:
            self._start()
        except DeploymentUnavailable:
            self.stop()
            raise
        except Exception as exc:
            reason = self.why_not_started(exc)
            self.stop()
            raise DeploymentUnavailable(reason) from exc

    def _running(self) -> bool:
        """True while every component runs; raises (ending a wait at once) when one has exited."""
        for name, component in self.components.items():
            if not component.alive():
                raise RuntimeError(f"{name} exited while the deployment started")
        return True

    def why_not_started(self, exc: BaseException) -> str:
        """The error's first line and its last error line, and which component died with what."""
        text = str(exc).splitlines() or [type(exc).__name__]
        lines = [text[0], *(line.strip() for line in _error_lines(text)[-1:] if line != text[0])]
        for name, component in self.components.items():
            if component.popen is not None and not component.alive():
                last = tail(component.log, 200)
                in_use = "address already in use" in last.lower()
                said = (_error_lines(last.splitlines()) or last.splitlines() or ["(no output)"])[-1].strip()
                why = "a port it needs is in use" if in_use else said
                lines.append(f"{name} exited with code {component.popen.returncode}: {why}")
        return "; ".join(lines)

    def _start(self) -> None:
        self.root.chmod(0o755)  # the PostgreSQL user must reach its data directory
        (self.root / "logs").mkdir()
        pg_bin = ensure_postgres()
        redis = ensure_redis() if self.celery else None
        ensure_db_drivers()
        self._start_postgres(pg_bin)
        if redis is not None:
            self._start_redis(redis)
        self._start_emulator()
        self._configure_airflow()
        self.run_airflow("db", "migrate", timeout=300)
        triggerers = ("triggerer", "triggerer-2") if self.celery else ("triggerer",)
        for name, argv in (
            ("api-server", ["api-server"]),
            ("scheduler", ["scheduler"]),
            ("dag-processor", ["dag-processor"]),
            *((name, ["triggerer", "--skip-serve-logs"]) for name in triggerers),
        ):
            self.start_airflow(name, *argv)
        for name in CELERY_WORKERS if self.celery else ():
            self.start_worker(name)
        self.api = AirflowApi(self.api_url)
        wait_until(
            "the API server", lambda: self._running() and self.api.healthy_api(), timeout=120, diagnose=self.diagnose
        )
        wait_until(
            "scheduler, dag-processor and triggerer to report healthy",
            lambda: self._running() and self.api.healthy("scheduler", "dag_processor", "triggerer"),
            timeout=120,
            diagnose=self.diagnose,
        )
        if self.celery:
            wait_until(
                f"{len(triggerers)} live triggerers",
                lambda: len(self.api.alive_jobs("TriggererJob")) == len(triggerers),
                timeout=120,
                diagnose=self.diagnose,
            )
            for name in CELERY_WORKERS:
                self.wait_worker_ready(name)

    def stop(self) -> None:
        """Stop everything (Airflow first, then the emulator and PostgreSQL) and remove the directory.

        Safe to call more than once."""
        if self.stopped:
            return
        self.stopped = True
        for name in reversed(list(self.components)):
            with contextlib.suppress(Exception):
                self.components[name].stop(signal.SIGINT if name == "postgres" else signal.SIGTERM)
        keep = os.environ.get("AIRFLOW_DBX_DEPLOYMENT_KEEP_LOGS")
        if keep and (self.root / "logs").is_dir():
            shutil.copytree(self.root / "logs", Path(keep), dirs_exist_ok=True)
        shutil.rmtree(self.root, ignore_errors=True)

    # ---------------------------------------------------------------- PostgreSQL

    def _start_postgres(self, pg_bin: Path) -> None:
        user = "postgres" if os.geteuid() == 0 else None  # initdb refuses to run as root
        if user is not None:
            try:
                import pwd

                pwd.getpwnam(user)
            except KeyError:
                raise DeploymentUnavailable(
                    "running as root, but there is no 'postgres' user to run PostgreSQL"
                ) from None
        data = self.root / "pgdata"
        data.mkdir(mode=0o700)
        if user is not None:
            shutil.chown(data, user, user)
        init = subprocess.run(
            [str(pg_bin / "initdb"), "-D", str(data), "-U", "airflow", "--auth=trust", "-E", "UTF8", "--no-locale",
             "--no-sync"],
            capture_output=True, text=True, check=False, user=user, group=user, extra_groups=[] if user else None,
            cwd=self.root,
        )  # fmt: skip
        if init.returncode:
            raise RuntimeError(f"initdb failed:\n{init.stdout}\n{init.stderr}")
        self.pg_port = free_port()
        log = self.root / "logs" / "postgres.log"
        log.touch()
        if user is not None:
            shutil.chown(log, user, user)
        argv = [
            str(pg_bin / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(self.pg_port),
            "-k", str(data), "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
            "-c", "max_connections=200",
        ]  # fmt: skip
        self.components["postgres"] = Component("postgres", argv, log, {"PATH": os.environ["PATH"]}, user).start()

        def ready() -> bool:
            probe = [str(pg_bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "airflow"]
            return subprocess.run(probe, capture_output=True, check=False).returncode == 0

        wait_until("PostgreSQL to accept connections", ready, timeout=60, diagnose=self.diagnose)
        created = subprocess.run(
            [str(pg_bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "airflow", "airflow"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if created.returncode:
            raise RuntimeError(f"createdb failed: {created.stderr}")

    # ---------------------------------------------------------------- Redis (the Celery broker)

    def _start_redis(self, server: Path) -> None:
        self.redis_port = free_port()
        data = self.root / "redis"
        data.mkdir()
        argv = [str(server), "--bind", "127.0.0.1", "--port", str(self.redis_port), "--dir", str(data),
                "--save", "", "--appendonly", "no", "--protected-mode", "yes"]  # fmt: skip
        log = self.root / "logs" / "redis.log"
        self.components["redis"] = Component("redis", argv, log, {"PATH": os.environ["PATH"]}).start()

        def ready() -> bool:
            with socket.create_connection(("127.0.0.1", self.redis_port), timeout=2) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")

        wait_until("Redis to answer PING", ready, timeout=30, interval=0.2, diagnose=self.diagnose)

    # ---------------------------------------------------------------- emulator

    def _start_emulator(self) -> None:
        port_file = self.root / "emulator.url"
        argv = [sys.executable, "-m", "airflow_dbx.emulator", "--port", "0", "--port-file", str(port_file),
                "--token", EMULATOR_TOKEN, "--time-scale", "1"]  # fmt: skip
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.components["emulator"] = Component("emulator", argv, self.root / "logs" / "emulator.log", env).start()
        wait_until("the emulator's URL", port_file.exists, timeout=30, interval=0.1, diagnose=self.diagnose)
        self.emulator_url = port_file.read_text().strip()
        self.emulator = EmulatorAdmin(self.emulator_url, EMULATOR_TOKEN)
        wait_until("the emulator", self.emulator.health, timeout=30, diagnose=self.diagnose)

    # ---------------------------------------------------------------- Airflow

    def _configure_airflow(self) -> None:
        api_port = free_port()
        self.api_url = f"http://127.0.0.1:{api_port}"
        home = self.root / "airflow-home"
        home.mkdir()
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_HOME"))}
        self.env = {
            **keep,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "1",  # a single worker slot
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://airflow@127.0.0.1:{self.pg_port}/airflow",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__API__BASE_URL": self.api_url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.root / "logs" / "tasks"),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            # Short loops, so the scenarios take seconds, not minutes.
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "1",
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.2",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "12",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
            "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "8",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            "AIRFLOW_CONN_DATABRICKS_DEFAULT": json.dumps(
                {"conn_type": "dbx", "host": self.emulator_url, "password": EMULATOR_TOKEN}
            ),
        }
        if self.celery:
            self.env.update(self._celery_settings())

    def _celery_settings(self) -> dict[str, str]:
        return {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(WORKER_SLOTS * len(CELERY_WORKERS)),
            "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://airflow@127.0.0.1:{self.pg_port}/airflow",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(WORKER_SLOTS),
            "AIRFLOW__TRIGGERER__CAPACITY": str(TRIGGERER_CAPACITY),
            # Two workers and two triggerers share this machine: each is told apart by its name.
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.deployment.hostname.component_name",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parent.parent), os.environ.get("PYTHONPATH")])),
        }

    def run_airflow(self, *args: str, timeout: float = 120) -> str:
        log = self.root / "logs" / f"airflow-{args[0]}-{args[1] if len(args) > 1 else ''}.log"
        done = subprocess.run(
            [str(BIN / "airflow"), *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        log.write_text(done.stdout + done.stderr)
        if done.returncode:
            raise RuntimeError(f"airflow {' '.join(args)} failed ({done.returncode}):\n{tail(log, 60)}")
        return done.stdout

    def start_airflow(self, name: str, *args: str, env: dict[str, str] | None = None) -> Component:
        old = self.components.get(name)
        if old is not None and old.alive():
            raise RuntimeError(f"{name} is still running")
        log = self.root / "logs" / f"{name}.log"
        # With Celery, each component names itself in Airflow's records (jobs, task instances).
        named = {"AIRFLOW_DBX_HOSTNAME": name} if self.celery else {}
        component = Component(name, [str(BIN / "airflow"), *args], log, {**self.env, **named, **(env or {})})
        self.components[name] = component.start()
        return component

    def start_worker(self, name: str) -> Component:
        """A Celery worker as its own process group; its task instances' ``hostname`` is ``name``."""
        return self.start_airflow(
            name, "celery", "worker", "--celery-hostname", f"{name}@%h", "--concurrency", str(WORKER_SLOTS),
            "--skip-serve-logs",
        )  # fmt: skip

    def wait_worker_ready(self, name: str) -> None:
        worker = self.components[name]

        def ready() -> bool:
            self._running()
            with open(worker.log, "rb") as log:
                log.seek(worker.log_start)
                return b" ready." in log.read()

        wait_until(
            f"Celery worker {name} to be ready",
            ready,
            timeout=120,
            diagnose=self.diagnose,
        )

    def wait_for(self, what: str, probe: Callable[[], T], *, timeout: float) -> T:
        """``wait_until`` with every component's log in the failure message."""
        return wait_until(what, probe, timeout=timeout, diagnose=self.diagnose)

    def diagnose(self, lines: int = 25) -> str:
        """Which components run, and the end of each log: for failure messages."""
        parts = []
        for name, component in self.components.items():
            status = "running" if component.alive() else f"exited {component.popen and component.popen.returncode}"
            parts.append(f"--- {name} ({status}), {component.log.name}:\n{tail(component.log, lines)}")
        return "\n".join(parts)


# --------------------------------------------------------------------------- clients


class AirflowApi:
    """The parts of Airflow's REST API (/api/v2) a user drives a DAG run with."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        self._token: str | None = None

    def _auth(self) -> dict[str, str]:
        if self._token is None:
            # The simple auth manager with ``simple_auth_manager_all_admins`` hands out admin JWTs.
            answer = self.session.get(f"{self.base_url}/auth/token", timeout=10)
            answer.raise_for_status()
            self._token = answer.json()["access_token"]
        return {"Authorization": f"Bearer {self._token}"}

    def request(self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kwargs: Any) -> Any:
        answer = self.session.request(
            method, f"{self.base_url}/api/v2{path}", headers=self._auth(), timeout=30, **kwargs
        )
        if answer.status_code not in ok:
            raise AssertionError(f"{method} /api/v2{path}: HTTP {answer.status_code} {answer.text[:500]}")
        return answer.json() if answer.content else None

    def healthy_api(self) -> bool:
        return self.session.get(f"{self.base_url}/api/v2/monitor/health", timeout=5).status_code == 200

    def healthy(self, *components: str) -> bool:
        health = self.session.get(f"{self.base_url}/api/v2/monitor/health", timeout=5).json()
        return all((health.get(name) or {}).get("status") == "healthy" for name in components)

    def dag(self, dag_id: str) -> dict[str, Any] | None:
        answer = self.session.get(f"{self.base_url}/api/v2/dags/{dag_id}", headers=self._auth(), timeout=10)
        return answer.json() if answer.status_code == 200 else None

    def unpause(self, dag_id: str) -> None:
        self.request("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        answer = self.request("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}})
        return str(answer["dag_run_id"])

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}"))

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        answer = self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        return {ti["task_id"]: ti for ti in answer["task_instances"]}

    def task_instance(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"))

    def tries(self, dag_id: str, run_id: str, task_id: str) -> list[dict[str, Any]]:
        answer = self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/tries")
        return list(answer["task_instances"])

    def set_state(self, dag_id: str, run_id: str, task_id: str, state: str) -> Any:
        return self.request(
            "PATCH", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}", json={"new_state": state}
        )

    def clear(self, dag_id: str, run_id: str, task_ids: list[str], *, include_downstream: bool = False) -> Any:
        body = {"dry_run": False, "dag_run_id": run_id, "task_ids": task_ids, "only_failed": False,
                "reset_dag_runs": True, "include_downstream": include_downstream}  # fmt: skip
        return self.request("POST", f"/dags/{dag_id}/clearTaskInstances", json=body)

    def links(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/links"))

    def alive_jobs(self, job_type: str) -> list[dict[str, Any]]:
        """Jobs (scheduler, triggerer, ...) whose heartbeat is recent."""
        answer = self.request("GET", "/jobs", params={"job_type": job_type, "is_alive": "true", "job_state": "running"})
        return list(answer["jobs"])

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str) -> Any:
        answer = self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}")
        return answer["value"]


class EmulatorAdmin:
    """The emulator's admin API (``/__emulator__/``): what really happened on the "workspace"."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def _get(self, route: str, **params: Any) -> Any:
        answer = self.session.get(f"{self.base_url}/__emulator__/{route}", params=params, timeout=10)
        answer.raise_for_status()
        return answer.json()

    def health(self) -> bool:
        return bool(self._get("health").get("ok"))

    def add_fault(self, fault: dict[str, Any]) -> None:
        """One fault rule (see ``airflow_dbx.emulator.admin``), met by the next matching requests."""
        answer = self.session.post(f"{self.base_url}/__emulator__/faults", json=fault, timeout=10)
        answer.raise_for_status()

    def faults(self) -> list[dict[str, Any]]:
        """The fault rules not yet used up."""
        return list(self._get("faults")["faults"])

    def clear_faults(self) -> None:
        self.session.delete(f"{self.base_url}/__emulator__/faults", json={}, timeout=10).raise_for_status()

    def runs(self) -> list[dict[str, Any]]:
        return list(self._get("runs")["runs"])

    def runs_named(self, run_name: str) -> list[dict[str, Any]]:
        return [run for run in self.runs() if run.get("run_name") == run_name]

    def requests_since(self, since: int) -> list[dict[str, Any]]:
        """The Jobs API requests the emulator answered, from the ``since``-th on."""
        return list(self._get("requests", since=since)["requests"])

    def request_count(self) -> int:
        return int(self._get("requests")["next"])
