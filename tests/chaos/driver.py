"""The chaos driver: seeded scenarios of task instances run through the operators and the
trigger against a faulty emulator, and the invariants checked against the emulator's record.

A scenario is drawn from its seed alone (``Scenario.from_seed``): the operator, the wait mode,
the run's shape and outcome, the auth mode, one life event (a worker that dies after
submitting, a triggerer restart, a user's kill, an execution timeout while deferred) and a
schedule of faults (5xx bursts, 429 with and without Retry-After, dropped connections, answers
slower than the client's timeout, POSTs carried out whose answer is lost, OAuth tokens that
expire mid-run). The schedule is reproducible; the interleaving of threads is not, which is
the point: replay a seed alone with ``CHAOS_SEED=<seed>``.

What runs is Airflow's and this package's own code: the operators' ``execute`` /
``execute_complete`` / ``on_kill`` and the trigger's ``run`` / ``on_kill`` / ``serialize``.
The harness only wraps the hook each of them builds, to count its calls, arm mid-run faults
at a given call, and make a "dead worker" raise at its next request, as a killed process
would stop there. Tries of one task instance are played in sequence, as the scheduler does
after a worker died (``TryContext``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import importlib
import itertools
import json
import os
import random
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_dbx import compat, errors, models
from airflow_dbx.compat import AirflowTaskTimeout
from airflow_dbx.emulator import Emulator
from airflow_dbx.hook import DatabricksHook
from airflow_dbx.operators import DatabricksRunNowOperator, DatabricksSubmitRunOperator
from tests import oracle
from tests.integration.conftest import TaskDeferred, TryContext

if TYPE_CHECKING:
    from collections.abc import Callable

TIME_SCALE = 0.02  # emulator seconds per nominal second: a 20 s run lasts 0.4 s
POLL = 0.03  # polling_period_seconds of every operator and trigger
RETRY_LIMITS = (3, 8)  # the default, and a patient one
RETRY_DELAY = 0.005
SLOW_TIMEOUT = 0.4  # timeout_seconds extra of connections whose scenario has slow answers
CLUSTER = "emulator-chaos"
SCENARIO_BUDGET = 30.0  # seconds; a scenario still going after this is a violation
PER_PATH_FAULT_CAP = 6  # consecutive failures on one endpoint: past the default retry limit of 3
TRY_GAP = 1.2  # seconds from a try's end to the next try (Airflow's retry_delay); more than the clock-skew margin

FAULT_KINDS = (
    "5xx", "429_retry_after", "429_plain", "drop", "slow", "lost_response", "oauth_expiry",
    "final_4xx",  # 401/403/400 on the run while waiting: retrying cannot mend it
    "lock",  # 400 COULD_NOT_ACQUIRE_LOCK: another request holds the run; retryable
    "malformed",  # a 200 whose body is not JSON
    "rate_limit",  # the workspace throttles runs/get for a while (many waiters)
)
EVENTS = ("none", "worker_dies", "triggerer_restart", "user_kill", "kill_during_submit", "exec_timeout")


# Bugs a scenario may hit that are already pinned by a strict-xfail test (test_found_bugs.py):
# counted and reported apart, not as violations. Remove an entry once its bug is fixed.
KNOWN_BUGS: dict[str, str] = {}


class WorkerDied(BaseException):
    """The worker process is gone: raised at the dead worker's next request."""


# ---------------------------------------------------------------------- the TI state seen by triggers

_TI_STATES: dict[tuple[str, str, str, int], str] = {}
_TI_LOCK = threading.Lock()


def ti_state(dag_id: str, task_id: str, run_id: str, map_index: int) -> str | None:
    """Stands in for ``compat.task_instance_state`` (which asks the Airflow API server)."""
    with _TI_LOCK:
        return _TI_STATES.get((dag_id, task_id, run_id, map_index), "deferred")


def set_ti_state(ti: Any, state: str) -> None:
    with _TI_LOCK:
        _TI_STATES[(ti.dag_id, ti.task_id, ti.run_id, ti.map_index)] = state


# ---------------------------------------------------------------------- scenario


@dataclass(frozen=True)
class FaultSpec:
    kind: str  # one of FAULT_KINDS
    method: str
    path: str
    count: int
    at_call: int  # 0: armed before the task starts; n: armed before the scenario's n-th API call
    status: int | None = None
    retry_after: float | None = None


