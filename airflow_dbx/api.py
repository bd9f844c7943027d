"""The Databricks Jobs API vocabulary: endpoints, the run state model, payloads and errors.

Pure: no I/O and no Airflow imports, so the hook, the trigger, the operators and the
emulator's tests all share one meaning of "terminal", "successful" and "valid payload".
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import hashlib
import inspect
import json
import math
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

T = TypeVar("T")

API_PREFIX = "/api/2.2/"
DEFAULT_CONN_ID = "databricks_default"


class Endpoint(NamedTuple):
    method: str
    path: str

    @property
    def label(self) -> str:
        return f"{self.method} {API_PREFIX}{self.path}"


SUBMIT_RUN = Endpoint("POST", "jobs/runs/submit")
RUN_NOW = Endpoint("POST", "jobs/run-now")
GET_RUN = Endpoint("GET", "jobs/runs/get")
GET_RUN_OUTPUT = Endpoint("GET", "jobs/runs/get-output")
CANCEL_RUN = Endpoint("POST", "jobs/runs/cancel")
CANCEL_ALL_RUNS = Endpoint("POST", "jobs/runs/cancel-all")
REPAIR_RUN = Endpoint("POST", "jobs/runs/repair")
LIST_RUNS = Endpoint("GET", "jobs/runs/list")
LIST_JOBS = Endpoint("GET", "jobs/list")
GET_JOB = Endpoint("GET", "jobs/get")

# Answers worth another attempt: throttling, server trouble, and a lock held by another request.
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
RETRYABLE_ERROR_CODES = frozenset({"COULD_NOT_ACQUIRE_LOCK"})  # sent with HTTP 400

IDEMPOTENCY_TOKEN_MAX_LENGTH = 64
PARAMETER_MAP_MAX_BYTES = 10_000


# --------------------------------------------------------------------------- errors


class DatabricksError(Exception):
    """Base of every error this package raises about Databricks."""


class PayloadError(DatabricksError, ValueError):
    """A payload or argument is not what the Jobs API accepts; ``field`` names the culprit."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class DatabricksApiError(DatabricksError):
    """The Jobs API refused a request, or kept failing until the retries ran out."""

    MAX_MESSAGE = 500

    def __init__(
        self,
        *,
        method: str,
        endpoint: str,
        status_code: int | None,
        error_code: str | None = None,
        message: str = "",
        attempts: int = 1,
    ) -> None:
        self.method = method
        self.endpoint = endpoint
        self.status_code = status_code
        self.error_code = error_code
        self.message = _cut(message, self.MAX_MESSAGE)
        self.attempts = attempts
        status = f"HTTP {status_code}" if status_code is not None else "no HTTP answer"
        code = f" {error_code}" if error_code else ""
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        super().__init__(f"{method} {endpoint} failed{tries}: {status}{code}: {self.message}".rstrip(": "))

    @property
    def retryable(self) -> bool:
        return is_retryable(self.status_code, self.error_code)


def is_retryable(status: int | None, error_code: str | None) -> bool:
    """Whether a failed request may succeed if sent again (``None``: no answer at all)."""
    if status is None:
        return True  # connection refused, dropped or timed out
    return status in RETRYABLE_STATUS or (status == 400 and error_code in RETRYABLE_ERROR_CODES)


class DatabricksRunFailed(DatabricksError):
    """A run ended without succeeding; the text is the failure report."""

    def __init__(self, report: str, *, run_id: int, result_state: str | None) -> None:
        self.run_id = run_id
        self.result_state = result_state
        super().__init__(report)


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split()) if "\n" in text else text
    return text if len(text) <= limit else text[: limit - 15] + " ... (cut)"


# --------------------------------------------------------------------------- run state

# status.state (Jobs API 2.2) and the deprecated state.life_cycle_state.
_TERMINAL_LIFE_CYCLE = frozenset({"TERMINATED", "SKIPPED", "INTERNAL_ERROR"})
_KNOWN_LIFE_CYCLE = _TERMINAL_LIFE_CYCLE | {
    "QUEUED", "PENDING", "RUNNING", "TERMINATING", "BLOCKED", "WAITING", "WAITING_FOR_RETRY",
}
SUCCESS = "SUCCESS"
SUCCESS_WITH_FAILURES = "SUCCESS_WITH_FAILURES"
_RESULT_FROM_TERMINATION_CODE = {
    "SUCCESS": SUCCESS,
    "SUCCESS_WITH_FAILURES": SUCCESS_WITH_FAILURES,
    "CANCELED": "CANCELED",
    "USER_CANCELED": "CANCELED",
    "SKIPPED": "SKIPPED",
    "DISABLED": "DISABLED",
}


