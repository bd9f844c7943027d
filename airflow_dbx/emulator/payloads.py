"""Checks of request fields, with errors that name the field, and task parameter extraction."""

from __future__ import annotations

import base64
import json
import re
from typing import TYPE_CHECKING, Any

from airflow_dbx.emulator.errors import ApiError, invalid
from airflow_dbx.emulator.model import RUN_IF, TaskSpec

if TYPE_CHECKING:
    from collections.abc import Mapping

IDEMPOTENCY_TOKEN_MAX = 64
PARAMETER_MAX_BYTES = 10_000
MAX_TASKS = 1000
TASK_PAGE = 100  # Jobs API 2.2 pages task lists by this many
MAX_CONCURRENT_RUNS = 1000
RUNS_LIST_MAX = 25
SINGLE_TASK_EXTRAS = ("new_cluster", "existing_cluster_id", "job_cluster_key", "libraries", "environment_key")

# Where a task's own parameters live: (task type, field) as a map or as a list of "k=v".
TASK_MAP_PARAMS = (
    ("notebook_task", "base_parameters"),
    ("python_wheel_task", "named_parameters"),
    ("sql_task", "parameters"),
    ("run_job_task", "job_parameters"),
)
TASK_LIST_PARAMS = (
    ("spark_python_task", "parameters"),
    ("spark_jar_task", "parameters"),
    ("spark_submit_task", "parameters"),
    ("python_wheel_task", "parameters"),
)
# Run-level overriding parameters (run-now, repair).
OVERRIDE_MAPS = ("job_parameters", "notebook_params", "python_named_params", "sql_params")
OVERRIDE_LISTS = ("python_params", "jar_params", "spark_submit_params", "dbt_commands")
# Documented: "jar_params cannot be specified in conjunction with notebook_params".
EXCLUSIVE_OVERRIDES = (("notebook_params", "jar_params"),)
# Documented: these "accept only Latin characters (ASCII character set)".
ASCII_OVERRIDES = ("python_params", "spark_submit_params")