@dataclass(frozen=True)
class Scenario:
    seed: int
    operator: str  # submit | run_now
    mode: str  # sync | deferred | nowait
    shape: str  # single | multi
    outcome: str  # success | failure
    auth: str  # pat | oauth
    event: str  # one of EVENTS
    by_name: bool  # run_now names its job by job_name
    duration: float  # nominal seconds each task runs
    event_after: float  # real seconds before a kill / restart; or the execution_timeout
    restarts: int
    die_at: str  # worker_dies: "submit" (right after the POST's answer) or "poll" (at a later call)
    retry_limit: int = 8  # databricks_retry_limit
    retries: int = 0  # the Airflow task's retries
    repair_on_retry: bool = False
    map_index: int = -1
    faults: tuple[FaultSpec, ...] = ()
    clock_skew: float = 0.0  # seconds the workspace's clock is ahead of Airflow's (behind if negative)

    @property
    def error_text(self) -> str:
        return f"ChaosError: seed {self.seed} broke on purpose"

    @property
    def can_fail_on_api(self) -> bool:
        """Whether a fault may make an API call fail for good: a refusal, a bad answer, a
        sustained rate limit, or more failures on one endpoint than the retry limit allows."""
        per_path: Counter[tuple[str, str]] = Counter()
        for fault in self.faults:
            if fault.kind in ("final_4xx", "malformed", "rate_limit"):
                return True
            per_path[(fault.method, fault.path)] += fault.count
        return any(count >= self.retry_limit for count in per_path.values()) or (
            self.retry_limit == RETRY_LIMITS[0] and any(f.kind == "slow" for f in self.faults)
        )

    def cancel_may_fail(self) -> bool:
        """Whether a fault may stop the task from stopping its run: the cancel itself, or what must
        come before it (the POST sent again to learn a run id never read, or the job looked up by
        name before an earlier try's run can be found) failing for good."""
        cleanup = ("jobs/runs/cancel", "jobs/runs/submit", "jobs/run-now", "jobs/list")
        faults = [f for f in self.faults if f.path in cleanup]
        per_path = Counter(f.path for f in faults for _ in range(f.count))
        return any(f.kind == "malformed" for f in faults) or any(n >= self.retry_limit for n in per_path.values())

    @property
    def long(self) -> bool:
        return self.event in ("worker_dies", "triggerer_restart", "user_kill", "exec_timeout")

    def describe(self) -> str:
        faults = ", ".join(
            f"{f.kind}x{f.count} {f.method} {f.path}" + (f" @call{f.at_call}" if f.at_call else "") for f in self.faults
        )
        return (
            f"seed {self.seed}: {self.operator} {self.mode} {self.shape} {self.outcome} auth={self.auth} "
            f"event={self.event}" + (f"({self.die_at})" if self.event == "worker_dies" else "")
            + f" retry_limit={self.retry_limit} retries={self.retries}" + (" repair" if self.repair_on_retry else "")
            + (f" map_index={self.map_index}" if self.map_index >= 0 else "")
            + (f" clock_skew={self.clock_skew:+.2f}s" if self.clock_skew else "") + f" faults=[{faults}]"
        )

    @classmethod
    def from_seed(cls, seed: int) -> Scenario:
        rng = random.Random(seed)
        operator = rng.choice(("submit", "run_now"))
        mode = rng.choices(("sync", "deferred", "nowait"), weights=(45, 45, 10))[0]
        shape = rng.choice(("single", "multi"))
        outcome = rng.choices(("success", "failure"), weights=(60, 40))[0]
        auth = rng.choices(("pat", "oauth"), weights=(60, 40))[0]
        events = {
            "sync": ("none", "worker_dies", "user_kill", "kill_during_submit"),
            "deferred": ("none", "worker_dies", "triggerer_restart", "user_kill", "kill_during_submit", "exec_timeout"),
            "nowait": ("none",),
        }[mode]
        weights = {"none": 4, "worker_dies": 2, "triggerer_restart": 2, "user_kill": 2, "kill_during_submit": 1,
                   "exec_timeout": 2}
        event = rng.choices(events, weights=[weights[e] for e in events])[0]
        by_name = operator == "run_now" and rng.random() < 0.4
        long = event in ("worker_dies", "triggerer_restart", "user_kill", "exec_timeout")
        duration = rng.uniform(20, 35) if long else rng.uniform(1, 8)
        event_after = rng.uniform(0.08, 0.25)
        scenario = cls(
            seed=seed, operator=operator, mode=mode, shape=shape, outcome=outcome, auth=auth, event=event,
            by_name=by_name, duration=round(duration, 2), event_after=round(event_after, 3),
            restarts=rng.choice((1, 1, 2)), die_at=rng.choice(("submit", "poll")) if mode == "sync" else "submit",
            retry_limit=rng.choice(RETRY_LIMITS),
            # A try that dies is retried by the harness itself; other events keep one try chain simple.
            retries=rng.choice((0, 0, 2)) if event in ("none",) and mode != "nowait" else 0,
            map_index=rng.choice((-1, -1, -1, rng.randint(0, 7))),
        )
        if scenario.retries and outcome == "failure":
            scenario = dataclasses.replace(scenario, repair_on_retry=rng.random() < 0.5)
        scenario = _with_faults(scenario, rng)
        return dataclasses.replace(scenario, clock_skew=_clock_skew(seed))


def _clock_skew(seed: int) -> float:
    """How far the workspace's clock is from Airflow's: none in most scenarios, under a second
    in some, and several seconds either way in others (an unsynchronised host), longer than the
    gap between two tries. Drawn apart from the rest so earlier seeds keep their scenarios."""
    rng = random.Random(f"clock-skew-{seed}")
    size = rng.choices(("none", "small", "large"), weights=(6, 2, 2))[0]
    if size == "none":
        return 0.0
    magnitude = rng.uniform(0.05, 0.6) if size == "small" else rng.uniform(2.0, 30.0)
    return round(rng.choice((-1, 1)) * magnitude, 2)