@dataclass(frozen=True)
class RunState:
    """Where a run (or a task run) is, read from ``status`` with a fallback to ``state``."""

    life_cycle_state: str
    result_state: str | None = None
    state_message: str = ""
    termination_code: str | None = None

    @classmethod
    def from_dict(cls, run: Mapping[str, Any]) -> RunState:
        legacy = run.get("state") or {}
        status = run.get("status") or {}
        if status.get("state"):
            details = status.get("termination_details") or {}
            code = details.get("code")
            life_cycle = status["state"]
            result = legacy.get("result_state")
            if life_cycle == "TERMINATED" and not result:
                result = _RESULT_FROM_TERMINATION_CODE.get(code or "", "FAILED")
            message = details.get("message") or legacy.get("state_message") or ""
            return cls(life_cycle, result, message, code)
        return cls(
            legacy.get("life_cycle_state", "UNKNOWN"),
            legacy.get("result_state"),
            legacy.get("state_message", ""),
        )

    @property
    def is_known(self) -> bool:
        return self.life_cycle_state in _KNOWN_LIFE_CYCLE

    @property
    def is_terminal(self) -> bool:
        return self.life_cycle_state in _TERMINAL_LIFE_CYCLE

    def is_successful(self, *, allow_success_with_failures: bool = False) -> bool:
        if not self.is_terminal:
            return False
        if self.result_state == SUCCESS:
            return True
        return allow_success_with_failures and self.result_state == SUCCESS_WITH_FAILURES

    @property
    def outcome(self) -> str:
        """One word for logs and reports: the result when terminal, else the life cycle."""
        return (self.result_state or self.life_cycle_state) if self.is_terminal else self.life_cycle_state

    def to_dict(self) -> dict[str, Any]:
        return {
            "life_cycle_state": self.life_cycle_state,
            "result_state": self.result_state,
            "state_message": self.state_message,
            "termination_code": self.termination_code,
        }


@dataclass(frozen=True)
class TaskRun:
    task_key: str
    run_id: int
    state: RunState
    attempt_number: int = 0
    depends_on: tuple[str, ...] = ()
    is_notebook: bool = False


