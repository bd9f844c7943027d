"""The Jobs API's objects as the package reads them: endpoints, run states, runs and task runs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from airflow_dbx.errors import DatabricksApiError, DatabricksError

if TYPE_CHECKING:
    from collections.abc import Mapping

API_PREFIX = "/api/2.2/"
DEFAULT_CONN_ID = "databricks_default"


class Endpoint(NamedTuple):
    method: str
    path: str
    version: str = "2.2"  # the SQL APIs are 2.0

    @property
    def url_path(self) -> str:
        return f"/api/{self.version}/{self.path}"

    @property
    def label(self) -> str:
        return f"{self.method} {self.url_path}"


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

# Lists that runs/get splits across pages (Jobs API 2.2), to concatenate when reading a run whole.
PAGED_RUN_FIELDS = ("tasks", "job_clusters", "job_parameters", "repair_history", "iterations")

# status.state (Jobs API 2.2) and the deprecated state.life_cycle_state.
_TERMINAL_LIFE_CYCLE = frozenset({"TERMINATED", "SKIPPED", "INTERNAL_ERROR"})
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
    """Where a run (or a task run) is, read from ``status`` with a fallback to ``state``.

    A life cycle state added to the API later counts as active: the wait goes on.
    """

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
    end_time: int = 0

    @classmethod
    def from_dict(cls, task: Mapping[str, Any]) -> TaskRun:
        return cls(
            task_key=task.get("task_key", ""),
            run_id=int(task["run_id"]),
            state=RunState.from_dict(task),
            attempt_number=int(task.get("attempt_number", 0)),
            depends_on=tuple(dep["task_key"] for dep in task.get("depends_on", ())),
            is_notebook="notebook_task" in task,
            end_time=int(task.get("end_time") or 0),
        )


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
        repairs = tuple(int(item["id"]) for item in data.get("repair_history", ()) if item.get("type") == "REPAIR")
        return cls(
            run_id=int(data["run_id"]),
            state=RunState.from_dict(data),
            job_id=data.get("job_id"),
            run_name=data.get("run_name", ""),
            run_page_url=data.get("run_page_url", ""),
            start_time=int(data.get("start_time") or 0),
            tasks=tuple(TaskRun.from_dict(task) for task in data.get("tasks", ())),
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
        repairs = [
            int(item.get("start_time") or 0)
            for item in self.raw.get("repair_history", ())
            if item.get("type") == "REPAIR"
        ]
        return max([self.start_time, *repairs])


def task_attempt(run: Run, task_key: str) -> Run:
    """The task ``task_key`` of ``run`` (its latest attempt, as runs/get lists it) as a run of its own."""
    for task in run.raw.get("tasks", ()):
        if task.get("task_key") == task_key:
            return Run.from_dict({**task, "job_id": run.job_id, "run_name": task_key})
    raise DatabricksError(f"Databricks run {run.run_id} has no task {task_key!r}; was its job changed?")


def merge_run_page(run: Mapping[str, Any], page: Mapping[str, Any]) -> dict[str, Any]:
    """``run`` (runs/get's first page, or pages merged so far) with the lists of a next ``page`` added."""
    merged = dict(run)
    for name in PAGED_RUN_FIELDS:
        if page.get(name):
            merged[name] = [*merged.get(name, ()), *page[name]]
    merged["next_page_token"] = page.get("next_page_token")
    return merged


def id_in(answer: Mapping[str, Any], key: str, endpoint: Endpoint) -> int:
    """``answer[key]`` as an int, or an error that says the API's answer lacked it."""
    value = answer.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).isdigit():
        raise DatabricksApiError(
            method=endpoint.method,
            endpoint=endpoint.url_path,
            status_code=200,
            message=f"the answer has no {key}: {json.dumps(answer)[:200]}",
        )
    return int(value)