def _with_faults(scenario: Scenario, rng: random.Random) -> Scenario:
    post = "jobs/runs/submit" if scenario.operator == "submit" else "jobs/run-now"
    targets: list[tuple[str, str]] = [("POST", post), ("GET", "jobs/runs/get"), ("GET", "jobs/runs/get")]
    if scenario.outcome == "failure" or scenario.shape == "single":
        targets.append(("GET", "jobs/runs/get-output"))
    if scenario.by_name:
        targets.append(("GET", "jobs/list"))
    if scenario.event in ("user_kill", "exec_timeout"):
        targets.append(("POST", "jobs/runs/cancel"))
    if scenario.auth == "oauth":
        targets.append(("POST", "oidc/v1/token"))
    kinds = [k for k in FAULT_KINDS if k != "oauth_expiry" or scenario.auth == "oauth"]
    if scenario.mode == "nowait":  # nothing polls the run
        kinds = [k for k in kinds if k not in ("final_4xx", "rate_limit")]
    per_path: Counter[tuple[str, str]] = Counter()
    faults: list[FaultSpec] = []
    for _ in range(rng.choice((0, 1, 2, 2, 3, 3, 4))):
        kind = rng.choice(kinds)
        at_call = rng.choice((0, 0, 1, 2, 3, 4, 5, 6))
        if kind == "oauth_expiry":
            faults.append(FaultSpec(kind, "*", "*", 1, max(at_call, 1)))
            continue
        if kind in ("final_4xx", "rate_limit"):
            # While the run is watched: never on its first status read, which reads the POST's run.
            status = rng.choice((401, 403, 400)) if kind == "final_4xx" else 429
            faults.append(FaultSpec(kind, "GET", "jobs/runs/get", 1, max(at_call, 3), status))
            continue
        method, path = rng.choice(targets)
        if kind == "lost_response":
            method, path = rng.choice([t for t in targets if t[0] == "POST" and t[1] != "oidc/v1/token"])
        count = {"5xx": rng.randint(1, 5), "429_retry_after": rng.randint(1, 3), "429_plain": rng.randint(1, 3),
                 "lock": rng.randint(1, 3)}.get(kind, 1)
        count = min(count, PER_PATH_FAULT_CAP - per_path[(method, path)])
        if count <= 0:
            continue
        per_path[(method, path)] += count
        status = {"5xx": rng.choice((500, 502, 503, 504)), "lock": 400, "malformed": 200}.get(
            kind, 429 if kind.startswith("429") else None
        )
        retry_after = rng.choice((0.01, 0.05)) if kind == "429_retry_after" else None
        faults.append(FaultSpec(kind, method, path, count, at_call, status, retry_after))
    return dataclasses.replace(scenario, faults=tuple(faults))


# ---------------------------------------------------------------------- statistics


@dataclass
class Stats:
    scenarios: int = 0
    violations: list[tuple[int, str]] = field(default_factory=list)
    known_bugs: Counter[str] = field(default_factory=Counter)
    faults_armed: Counter[str] = field(default_factory=Counter)
    faults_injected: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    shapes: Counter[str] = field(default_factory=Counter)
    runs_created: int = 0
    runs_cancelled: int = 0
    requests: int = 0
    tries: int = 0
    wall_seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, result: Result) -> None:
        with self.lock:
            self.scenarios += 1
            self.violations += [(result.scenario.seed, v) for v in result.violations]
            self.known_bugs.update(result.known_bugs)
            self.faults_armed.update(result.armed)
            self.faults_injected.update(result.injected)
            self.events[result.scenario.event] += 1
            s = result.scenario
            skew = "none" if not s.clock_skew else "under-1s" if abs(s.clock_skew) < 1 else "over-1s"
            self.shapes.update([f"operator:{s.operator}", f"mode:{s.mode}", f"shape:{s.shape}",
                                f"outcome:{s.outcome}", f"auth:{s.auth}", f"clock-skew:{skew}"])
            self.runs_created += result.runs
            self.runs_cancelled += result.cancels
            self.requests += result.requests
            self.tries += result.tries


STATS = Stats()


@dataclass
class Result:
    scenario: Scenario
    violations: list[str] = field(default_factory=list)
    known_bugs: list[str] = field(default_factory=list)
    armed: Counter[str] = field(default_factory=Counter)
    injected: Counter[str] = field(default_factory=Counter)
    runs: int = 0
    cancels: int = 0
    requests: int = 0
    tries: int = 0
    try_errors: list[str] = field(default_factory=list)  # each try's error type, "" for none
    seconds: float = 0.0


# ---------------------------------------------------------------------- the hook wrapper