@dataclass(frozen=True)
class Run:
    run_id: int
    state: RunState
    job_id: int | None = None
    run_name: str = ""
    run_page_url: str = ""
    start_time: int = 0
    tasks: tuple[TaskRun, ...] = ()
    repair_ids: tuple[int, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Run:
        tasks = tuple(
            TaskRun(
                task_key=task.get("task_key", ""),
                run_id=int(task["run_id"]),
                state=RunState.from_dict(task),
                attempt_number=int(task.get("attempt_number", 0)),
                depends_on=tuple(dep["task_key"] for dep in task.get("depends_on", ())),
                is_notebook="notebook_task" in task,
            )
            for task in data.get("tasks", ())
        )
        repairs = tuple(
            int(item["id"]) for item in data.get("repair_history", ()) if item.get("type") == "REPAIR"
        )
        return cls(
            run_id=int(data["run_id"]),
            state=RunState.from_dict(data),
            job_id=data.get("job_id"),
            run_name=data.get("run_name", ""),
            run_page_url=data.get("run_page_url", ""),
            start_time=int(data.get("start_time") or 0),
            tasks=tasks,
            repair_ids=repairs,
            raw=data,
        )

    def failed_tasks(self) -> list[TaskRun]:
        """The task runs that ended without success, in the order the API lists them."""
        return [t for t in self.tasks if t.state.is_terminal and not t.state.is_successful()]

    @property
    def attempt_start_time(self) -> int:
        """When the latest attempt began (epoch ms): the run's start, or its latest repair's.

        Repairs are only known when the run was read with ``include_history``.
        """
        repairs = [int(item.get("start_time") or 0) for item in self.raw.get("repair_history", ())
                   if item.get("type") == "REPAIR"]
        return max([self.start_time, *repairs])


def output_targets(run: Run, *, successful: bool) -> list[TaskRun]:
    """The task runs whose runs/get-output is worth reading once ``run`` has ended.

    A failed run needs its failed tasks' errors for the report; a successful one, its
    notebooks' results for XCom.
    """
    if not successful:
        return run.failed_tasks()
    return [task for task in run.tasks if task.is_notebook]


# Results that a repair can turn into a success: the task itself failed or ran out of time.
_REPAIRABLE_RESULTS = frozenset({"FAILED", "TIMEDOUT"})
# Results of tasks that have nothing to redo: they succeeded, or their condition excluded them.
_DONE_RESULTS = frozenset({SUCCESS, "EXCLUDED"})


def is_repairable(run: Run, *, allow_success_with_failures: bool = False) -> bool:
    """True when ``run`` ended unsuccessfully because a task failed or timed out.

    A cancelled run (by a user, or by the task's own timeout) is not: a fresh run replaces it.
    """
    if not run.state.is_terminal or run.state.is_successful(allow_success_with_failures=allow_success_with_failures):
        return False
    failed = run.state.result_state in _REPAIRABLE_RESULTS or any(
        task.state.result_state in _REPAIRABLE_RESULTS for task in run.tasks
    )
    return failed and bool(tasks_to_rerun(run))


def tasks_to_rerun(run: Run) -> list[str]:
    """The task keys a repair of ``run`` reruns: each task that did not succeed, and every task
    downstream of one (even one that succeeded, since its input changes), in the API's order."""
    keys = {t.task_key for t in run.tasks if t.state.is_terminal and t.state.result_state not in _DONE_RESULTS}
    grew = True
    while grew:
        downstream = {t.task_key for t in run.tasks if t.task_key not in keys and keys.intersection(t.depends_on)}
        grew = bool(downstream)
        keys |= downstream
    return [task.task_key for task in run.tasks if task.task_key in keys]


def repair_request(run: Run, parameters: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The runs/repair body that reruns :func:`tasks_to_rerun` of ``run``.

    ``latest_repair_id`` names the repair this one follows (``run`` must be read with
    ``include_history``); the API refuses a request built from a stale view, so a repair
    can never be requested twice from the same view. ``rerun_dependent_tasks`` lets the
    service add any dependant the task list did not show. ``parameters`` are run-now's
    overriding parameters (``notebook_params``, ``job_parameters``, ...), applied again.
    """
    body: dict[str, Any] = {"run_id": run.run_id, "rerun_tasks": tasks_to_rerun(run), "rerun_dependent_tasks": True}
    if run.repair_ids:
        body["latest_repair_id"] = run.repair_ids[-1]
    body.update({key: value for key, value in (parameters or {}).items() if value is not None})
    return body


def summarise_run(
    run: Run, outputs: Mapping[int, Mapping[str, Any]], *, allow_success_with_failures: bool = False
) -> dict[str, Any]:
    """What a finished run means for its Airflow task, as plain JSON (a trigger event payload)."""
    successful = run.state.is_successful(allow_success_with_failures=allow_success_with_failures)
    results = {
        task.task_key: outputs[task.run_id]["notebook_output"]["result"]
        for task in run.tasks
        if task.is_notebook and "result" in (outputs.get(task.run_id, {}).get("notebook_output") or {})
    }
    notebook_output: Any = results or None
    if len(run.tasks) == 1 and results:
        notebook_output = next(iter(results.values()))
    return {
        "run_id": run.run_id,
        "run_page_url": run.run_page_url,
        "state": run.state.to_dict(),
        "successful": successful,
        "report": None if successful else format_failure_report(run, outputs),
        "notebook_output": notebook_output,
    }


def format_failure_report(
    run: Run, outputs: Mapping[int, Mapping[str, Any]], *, trace_lines: int = 10
) -> str:
    """The text users read when a run fails: result, message, each failed task, the URL.

    ``outputs`` maps a task run id to its runs/get-output answer (``error``, ``error_trace``).
    """
    lines = [f"Databricks run {run.run_id} ended {run.state.outcome}"]
    if run.state.state_message:
        lines[0] += f": {run.state.state_message}"
    targets = run.failed_tasks() or ([] if run.tasks else [TaskRun("", run.run_id, run.state)])
    for task in targets:
        output = outputs.get(task.run_id, {})
        name = f"task {task.task_key}" if task.task_key else "run"
        head = f"- {name} ({task.state.outcome})"
        error = output.get("error") or task.state.state_message
        if error:
            head += f": {error}"
        lines.append(head)
        trace = (output.get("error_trace") or "").strip().splitlines()
        lines.extend(f"    {line}" for line in trace[:trace_lines])
        if len(trace) > trace_lines:
            lines.append(f"    ... ({len(trace) - trace_lines} more lines)")
    if run.run_page_url:
        lines.append(f"Run page: {run.run_page_url}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- polling


def poll_delays(
    period: float, *, waited: float = 0.0, first: float = 1.0, floor: float = 2.0, growth: float = 0.15
) -> Iterator[float]:
    """Seconds to sleep before each status check of a run.

    The first check comes soon (a run that fails at once is reported at once); then each
    wait is ``growth`` times the time waited so far, never under ``floor`` nor over
    ``period``, with +-10% jitter so thousands of waiters do not poll in lockstep. A run
    is thus seen to end within about 10% of its length, and a long run costs few requests.
    ``waited`` resumes the schedule of a wait that began earlier (a rebuilt trigger).
    """
    elapsed = max(waited, 0.0)
    delay = min(first if elapsed == 0 else max(growth * elapsed, floor), period)
    while True:
        delay *= random.uniform(0.9, 1.1)
        yield delay
        elapsed += delay
        delay = min(max(growth * elapsed, floor), period)


class PollOutage:
    """Keeps a wait going through polls that failed for a passing reason.

    A status check that still fails after the hook's retries (the workspace throttling many
    waiters, a 5xx spell, no answer) says nothing about the run, so the wait goes on after a
    jittered pause that doubles with each failure in a row. Only an outage longer than
    ``limit`` seconds, or an error that retrying cannot mend (401, 404, ...), ends the wait.
    """

    def __init__(self, limit: float = 600.0, cap: float = 60.0, max_stretch: float = 8.0) -> None:
        self.limit = limit
        self.cap = cap
        self.max_stretch = max_stretch
        self.since: float | None = None
        self.failures = 0
        self.stretch = 1.0

    def pace(self, delay: float, *, throttled: bool) -> float:
        """The next regular pause: stretched (up to ``max_stretch`` times) while the workspace
        throttles, eased back after. Retry-After alone keeps a thousand waiters above a
        workspace's rate limit; waiters that also poll less often let the rate settle under it."""
        if throttled:
            self.stretch = min(self.stretch * 2.0, self.max_stretch)
        else:
            self.stretch = max(self.stretch * 0.95, 1.0)
        return delay * self.stretch

    def failed(self, exc: DatabricksApiError, now: float) -> float:
        """Seconds to pause before the next check; re-raises ``exc`` when the wait must end."""
        if not exc.retryable:
            raise exc
        self.since = now if self.since is None else self.since
        if now - self.since > self.limit:
            raise exc
        self.failures += 1
        return min(self.cap, 2.0 ** (self.failures - 1)) * random.uniform(1.0, 2.0)

    def succeeded(self) -> None:
        self.since, self.failures = None, 0


def patiently(call: Callable[[], T]) -> T:
    """``call()``, sent again after a :class:`PollOutage` pause while it fails for a passing reason."""
    outage = PollOutage()
    while True:
        try:
            return call()
        except DatabricksApiError as exc:
            time.sleep(outage.failed(exc, time.monotonic()))


async def apatiently(call: Callable[[], Awaitable[T]]) -> T:
    """:func:`patiently` for coroutines."""
    outage = PollOutage()
    while True:
        try:
            return await call()
        except DatabricksApiError as exc:
            await asyncio.sleep(outage.failed(exc, time.monotonic()))


# --------------------------------------------------------------------------- payloads

# Fields the API types as strings (or maps/lists of strings), wherever they appear.
_STRING_FIELDS = frozenset({
    "notebook_params", "base_parameters", "python_params", "python_named_params", "named_parameters",
    "jar_params", "spark_submit_params", "sql_params", "job_parameters", "parameters", "dbt_commands",
})

SINGLE_TASK_FIELDS = (
    "notebook_task", "spark_jar_task", "spark_python_task", "spark_submit_task",
    "python_wheel_task", "pipeline_task", "dbt_task", "sql_task", "run_job_task",
)
RUN_NOW_PARAMETER_FIELDS = (
    "notebook_params", "python_params", "python_named_params", "jar_params",
    "spark_submit_params", "sql_params", "dbt_commands", "job_parameters",
)


class _Unrendered:
    """Stands for a value that only exists after templating or an upstream task's XCom."""

    def __repr__(self) -> str:
        return "<rendered at run time>"


UNRENDERED: Any = _Unrendered()


def to_tasks_form(payload: Mapping[str, Any], task_key: str) -> dict[str, Any]:
    """Move a single-task runs/submit body (``notebook_task`` and its cluster at the top) into ``tasks``.

    Jobs API 2.1+ describes every run as a list of tasks; this keeps the Prefect-era single
    task style working against it.
    """
    if payload.get("tasks") is not None:
        return dict(payload)
    out = dict(payload)
    task: dict[str, Any] = {"task_key": re.sub(r"[^\w-]", "_", task_key)[:100] or "task"}
    for name in (*SINGLE_TASK_FIELDS, "new_cluster", "existing_cluster_id", "libraries", "environment_key"):
        if name in out:
            task[name] = out.pop(name)
    out["tasks"] = [task]
    return out


def merge_payload(json_arg: Mapping[str, Any] | str | None, named: Mapping[str, Any]) -> dict[str, Any]:
    """The request body: named parameters over ``json`` (named win; ``None`` means not given)."""
    if json_arg is None:
        base: dict[str, Any] = {}
    elif isinstance(json_arg, str):
        try:
            parsed = json.loads(json_arg)
        except json.JSONDecodeError as exc:
            raise PayloadError("json", f"a string that is not JSON ({exc.msg} at position {exc.pos})") from None
        if not isinstance(parsed, dict):
            raise PayloadError("json", f"expected a JSON object, got {type(parsed).__name__}")
        base = dict(parsed)
    elif isinstance(json_arg, Mapping):
        base = dict(json_arg)
    else:
        raise PayloadError("json", f"expected a dict or a JSON string, got {type(json_arg).__name__}")
    base.update({key: value for key, value in named.items() if value is not None})
    return base


def normalise_payload(payload: Mapping[str, Any], root: str = "json") -> dict[str, Any]:
    """A copy that is plain JSON, with the API's string fields turned into strings.

    Refuses anything that has no JSON form, naming its path (``json.tasks[0].notebook_task``).
    """
    normalised: dict[str, Any] = _normalise(payload, root, as_string=False)
    return normalised


def _normalise(value: Any, path: str, *, as_string: bool) -> Any:
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise PayloadError(f"{path}.{key!r}", f"keys must be strings, got {type(key).__name__}")
            out[key] = _normalise(item, f"{path}.{key}", as_string=as_string or key in _STRING_FIELDS)
        return out
    if isinstance(value, (list, tuple)):
        return [_normalise(item, f"{path}[{i}]", as_string=as_string) for i, item in enumerate(value)]
    if value is None or isinstance(value, str):
        return value
    if as_string:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float, decimal.Decimal, datetime.date, datetime.time)):
            return value.isoformat() if hasattr(value, "isoformat") else str(value)
    elif isinstance(value, (bool, int)):
        return value
    elif isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise PayloadError(path, f"{value} has no JSON form")
        return value
    raise PayloadError(path, f"a {type(value).__name__} has no JSON form; pass a string, number, bool, list or dict")


