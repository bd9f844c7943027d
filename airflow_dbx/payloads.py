"""Request bodies: named parameters merged over ``json``, normalised to the API's types,
validated with errors that name the field, the single-task form, and idempotency tokens."""

from __future__ import annotations

import datetime
import decimal
import hashlib
import inspect
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from airflow_dbx.errors import PayloadError

IDEMPOTENCY_TOKEN_MAX_LENGTH = 64
PARAMETER_MAP_MAX_BYTES = 10_000

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


def is_literal(value: Any) -> bool:
    """True when ``value`` is final at DAG parse time: no template and no XComArg inside."""
    if isinstance(value, str):
        return "{{" not in value and "{%" not in value
    if isinstance(value, Mapping):
        return all(is_literal(k) and is_literal(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(is_literal(item) for item in value)
    # XComArg and the other values Airflow resolves at run time have ``resolve``.
    return not callable(getattr(value, "resolve", None))


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
        base = parsed
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
    if value is None or isinstance(value, str) or value is UNRENDERED:
        return value
    return _scalar(value, path, as_string=as_string)


def _scalar(value: Any, path: str, *, as_string: bool) -> Any:
    if as_string and isinstance(value, bool):
        return "true" if value else "false"
    if as_string and isinstance(value, (int, float, decimal.Decimal)):
        return str(value)
    if as_string and isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if not as_string and isinstance(value, (bool, int)):
        return value
    if not as_string and isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise PayloadError(path, f"{value} has no JSON form")
        return value
    raise PayloadError(path, f"a {type(value).__name__} has no JSON form; pass a string, number, bool, list or dict")


def check_literals(
    json_arg: Any, named: Mapping[str, Any], validate: Callable[[Mapping[str, Any]], None]
) -> None:
    """Validate at DAG parse time what is already known: values that are templates or XComArgs
    stand in as UNRENDERED, so only literal mistakes are refused, with the field named."""
    if not is_literal(json_arg):
        return
    known = {key: value if is_literal(value) else UNRENDERED for key, value in named.items()}
    validate(normalise_payload(merge_payload(json_arg, known)))


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


def validate_submit(payload: Mapping[str, Any]) -> None:
    """Refuse a runs/submit body that says nothing, or two things, about what runs."""
    given = [name for name in SINGLE_TASK_FIELDS if payload.get(name) is not None]
    tasks = payload.get("tasks")
    if tasks is None:
        if not given:
            raise PayloadError("tasks", "nothing to run: give tasks, or one of " + ", ".join(SINGLE_TASK_FIELDS))
        if len(given) > 1:
            raise PayloadError(given[1], f"only one task type may be given, got {' and '.join(given)}")
    elif given:
        raise PayloadError(given[0], "give either tasks or a single task type, not both")
    elif tasks is not UNRENDERED:
        _check_tasks(tasks)
        for i, task in enumerate(tasks):
            if task.get("job_cluster_key") is not None:
                raise PayloadError(f"tasks[{i}].job_cluster_key", NO_SHARED_CLUSTERS)
    if payload.get("job_clusters") is not None:
        raise PayloadError("job_clusters", NO_SHARED_CLUSTERS)
    _check_cluster_spec(payload, "")
    _check_token(payload)


NO_SHARED_CLUSTERS = (
    "a one-time run (runs/submit) cannot share job clusters, Databricks refuses them: give each task "
    "its own new_cluster or existing_cluster_id, or define a job (DatabricksCreateJobsOperator) with "
    "job_clusters and start it with DatabricksRunNowOperator"
)


def _check_tasks(tasks: Any) -> None:
    if not isinstance(tasks, list) or not tasks:
        raise PayloadError("tasks", "expected a non-empty list of task objects")
    for i, task in enumerate(tasks):
        if not isinstance(task, Mapping):
            raise PayloadError(f"tasks[{i}]", f"expected a task object, got {type(task).__name__}")
        _check_cluster_spec(task, f"tasks[{i}].")


def validate_run_now(payload: Mapping[str, Any]) -> None:
    """Refuse a run-now body without exactly one of job_id / job_name, or with oversized parameters."""
    has_id = payload.get("job_id") is not None
    if has_id == (payload.get("job_name") is not None):
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


def validate_job_settings(payload: Mapping[str, Any]) -> None:
    """Refuse a jobs/create (or reset) body without a name, or whose tasks or clusters cannot work."""
    name = payload.get("name")
    if name is not UNRENDERED and (not isinstance(name, str) or not name.strip()):
        raise PayloadError("name", f"a job needs a non-empty name (it finds the job to reset), got {name!r}")
    tasks = payload.get("tasks")
    if tasks is not None and tasks is not UNRENDERED:
        _check_tasks(tasks)
        clusters = payload.get("job_clusters")
        if clusters is not UNRENDERED:
            keys = job_cluster_keys(clusters)
            for i, task in enumerate(tasks):
                key = task.get("job_cluster_key")
                if key not in (None, UNRENDERED) and key not in keys:
                    raise PayloadError(f"tasks[{i}].job_cluster_key", f"{key!r} is not defined in job_clusters")


def job_cluster_keys(clusters: Any, field: str = "job_clusters") -> set[str]:
    """The ``job_cluster_key`` of each of ``clusters`` (a JobCluster list), refusing malformed ones."""
    if clusters is None:
        return set()
    if not isinstance(clusters, list):
        raise PayloadError(field, f"expected a list of job clusters, got {type(clusters).__name__}")
    keys: set[str] = set()
    for i, cluster in enumerate(clusters):
        key = cluster.get("job_cluster_key") if isinstance(cluster, Mapping) else None
        if not isinstance(key, str) or not key:
            raise PayloadError(f"{field}[{i}].job_cluster_key", "each job cluster needs a job_cluster_key")
        if key in keys:
            raise PayloadError(f"{field}[{i}].job_cluster_key", f"{key!r} is defined twice")
        keys.add(key)
    return keys


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