class _Control:
    """Shared by every hook of one scenario: counts API calls, arms mid-run faults, kills the worker."""

    def __init__(self, emu: Emulator, scenario: Scenario, armed: Counter[str]) -> None:
        self.emu = emu
        self.scenario = scenario
        self.armed = armed
        self.calls = 0
        self.lock = threading.Lock()
        self.pending = sorted((f for f in scenario.faults if f.at_call), key=lambda f: f.at_call)
        self.worker_dead = threading.Event()
        self.die_after_post = False  # worker_dies(submit): the worker dies once the POST answered
        self.die_at_call: int | None = None  # worker_dies(poll): the worker dies before this call
        self.kill_at_post = False  # kill_during_submit: SIGTERM lands once the POST reached Databricks

    def before(self, role: str, endpoint: models.Endpoint) -> None:
        with self.lock:
            self.calls += 1
            due = [f for f in self.pending if f.at_call <= self.calls]
            self.pending = [f for f in self.pending if f.at_call > self.calls]
            call = self.calls
        for fault in due:
            arm(self.emu, fault, self.armed)
        if role == "worker":
            if self.die_at_call is not None and call >= self.die_at_call and endpoint.method == "GET":
                self.worker_dead.set()
            if self.worker_dead.is_set():
                raise WorkerDied(f"worker died before {endpoint.label}")

    def after(self, role: str, endpoint: models.Endpoint) -> None:
        posted = role == "worker" and endpoint in (models.SUBMIT_RUN, models.RUN_NOW)
        if posted and self.kill_at_post:
            self.kill_at_post = False
            raise WorkerDied(f"SIGTERM while {endpoint.label} was answered, before the operator read the run id")
        if posted and self.die_after_post:
            self.worker_dead.set()
            raise WorkerDied(f"worker died right after {endpoint.label} answered")


class ChaosHook(DatabricksHook):
    """The hook an operator or trigger built, reporting each call to the scenario's control."""

    _control: _Control
    _role: str

    def _call(self, endpoint: models.Endpoint, **kwargs: Any) -> Any:
        # Every request of both transports is a plan made here: one seam for sync and async.
        self._control.before(self._role, endpoint)
        answer = yield from super()._call(endpoint, **kwargs)
        self._control.after(self._role, endpoint)
        return answer


def instrument(obj: Any, control: _Control, role: str) -> Any:
    """Make ``obj._hook()`` (an operator's or a trigger's) return its real hook, reporting to ``control``."""
    build = obj._hook

    def hook() -> DatabricksHook:
        real = build()
        real.__class__ = ChaosHook
        real._control = control
        real._role = role
        return real

    obj._hook = hook
    return obj


def arm(emu: Emulator, fault: FaultSpec, armed: Counter[str]) -> None:
    armed[fault.kind] += fault.count
    if fault.kind == "oauth_expiry":
        emu.expire_oauth_tokens()
    elif fault.kind in ("5xx", "429_retry_after", "429_plain"):
        emu.fail_next(fault.method, fault.path, count=fault.count, status=fault.status or 503,
                      retry_after=fault.retry_after)
    elif fault.kind == "drop":
        emu.drop_next(fault.method, fault.path, count=fault.count)
    elif fault.kind == "slow":
        emu.delay_next(fault.method, fault.path, count=fault.count, seconds=SLOW_TIMEOUT * 2)
    elif fault.kind == "lost_response":
        emu.lose_response_next(fault.method, fault.path, count=fault.count)
    elif fault.kind == "final_4xx":
        code = {401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 400: "INVALID_PARAMETER_VALUE"}[fault.status or 400]
        emu.fail_next("GET", "jobs/runs/get", count=fault.count, status=fault.status or 400,
                      body={"error_code": code, "message": "chaos: refused"})
    elif fault.kind == "lock":
        emu.fail_next(fault.method, fault.path, count=fault.count, status=400,
                      body={"error_code": "COULD_NOT_ACQUIRE_LOCK", "message": "chaos: busy"})
    elif fault.kind == "malformed":
        emu.fail_next(fault.method, fault.path, count=fault.count, status=200, body=b"<html>not json</html>")
    elif fault.kind == "rate_limit":
        emu.set_rate_limit("jobs/runs/get", per_second=5, burst=1)


def _status_kind(rule: Any) -> str:
    status = rule.status or 0
    if status >= 500:
        return "5xx"
    if status == 429:
        return "429_retry_after" if rule.retry_after else "429_plain"
    if status == 200:
        return "malformed"
    return "lock" if "LOCK" in str(rule.body) else "final_4xx"


def _injected(emu: Emulator, scenario: Scenario, armed: Counter[str]) -> Counter[str]:
    """Faults that fired: those armed minus those still waiting in the emulator's rules."""
    left: Counter[str] = Counter()
    for rule in list(emu._state.faults.rules):
        kind = {"status": None, "delay": "slow", "drop": "drop", "lose_response": "lost_response"}[rule.kind]
        left[kind or _status_kind(rule)] += rule.count
    out = Counter(armed)
    out.subtract(left)
    return +out


# ---------------------------------------------------------------------- running one scenario


def _task_params(scenario: Scenario, failing: bool) -> dict[str, Any]:
    params: dict[str, Any] = {"emulator_duration": scenario.duration}
    if failing:
        params.update(emulator_result="FAILED", emulator_error=scenario.error_text,
                      emulator_error_trace=f"Traceback (most recent call last):\n  File \"/nb\"\n{scenario.error_text}")
    else:
        params["emulator_output"] = f"output of seed {scenario.seed}"
    return params