def parse_json_body(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "MALFORMED_REQUEST", f"Invalid JSON given in the body of the request: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "MALFORMED_REQUEST", f"The request body must be a JSON object, got {type(body).__name__}")
    return body


def get_int(
    data: Mapping[str, Any],
    name: str,
    *,
    required: bool = False,
    default: int | None = None,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int | None:
    value = data.get(name)
    if value is None or value == "":
        if required:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Missing required field: {name}")
        return default
    if isinstance(value, bool) or not (
        isinstance(value, int) or (isinstance(value, str) and re.fullmatch(r"-?\d+", value))
    ):
        raise invalid(name, f"expected an integer, got {value!r}")
    number = int(value)
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise invalid(name, f"must be {bounds}, got {number}")
    return number


def get_bool(data: Mapping[str, Any], name: str) -> bool:
    value = data.get(name)
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    raise invalid(name, f"expected a boolean, got {value!r}")


def get_str(data: Mapping[str, Any], name: str, default: str | None = None) -> str | None:
    value = data.get(name)
    if value is None:
        return default
    if not isinstance(value, str):
        raise invalid(name, f"expected a string, got {type(value).__name__}")
    return value


def get_map(data: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    value = data.get(name)
    if value is not None and not isinstance(value, dict):
        raise invalid(name, f"expected an object, got {type(value).__name__}")
    return value


def get_list(data: Mapping[str, Any], name: str) -> list[Any] | None:
    value = data.get(name)
    if value is not None and not isinstance(value, list):
        raise invalid(name, f"expected an array, got {type(value).__name__}")
    return value


def check_idempotency_token(body: Mapping[str, Any]) -> str | None:
    token = get_str(body, "idempotency_token")
    if token is not None and not 0 < len(token) <= IDEMPOTENCY_TOKEN_MAX:
        raise invalid("idempotency_token", f"must be 1 to {IDEMPOTENCY_TOKEN_MAX} characters long, got {len(token)}")
    return token


def overrides(body: Mapping[str, Any]) -> dict[str, Any]:
    """The overriding parameters of a run-now or repair body, type-checked and size-checked."""
    found: dict[str, Any] = {}
    for name in OVERRIDE_MAPS:
        if (value := get_map(body, name)) is not None:
            found[name] = value
    for name in OVERRIDE_LISTS:
        if (items := get_list(body, name)) is not None:
            found[name] = items
    _check_overrides(found)
    return found


def _check_overrides(found: Mapping[str, Any]) -> None:
    for name, value in found.items():
        size = len(json.dumps(value).encode())
        if size > PARAMETER_MAX_BYTES:
            raise invalid(name, f"{size} bytes; at most {PARAMETER_MAX_BYTES} bytes are allowed")
    for first, second in EXCLUSIVE_OVERRIDES:
        # Empty ones say nothing: the official provider's workflow launcher sends both, empty.
        if found.get(first) and found.get(second):
            raise invalid(second, f"{second} cannot be specified in conjunction with {first}")
    for name in ASCII_OVERRIDES:
        for i, item in enumerate(found.get(name) or ()):
            if not str(item).isascii():
                raise invalid(f"{name}[{i}]", "only ASCII characters are accepted")


def queue_enabled(body: Mapping[str, Any]) -> bool | None:
    """``queue.enabled`` of a job's settings or a run-now body; None when ``queue`` is absent."""
    queue = get_map(body, "queue")
    if queue is None:
        return None
    enabled = queue.get("enabled")
    if not isinstance(enabled, bool):
        raise invalid("queue.enabled", f"a boolean is required, got {enabled!r}")
    return enabled


def _pairs(items: Any) -> dict[str, str]:
    out = {}
    for item in items if isinstance(items, list) else ():
        key, sep, value = str(item).partition("=")
        if sep:
            out[key.lstrip("-")] = value
    return out


def _strings(mapping: Any) -> dict[str, str]:
    return (
        {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in mapping.items()}
        if isinstance(mapping, dict)
        else {}
    )


def task_params(spec: TaskSpec, job_defaults: Mapping[str, Any], run_overrides: Mapping[str, Any]) -> dict[str, str]:
    """The parameters a task sees: its own, then the job's defaults, then the run's overrides."""
    params: dict[str, str] = {}
    for task_type, name in TASK_MAP_PARAMS:
        params.update(_strings((spec.settings.get(task_type) or {}).get(name)))
    for task_type, name in TASK_LIST_PARAMS:
        params.update(_pairs((spec.settings.get(task_type) or {}).get(name)))
    params.update(_strings(job_defaults))
    for name in OVERRIDE_MAPS:
        params.update(_strings(run_overrides.get(name)))
    for name in OVERRIDE_LISTS:
        params.update(_pairs(run_overrides.get(name)))
    return params


def is_task_type(key: str) -> bool:
    return key.endswith("_task")


def single_task(body: dict[str, Any]) -> list[dict[str, Any]]:
    """A runs/submit body without ``tasks``: its one task, keyed by the run name."""
    types = [key for key in body if is_task_type(key) and body[key] is not None]
    if not types:
        raise ApiError(
            400,
            "INVALID_PARAMETER_VALUE",
            "Missing required field: tasks (or a single task type such as notebook_task)",
        )
    if len(types) > 1:
        raise invalid(types[1], f"only one task type may be given, got {' and '.join(types)}")
    name = get_str(body, "run_name") or "task"
    task = {"task_key": re.sub(r"[^\w\-]", "_", name)[:100] or "task"}
    for key in (*types, *SINGLE_TASK_EXTRAS):
        if body.get(key) is not None:
            task[key] = body[key]
    return [task]


def task_specs(tasks: Any, where: str = "tasks") -> tuple[dict[str, TaskSpec], list[str], list[str]]:
    """Validated specs, their display order and a dependency order."""
    if not isinstance(tasks, list):
        raise invalid(where, f"expected an array of tasks, got {type(tasks).__name__}")
    if len(tasks) > MAX_TASKS:
        raise invalid(where, f"at most {MAX_TASKS} tasks are allowed, got {len(tasks)}")
    specs: dict[str, TaskSpec] = {}
    for i, task in enumerate(tasks):
        spec = _task_spec(task, f"{where}[{i}]")
        if spec.key in specs:
            raise invalid(f"{where}[{i}].task_key", f"duplicate task key {spec.key!r}")
        specs[spec.key] = spec
    for i, spec in enumerate(specs.values()):
        for dep in spec.depends_on:
            if dep not in specs:
                raise invalid(f"{where}[{i}].depends_on", f"task {spec.key!r} depends on unknown task {dep!r}")
    return specs, list(specs), _topological(specs, where)


def _task_spec(task: Any, path: str) -> TaskSpec:
    if not isinstance(task, dict):
        raise invalid(path, f"expected a task object, got {type(task).__name__}")
    key = task.get("task_key")
    if not isinstance(key, str) or not re.fullmatch(r"[\w\-.]{1,100}", key):
        raise invalid(f"{path}.task_key", f"expected 1-100 letters, digits, '-', '_' or '.', got {key!r}")
    if task.get("new_cluster") is not None and task.get("existing_cluster_id") is not None:
        raise invalid(f"{path}.new_cluster", "give either new_cluster or existing_cluster_id, not both")
    if not any(is_task_type(k) for k in task):
        raise invalid(path, f"task {key!r} has no task type (such as notebook_task)")
    deps = task.get("depends_on") or []
    if not isinstance(deps, list) or not all(isinstance(d, dict) and isinstance(d.get("task_key"), str) for d in deps):
        raise invalid(f"{path}.depends_on", 'expected an array of {"task_key": ...} objects')
    run_if = task.get("run_if") or "ALL_SUCCESS"
    if run_if not in RUN_IF:
        raise invalid(f"{path}.run_if", f"expected one of {sorted(RUN_IF)}, got {run_if!r}")
    timeout = _check_retry_fields(task, path)
    static = {k: v for k, v in task.items() if k not in ("task_key", "depends_on", "run_if")}
    depends = tuple(d["task_key"] for d in deps)
    if depends:
        static["depends_on"] = [{"task_key": d} for d in depends]
    static["run_if"] = run_if
    return TaskSpec(key, task, depends, run_if, float(timeout) if timeout else None, static)


def _check_retry_fields(task: Mapping[str, Any], path: str) -> int | None:
    """The task's timeout_seconds, once its timeout and retry fields are checked."""
    timeout = get_int(task, "timeout_seconds", minimum=0)
    get_int(task, "max_retries", minimum=-1)
    get_int(task, "min_retry_interval_millis", minimum=0)
    for flag in ("disabled", "retry_on_timeout"):
        if not isinstance(task.get(flag, False), bool):
            raise invalid(f"{path}.{flag}", f"expected a boolean, got {task[flag]!r}")
    return timeout


def _topological(specs: dict[str, TaskSpec], where: str) -> list[str]:
    indegree = {key: len(set(spec.depends_on)) for key, spec in specs.items()}
    dependents: dict[str, list[str]] = {key: [] for key in specs}
    for key, spec in specs.items():
        for dep in set(spec.depends_on):
            dependents[dep].append(key)
    ready = [key for key, n in indegree.items() if n == 0]
    order = []
    while ready:
        key = ready.pop(0)
        order.append(key)
        for child in dependents[key]:
            indegree[child] -= 1
            if indegree[child] == 0:
                ready.append(child)
    if len(order) != len(specs):
        stuck = sorted(set(specs) - set(order))
        raise invalid(where, f"the task dependencies form a cycle through {', '.join(stuck)}")
    return order


def encode_page(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode().rstrip("=")


def decode_page(token: str | None) -> int:
    if not token:
        return 0
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        kind, _, number = text.partition(":")
        if kind == "offset" and number.isdigit():
            return int(number)
    except ValueError:
        pass
    raise invalid("page_token", "not a token this API issued")