def validate_submit(payload: Mapping[str, Any]) -> None:
    """Refuse a runs/submit body that says nothing, or two things, about what runs."""
    given = [name for name in SINGLE_TASK_FIELDS if payload.get(name) is not None]
    if payload.get("tasks") is not None:
        if given:
            raise PayloadError(given[0], "give either tasks or a single task type, not both")
        if payload["tasks"] is UNRENDERED:
            pass
        elif not isinstance(payload["tasks"], list) or not payload["tasks"]:
            raise PayloadError("tasks", "expected a non-empty list of task objects")
        for i, task in enumerate(payload["tasks"] if payload["tasks"] is not UNRENDERED else ()):
            if not isinstance(task, Mapping):
                raise PayloadError(f"tasks[{i}]", f"expected a task object, got {type(task).__name__}")
            _check_cluster_spec(task, f"tasks[{i}].")
    else:
        if not given:
            raise PayloadError(
                "tasks", "nothing to run: give tasks, or one of " + ", ".join(SINGLE_TASK_FIELDS)
            )
        if len(given) > 1:
            raise PayloadError(given[1], f"only one task type may be given, got {' and '.join(given)}")
    _check_cluster_spec(payload, "")
    _check_token(payload)


def validate_run_now(payload: Mapping[str, Any]) -> None:
    """Refuse a run-now body without exactly one of job_id / job_name, or with oversized parameters."""
    has_id = payload.get("job_id") is not None
    has_name = payload.get("job_name") is not None
    if has_id == has_name:
        raise PayloadError("job_id", "give exactly one of job_id and job_name" + (", not both" if has_id else ""))
    if has_id and (isinstance(payload["job_id"], bool) or not _is_int_like(payload["job_id"])):
        raise PayloadError("job_id", f"expected an integer job id, got {payload['job_id']!r}")
    for name in RUN_NOW_PARAMETER_FIELDS:
        if payload.get(name) is not None and payload[name] is not UNRENDERED:
            size = len(json.dumps(payload[name], default=str).encode())
            if size > PARAMETER_MAP_MAX_BYTES:
                limit = PARAMETER_MAP_MAX_BYTES
                raise PayloadError(name, f"{size} bytes once encoded; the Jobs API takes at most {limit}")
    _check_token(payload)