def _tasks(scenario: Scenario, with_duration: bool) -> list[dict[str, Any]]:
    failing = scenario.outcome == "failure"
    if scenario.shape == "single":
        keys = [("only", failing, [])]
    else:
        keys = [("extract", False, []), ("transform", failing, ["extract"]), ("report", False, ["extract"])]
    tasks = []
    for key, fails, deps in keys:
        params = _task_params(scenario, fails)
        if not with_duration:
            params.pop("emulator_duration")
        task = {"task_key": key, "existing_cluster_id": CLUSTER,
                "notebook_task": {"notebook_path": f"/chaos/{key}", "base_parameters": params}}
        if deps:
            task["depends_on"] = [{"task_key": d} for d in deps]
        tasks.append(task)
    return tasks


class _Task:
    """One Airflow task instance of a scenario: builds its operator afresh for each try, as a worker would."""

    def __init__(self, scenario: Scenario, conn_id: str, control: _Control, job: int | None) -> None:
        self.scenario = scenario
        self.conn_id = conn_id
        self.control = control
        self.job = job
        self.task_id = f"chaos_{scenario.seed}"
        self.run_id = f"chaos__{scenario.seed}"

    def operator(self) -> Any:
        s = self.scenario
        common: dict[str, Any] = dict(
            task_id=self.task_id, databricks_conn_id=self.conn_id, polling_period_seconds=POLL,
            databricks_retry_limit=s.retry_limit, databricks_retry_delay=RETRY_DELAY,
            wait_for_termination=s.mode != "nowait", deferrable=s.mode == "deferred",
            retries=s.retries, repair_on_retry=s.repair_on_retry,
        )
        if s.event == "exec_timeout":
            common["execution_timeout"] = datetime.timedelta(seconds=s.event_after + 0.1)
        if s.operator == "submit":
            if s.shape == "single":
                (task,) = _tasks(s, with_duration=True)
                op = DatabricksSubmitRunOperator(
                    notebook_task=task["notebook_task"], existing_cluster_id=CLUSTER, **common)
            else:
                op = DatabricksSubmitRunOperator(json={"run_name": f"seed {s.seed}", "tasks": _tasks(s, True)}, **common)
        else:
            named = {"job_name": f"chaos job {s.seed}"} if s.by_name else {"job_id": self.job}
            op = DatabricksRunNowOperator(notebook_params={"emulator_duration": s.duration}, **named, **common)
        return instrument(op, self.control, "worker")

    def context(self, try_number: int) -> TryContext:
        s = self.scenario
        return TryContext(try_number, task_id=self.task_id, run_id=self.run_id, max_tries=s.retries,
                          map_index=s.map_index, started_now=True)


@dataclass
class _Outcome:
    state: str = "running"  # success | failed
    error: BaseException | None = None
    returned: Any = None
    killed: bool = False
    killed_at: float = 0.0  # epoch seconds when the kill began
    timed_out: bool = False
    deadline: float | None = None  # the trigger's, when the task deferred
    xcom: dict[str, Any] = field(default_factory=dict)
    ended_at: float = 0.0  # epoch seconds when the task ended for good


def run_scenario(seed: int, emu: Emulator) -> Result:
    """Play scenario ``seed`` against ``emu``, a fresh emulator already named by ``connection_env(seed)``."""
    scenario = Scenario.from_seed(seed)
    result = Result(scenario)
    started = time.monotonic()
    try:
        _play(emu, scenario, result)
    except Exception:
        result.violations.append("the harness failed: " + traceback.format_exc(limit=6))
    finally:
        counters = emu.counters
        result.runs = counters["runs_created"]
        result.cancels = counters["cancels"]
        result.requests = sum(counters["requests"].values())
        result.injected = _injected(emu, scenario, result.armed)
        result.seconds = time.monotonic() - started
    STATS.add(result)
    return result


def connection_env(seed: int) -> str:
    return f"AIRFLOW_CONN_CHAOS_{seed}"


def _connect(emu: Emulator, scenario: Scenario) -> None:
    extra: dict[str, Any] = {}
    if any(f.kind == "slow" for f in scenario.faults):
        extra["timeout_seconds"] = SLOW_TIMEOUT
    if scenario.auth == "oauth":
        client, secret = f"chaos-sp-{scenario.seed}", f"chaos-oauth-secret-{scenario.seed:06d}"
        emu.add_oauth_client(client, secret)
        conn = {"conn_type": "dbx", "host": emu.url, "login": client, "password": secret,
                "extra": {**extra, "service_principal_oauth": True}}
    else:
        conn = {"conn_type": "dbx", "host": emu.url, "password": emu.token, "extra": extra}
    os.environ[connection_env(scenario.seed)] = json.dumps(conn)


def _play(emu: Emulator, scenario: Scenario, result: Result) -> None:
    job = None
    if scenario.operator == "run_now":
        job = emu.create_job({"name": f"chaos job {scenario.seed}", "tasks": _tasks(scenario, with_duration=False)})
    control = _Control(emu, scenario, result.armed)
    for fault in scenario.faults:
        if not fault.at_call:
            arm(emu, fault, result.armed)
    task = _Task(scenario, f"chaos_{scenario.seed}", control, job)
    outcome = _drive(task, result)
    outcome.ended_at = time.time()  # the task's last try is over: it ended for good
    _check(emu, scenario, outcome, result)


def _drive(task: _Task, result: Result) -> _Outcome:
    """Play the task instance's tries until it ends."""
    s = task.scenario
    control = task.control
    if s.event == "kill_during_submit":
        # SIGTERM lands while the POST is in flight: Databricks started the run, the operator
        # never read its id. on_kill must still find that run and cancel it.
        control.kill_at_post = True
        op = task.operator()
        out = _try(task, op, 1, result)
        if not isinstance(out.error, WorkerDied):
            return out  # the POST never reached Databricks (a fault answered it first)
        out.killed, out.killed_at, out.state = True, time.time(), "failed"
        op.on_kill()
        return out
    if s.event == "worker_dies":
        if s.die_at == "submit":
            control.die_after_post = True
        else:
            control.die_at_call = control.calls + 3
        first = _try(task, task.operator(), 1, result)
        if not isinstance(first.error, WorkerDied):
            return first  # it ended before the worker could die
        control.worker_dead.clear()
        control.die_after_post, control.die_at_call = False, None
        time.sleep(TRY_GAP)
        return _try(task, task.operator(), 2, result)
    if s.event == "user_kill" and s.mode == "sync":
        return _sync_kill(task, result)
    return _tries(task, result)


def _tries(task: _Task, result: Result) -> _Outcome:
    """Tries 1, 2, ... as Airflow runs them: another after each failure while retries remain."""
    try_number = 1
    while True:
        out = _try(task, task.operator(), try_number, result)
        if out.state == "success" or try_number > task.scenario.retries:
            return out
        try_number += 1
        time.sleep(TRY_GAP)  # Airflow counts the retry delay from the failed try's end


def _try(task: _Task, op: Any, try_number: int, result: Result) -> _Outcome:
    result.tries += 1
    ctx = task.context(try_number)
    out = _Outcome()
    try:
        out.returned = op.execute(ctx)
        out.state = "success"
    except TaskDeferred as deferred:
        out = _deferred(task, deferred, ctx, result)
    except (WorkerDied, errors.DatabricksError, AirflowTaskTimeout) as exc:
        out.state, out.error = "failed", exc
    out.xcom = dict(ctx.xcom)
    result.try_errors.append(type(out.error).__name__ if out.error is not None else "")
    return out


def _sync_kill(task: _Task, result: Result) -> _Outcome:
    """A user stops the task while its worker polls: on_kill, then the process dies."""
    result.tries += 1
    op = task.operator()
    ctx = task.context(1)
    out = _Outcome()
    done = threading.Event()

    def work() -> None:
        try:
            out.returned = op.execute(ctx)
            out.state = "success"
        except BaseException as exc:
            out.state, out.error = "failed", exc
        finally:
            done.set()

    worker = threading.Thread(target=work, name=f"chaos-worker-{task.scenario.seed}", daemon=True)
    worker.start()
    deadline = time.monotonic() + 10
    while op._run_id is None and not done.is_set() and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(task.scenario.event_after)
    if not done.is_set():  # else the task ended before the user got to it
        out.killed, out.killed_at = True, time.time()
        op.on_kill()
        task.control.worker_dead.set()
    if not done.wait(SCENARIO_BUDGET):
        out.error = RuntimeError("the killed worker did not stop")
    if out.killed:
        out.state = "failed"
    out.xcom = dict(ctx.xcom)
    return out


def _rebuild(trigger: Any) -> Any:
    """What the triggerer gets: the trigger rebuilt from its serialised (JSON-safe) form."""
    classpath, kwargs = trigger.serialize()
    kwargs = json.loads(json.dumps(kwargs))
    module, _, name = classpath.rpartition(".")
    return getattr(importlib.import_module(module), name)(**kwargs)


def _deferred(task: _Task, deferred: Any, ctx: TryContext, result: Result) -> _Outcome:
    s = task.scenario
    out = _Outcome()
    ti = ctx["ti"]
    set_ti_state(ti, "deferred")

    def trigger_for_ti() -> Any:
        trigger = instrument(_rebuild(deferred.trigger), task.control, "triggerer")
        trigger.task_instance = ti
        return trigger

    trigger = trigger_for_ti()
    out.deadline = trigger.deadline
    restarts = s.restarts if s.event == "triggerer_restart" else 0
    for _ in range(restarts):
        events = asyncio.run(_run_trigger(trigger, stop_after=s.event_after, user_kill=False, ti=ti))
        if events:
            break
        result.armed["triggerer_restart"] += 1
        result.injected["triggerer_restart"] += 1
        trigger = trigger_for_ti()  # a new triggerer process picks the trigger up
    else:
        kill = s.event == "user_kill"
        events = asyncio.run(_run_trigger(trigger, stop_after=s.event_after if kill else None, user_kill=kill, ti=ti))
        if kill and not events:
            out.state, out.killed, out.killed_at = "failed", True, trigger.killed_at
            return out
    if len(events) != 1:
        out.state, out.error = "failed", RuntimeError(f"the trigger fired {len(events)} events: {events}")
        return out
    event = json.loads(json.dumps(events[0]))
    out.timed_out = bool(event.get("timed_out"))
    set_ti_state(ti, "running")
    resumed = task.operator()  # a new worker runs execute_complete
    try:
        out.returned = resumed.execute_complete(ctx, event)
        out.state = "success"
    except (errors.DatabricksError, AirflowTaskTimeout) as exc:
        out.state, out.error = "failed", exc
    return out