def _is_int_like(value: Any) -> bool:
    return value is UNRENDERED or isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit())


def _check_cluster_spec(spec: Mapping[str, Any], prefix: str) -> None:
    if spec.get("new_cluster") is not None and spec.get("existing_cluster_id") is not None:
        raise PayloadError(f"{prefix}new_cluster", "give either new_cluster or existing_cluster_id, not both")


def _check_token(payload: Mapping[str, Any]) -> None:
    token = payload.get("idempotency_token")
    if token is None or token is UNRENDERED:
        return
    if not isinstance(token, str) or not 0 < len(token) <= IDEMPOTENCY_TOKEN_MAX_LENGTH:
        raise PayloadError("idempotency_token", f"expected a string of 1 to {IDEMPOTENCY_TOKEN_MAX_LENGTH} characters")


def check_positive(name: str, value: Any, *, integer: bool = False) -> None:
    """Refuse a polling or retry setting that is not a positive number."""
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or value <= 0:
        expected = "a positive integer" if integer else "a positive number"
        raise PayloadError(name, f"expected {expected}, got {value!r}")


def check_retry_args(retry_args: Any, field: str = "retry_args") -> None:
    """Refuse ``retry_args`` that tenacity would refuse only at the first request."""
    if not isinstance(retry_args, Mapping):
        raise PayloadError(field, f"must be a dict of tenacity.Retrying arguments, got {type(retry_args).__name__}")
    import tenacity  # only when retry_args are given: DAG files need not load it

    known = set(inspect.signature(tenacity.Retrying.__init__).parameters) - {"self"}
    unknown = sorted(set(retry_args) - known)
    if unknown:
        raise PayloadError(
            field, f"{', '.join(map(repr, unknown))} not tenacity.Retrying arguments; use {', '.join(sorted(known))}"
        )


def derive_idempotency_token(*parts: object, generation: int = 0, base: str | None = None) -> str:
    """A token of at most 64 characters, stable for the same parts and generation.

    Generation 0 of a user's own token is that token; later generations (fresh runs after a
    failed one) are derived from it.
    """
    if base is not None and generation == 0:
        return base
    digest = hashlib.sha256("\x1f".join(map(str, (*parts, base or ""))).encode()).hexdigest()[:40]
    return f"airflow-dbx-{digest}-{generation}"