async def _run_trigger(trigger: Any, *, stop_after: float | None, user_kill: bool, ti: Any) -> list[dict[str, Any]]:
    """Run the trigger until its first event, or stop it after ``stop_after`` seconds
    (a triggerer restart, or a user's kill when ``user_kill``)."""

    async def first_event() -> list[dict[str, Any]]:
        async for event in trigger.run():
            return [event.payload]
        return []

    waiting = asyncio.ensure_future(first_event())
    done, _ = await asyncio.wait({waiting}, timeout=stop_after if stop_after is not None else SCENARIO_BUDGET)
    if waiting in done:
        return waiting.result()
    if user_kill:
        set_ti_state(ti, "failed")  # the user marked the task failed
        trigger.killed_at = time.time()
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    if user_kill and compat.TRIGGER_HAS_ON_KILL:
        await trigger.on_kill()  # Airflow 3.3 calls it after a user's action, never on a restart
    if stop_after is None:
        raise TimeoutError(f"the trigger fired no event within {SCENARIO_BUDGET} s")
    return []


# ---------------------------------------------------------------------- invariants


def _check(emu: Emulator, s: Scenario, out: _Outcome, result: Result) -> None:
    bad = result.violations.append
    expected_errors = (WorkerDied, errors.DatabricksRunFailed, AirflowTaskTimeout)
    killed_run_failed = out.killed and isinstance(out.error, errors.DatabricksError)
    # The API refused for good (the run's state could not be read, or the POST failed).
    api_failure = isinstance(out.error, errors.DatabricksError) and not isinstance(out.error, errors.DatabricksRunFailed)
    if api_failure and not s.can_fail_on_api and not killed_run_failed:
        bad(f"an API failure no fault of the scenario explains: {type(out.error).__name__}: {out.error}")
    elif out.error is not None and not isinstance(out.error, expected_errors) and not api_failure:
        bad(f"unexpected error {type(out.error).__name__}: {out.error}")
    runs = sorted(emu.runs(), key=lambda r: r["run_id"])
    if s.event == "kill_during_submit" and len(runs) > 1:
        bad(f"{len(runs)} runs started by a task killed while it submitted")
    if not runs:
        if not api_failure:
            bad("no Databricks run was started")
        return
    # A second run is legitimate only after the first ended unsuccessfully (a new try's fresh start).
    for previous, current in itertools.pairwise(runs):
        if not oracle.is_over(previous) or oracle.result(previous) == "SUCCESS" or (
            previous["end_time"] > current["start_time"]
        ):
            bad(f"run {current['run_id']} started while run {previous['run_id']} was "
                f"{oracle.life_cycle(previous)} {oracle.result(previous)}: more than one run for one task try chain")
    if len(runs) > max(result.tries, 1):
        bad(f"{len(runs)} runs for a task that had {result.tries} tries")
    if s.repair_on_retry and len(runs) > 1:
        bad(f"{len(runs)} runs though a failed run is repaired on retry, not replaced")
    # Every try after a failed run starts afresh, with a new run or a repair of the failed one:
    # an earlier try's failed run is never taken for this try's own, however the clocks differ.
    if result.tries > 1 and all(error == "DatabricksRunFailed" for error in result.try_errors):
        starts = len(runs) + (emu.counters["repairs"] if s.repair_on_retry else 0)
        if starts != result.tries:
            bad(f"{result.tries} tries, each after a failed run, made {starts} fresh starts (runs and repairs)")
    last = runs[-1]
    if s.mode == "nowait":
        if not api_failure and (out.state != "success" or out.returned != last["run_id"]):
            bad(f"wait_for_termination=False ended {out.state} ({out.error}), returned {out.returned}")
        return
    # No run outlives its task: each run active when the task ended for good was stopped by it.
    # The harness notes times on Airflow's clock; the emulator records them on the workspace's.
    ended_at, killed_at = out.ended_at + s.clock_skew, out.killed_at + s.clock_skew
    for run in [] if s.cancel_may_fail() else oracle.left_behind(emu, ended_at):
        bad(f"{run} was active when its task ended {out.state} ({type(out.error).__name__}), and nobody stopped it")
    final = oracle.finished(emu, last["run_id"], timeout=5.0)
    final_result = oracle.result(final)
    cancels = [r for r in emu.requests if r.method == "POST" and r.path.endswith("jobs/runs/cancel")]
    if out.killed or out.timed_out:
        # The run must be cancelled -- unless it ended on its own before the cancel landed.
        ended = emu.run(last["run_id"])["end_time"] / 1000
        landed = max([r.time for r in cancels] + [killed_at])
        if final_result != "CANCELED" and ended > landed + 0.05 and not s.cancel_may_fail():
            bad(f"the task was {'killed' if out.killed else 'timed out'} but run {last['run_id']} ended "
                f"{final_result} {ended - landed:.3f} s after the kill or cancel, not CANCELED")
    elif cancels and not api_failure:
        bad(f"{len(cancels)} cancel request(s) though nobody killed the task nor did it fail (restarts cancel "
            "nothing)")
    if s.event == "exec_timeout" and not out.timed_out and not api_failure and final_result == "CANCELED":
        bad("the run was cancelled but the task did not report a timeout")
    if out.killed or api_failure:
        return  # what matters then is that the run did not outlive the task: checked above
    if out.timed_out:
        if not isinstance(out.error, AirflowTaskTimeout) or str(last["run_id"]) not in str(out.error):
            bad(f"a timed-out task must raise AirflowTaskTimeout naming its run, got {out.error!r}")
        ended = emu.run(last["run_id"])["end_time"] / 1000
        deadline = None if out.deadline is None else out.deadline + s.clock_skew
        if final_result != "CANCELED" and deadline is not None and ended <= deadline:
            known(result, "deadline_ignores_ended_run",
                  f"run {last['run_id']} ended {final_result} {deadline - ended:.3f} s before the deadline, "
                  "yet the task timed out")
        return
    # The task's final state matches the run's result.
    expected = "success" if final_result == "SUCCESS" else "failed"
    if out.state != expected:
        bad(f"task ended {out.state} ({type(out.error).__name__}: {out.error}) but run {last['run_id']} "
            f"ended {final_result}")
    if out.state == "success":
        if out.returned != last["run_id"]:
            bad(f"execute returned {out.returned}, the run is {last['run_id']}")
        wanted = f"output of seed {s.seed}"
        if s.shape == "single" and out.xcom.get("notebook_output", "no notebook_output XCom") != wanted:
            bad(f"notebook_output XCom is {out.xcom.get('notebook_output', 'missing')!r}, not {wanted!r}")
    elif final_result == "FAILED":
        # Every failure surfaces with the run's error text.
        text = str(out.error)
        if not isinstance(out.error, errors.DatabricksRunFailed) or s.error_text not in text:
            bad(f"the failure does not carry the run's error text: {type(out.error).__name__}: {text[:300]}")
        elif f"Databricks run {last['run_id']} ended FAILED" not in text:
            bad(f"the failure report does not name run {last['run_id']}: {text[:200]}")
    if out.xcom.get("run_id", "missing") != last["run_id"]:
        bad(f"XCom run_id is {out.xcom.get('run_id', 'missing')}, not the run {last['run_id']}")


def known(result: Result, bug: str, text: str) -> None:
    """A known bug's symptom: a violation unless the bug is listed in KNOWN_BUGS."""
    if bug in KNOWN_BUGS:
        result.known_bugs.append(bug)
    else:
        result.violations.append(text)


# ---------------------------------------------------------------------- batches


def run_batch(seeds: list[int], workers: int) -> list[Result]:
    """Run scenarios concurrently, each against its own emulator (faults are per emulator).

    Every emulator starts, and every connection variable is set, before any scenario runs:
    Airflow's environment-variable secrets backend reads ``os.environ`` while other threads
    would be changing it, which fails with a KeyError.
    """
    from concurrent.futures import ThreadPoolExecutor

    _fresh_secrets_masker()
    started = time.monotonic()
    emulators = {
        seed: Emulator(
            time_scale=TIME_SCALE, token=f"dapi-chaos-{seed:06d}", clock=_skewed_clock(Scenario.from_seed(seed).clock_skew)
        ).start()
        for seed in seeds
    }
    try:
        for seed, emu in emulators.items():
            _connect(emu, Scenario.from_seed(seed))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chaos") as pool:
            results = list(pool.map(lambda seed: run_scenario(seed, emulators[seed]), seeds))
    finally:
        for seed, emu in emulators.items():
            emu.stop()
            os.environ.pop(connection_env(seed), None)
    with STATS.lock:
        STATS.wall_seconds += time.monotonic() - started
    return results


def _skewed_clock(skew: float) -> Callable[[], float] | None:
    """The emulator's clock: Airflow's, moved by ``skew`` seconds (None: Airflow's own)."""
    if not skew:
        return None
    return lambda: time.time() + skew


def _fresh_secrets_masker() -> None:
    """Start each batch with an empty Airflow secrets masker, as a new worker process would.

    Every scenario registers its own credentials and issued tokens; the masker rebuilds one
    regex of all of them per new secret and runs it on every log line, so thousands of
    scenarios in one process would otherwise slow down quadratically.
    """
    try:
        from airflow.sdk._shared.secrets_masker.secrets_masker import reset_secrets_masker
    except ImportError:  # other Airflow versions keep it elsewhere; the long mode is just slower there
        return
    reset_secrets_masker()


def failure_message(results: list[Result], replay: Callable[[int], str]) -> str:
    lines = []
    for r in results:
        if r.violations:
            lines.append(r.scenario.describe())
            lines += [f"    violation: {v}" for v in r.violations]
            lines.append(f"    replay: {replay(r.scenario.seed)}")
    return "\n".join(lines)
