"""The workspace the emulator keeps: jobs, runs, and how runs start and are read.

What changes a run once started (cancel, repair, delete) is in ``control``; per-job
concurrency (QUEUED / SKIPPED) in ``queueing``.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from typing import TYPE_CHECKING, Any

from airflow_dbx.emulator import fields
from airflow_dbx.emulator import payloads as p
from airflow_dbx.emulator.errors import ApiError, invalid, missing
from airflow_dbx.emulator.jobs import Jobs
from airflow_dbx.emulator.model import TERMINATING_SECONDS, Epoch, RunRecord, TaskRun, TaskSpec, page_url
from airflow_dbx.emulator.queueing import Admission, admit
from airflow_dbx.emulator.states import OK_RESULTS, timed_out
from airflow_dbx.emulator.timeline import Context, cut, schedule

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

OUTPUT_MAX_BYTES = 5 * 1024 * 1024
MULTI_TASK_OUTPUT = (
    "Retrieving the output of runs with multiple tasks is not supported. "
    "Please retrieve the output of each individual task run instead."
)
# Databricks removes runs 60 days after they start; an idempotency token lives as long as its run.
RUN_RETENTION_SECONDS = 60 * 24 * 3600.0
CANCEL_TERMINATING_SECONDS = 0.5


class Engine:
    """All state behind the API. Callers hold ``lock`` around every call."""

    def __init__(self, time_scale: float = 1.0, clock: Callable[[], float] = time.time) -> None:
        self.lock = threading.RLock()
        self.time_scale = time_scale
        # How long a cancelled run stays TERMINATING, in seconds of ``clock`` (not scaled, so a
        # client polling a fast emulator still sees it).
        self.cancel_terminating_seconds = CANCEL_TERMINATING_SECONDS
        self.retention_seconds = RUN_RETENTION_SECONDS
        self.clock = clock
        self.base_url = "http://127.0.0.1"
        self.clusters: set[str] = set()
        self._ids = itertools.count(1_000_001)
        self.jobs = Jobs(clock)
        self.reset()

    def reset(self) -> None:
        self.jobs.clear()
        self.runs: dict[int, RunRecord] = {}
        self.task_runs: dict[int, tuple[RunRecord, TaskRun]] = {}
        self.job_runs: dict[int, list[RunRecord]] = {}  # runs of each job that may still be active
        self.tokens: dict[str, int] = {}
        self.deleted_tokens: dict[str, float] = {}  # token -> when it is forgotten
        self.next_expiry = float("inf")
        self.created = {"runs": 0, "idempotent_replays": 0, "repairs": 0, "cancels": 0, "deletes": 0}

    def cluster_known(self, cluster_id: str) -> bool:
        return cluster_id.startswith("emulator-") or cluster_id in self.clusters

    def ctx(self) -> Context:
        return Context(self.time_scale, lambda: next(self._ids), self.cluster_known)

    def new_id(self) -> int:
        return next(self._ids)

    # ------------------------------------------------------------------ retention and tokens

    def expire(self, now: float) -> None:
        """Forget runs older than the retention period, their task runs and their tokens."""
        if now < self.next_expiry:
            return
        horizon = now - self.retention_seconds
        for run in [r for r in self.runs.values() if r.created <= horizon]:
            self.forget(run)
        for token in [t for t, until in self.deleted_tokens.items() if until <= now]:
            del self.deleted_tokens[token]
        times = [r.created + self.retention_seconds for r in self.runs.values()] + list(self.deleted_tokens.values())
        self.next_expiry = min(times, default=float("inf"))

    def forget(self, run: RunRecord) -> None:
        del self.runs[run.run_id]
        for epoch in run.epochs:
            for task in epoch.task_runs:
                self.task_runs.pop(task.run_id, None)
        if run.idempotency_token is not None:
            self.tokens.pop(run.idempotency_token, None)

    def replay(self, token: str | None) -> int | None:
        """The run an idempotency token already started, if any; an error if that run was deleted."""
        if token is None:
            return None
        self.expire(self.clock())
        if token in self.deleted_tokens:
            raise invalid("idempotency_token", "the run started with this idempotency token was deleted")
        run_id = self.tokens.get(token)
        if run_id is not None:
            self.created["idempotent_replays"] += 1
        return run_id

    # ------------------------------------------------------------------ starting runs

    def submit(self, body: Mapping[str, Any], user: str) -> dict[str, Any]:
        fields.check_submit(body)
        token = p.check_idempotency_token(body)
        if (existing := self.replay(token)) is not None:
            return {"run_id": existing}
        if body.get("new_cluster") is not None and body.get("existing_cluster_id") is not None:
            raise invalid("new_cluster", "give either new_cluster or existing_cluster_id, not both")
        p.queue_enabled(body)
        if body.get("tasks") is not None:
            extra = next((k for k in body if p.is_task_type(k) and body[k] is not None), None)
            if extra:
                raise invalid(extra, "give either tasks or a single task type, not both")
            tasks = body["tasks"]
            if isinstance(tasks, list) and not tasks:
                raise invalid("tasks", "at least one task is required")
        else:
            tasks = p.single_task(dict(body))
        plan = p.task_specs(tasks)
        timeout = p.get_int(body, "timeout_seconds", minimum=0)
        name = p.get_str(body, "run_name") or "Untitled"
        admission = Admission(self.clock())
        run = self._start(admission, 0, name, "SUBMIT_RUN", plan, timeout, creator=user, idempotency_token=token)
        return {"run_id": run.run_id}

    def run_now(self, body: Mapping[str, Any], user: str) -> dict[str, Any]:
        token = p.check_idempotency_token(body)
        overrides = p.overrides(body)
        only = p.get_list(body, "only")
        queue = p.queue_enabled(body)
        job = self.jobs.find(body)
        if (existing := self.replay(token)) is not None:
            return {"run_id": existing, "number_in_job": existing}
        settings = job["settings"]
        tasks = settings.get("tasks") or []
        if not tasks:
            raise invalid("job_id", f"job {job['job_id']} has no tasks to run")
        specs, order, topo = p.task_specs(tasks)
        if only:
            unknown = [k for k in only if k not in specs]
            if unknown:
                raise invalid("only", f"unknown task key(s) {unknown}")
            for spec in specs.values():
                spec.depends_on = tuple(d for d in spec.depends_on if d in only)
            specs = {k: v for k, v in specs.items() if k in only}
            order, topo = [k for k in order if k in only], [k for k in topo if k in only]
        defaults = {i["name"]: i.get("default", "") for i in settings.get("parameters") or []}
        given = overrides.get("job_parameters") or {}
        job_parameters = (
            [{"name": k, "default": v, "value": given.get(k, v)} for k, v in defaults.items()] if defaults else None
        )
        timeout = p.get_int(settings, "timeout_seconds", minimum=0)
        now = self.clock()
        active = self.job_runs.setdefault(job["job_id"], [])
        active[:] = [r for r in active if not r.is_terminal(now)]
        run = self._start(
            admit(active, settings, queue, now),
            job["job_id"],
            settings["name"],
            "JOB_RUN",
            (specs, order, topo),
            timeout,
            creator=user,
            overrides=overrides,
            job_parameters=job_parameters,
            defaults=defaults,
            idempotency_token=token,
        )
        active.append(run)
        return {"run_id": run.run_id, "number_in_job": run.run_id}

    def _start(  # noqa: PLR0917 -- what every run has, in RunRecord's order
        self,
        admission: Admission,
        job_id: int,
        run_name: str,
        run_type: str,
        plan: tuple[dict[str, TaskSpec], list[str], list[str]],
        timeout: int | None,
        **fields: Any,
    ) -> RunRecord:
        """A new run from RunRecord fields; a one-time run gets its own run id as job id."""
        run_id = next(self._ids)
        now = self.clock()
        self.expire(now)
        specs, order, topo = plan
        run = RunRecord(
            run_id=run_id,
            job_id=job_id or run_id,
            run_name=run_name,
            run_type=run_type,
            created=now,
            specs=specs,
            order=order,
            topo=topo,
            timeout=float(timeout) if timeout else None,
            **fields,
        )
        self.schedule_epoch(run, None, run.order, admission.start, queued=admission.queued)
        if admission.skipped is not None:
            epoch = run.current
            for task in epoch.task_runs:
                task.skip(admission.skipped, now)
            epoch.forced = admission.skipped
            epoch.settle(run.order, run.leaves)
        self.runs[run_id] = run
        self.next_expiry = min(self.next_expiry, now + self.retention_seconds)
        if run.idempotency_token is not None:
            self.tokens[run.idempotency_token] = run_id
        self.created["runs"] += 1
        return run

    def schedule_epoch(
        self,
        run: RunRecord,
        repair_id: int | None,
        keys: list[str],
        t0: float,
        extra: Mapping[str, Any] | None = None,
        *,
        queued: bool = False,
    ) -> Epoch:
        overrides = dict(run.overrides, **(extra or {}))
        defaults = run.defaults
        view = run.current.view if run.epochs else {}
        created, view = schedule(
            run.specs,
            run.topo,
            keys=keys,
            view=view,
            params=lambda spec: p.task_params(spec, defaults, overrides),
            t0=t0,
            ctx=self.ctx(),
            queued_until=t0 if queued else 0.0,
        )
        epoch = Epoch(repair_id, t0, created, view, queued_until=t0 if queued else 0.0)
        if run.timeout:
            limit = t0 + run.timeout * self.time_scale
            if any(t.stop > limit for t in created):
                term = TERMINATING_SECONDS * self.time_scale
                waiting = timed_out(run.timeout, "CANCELED")
                cut(epoch, limit, running=timed_out(run.timeout), waiting=waiting, term=term)
                epoch.forced = timed_out(run.timeout)
        epoch.settle(run.order, run.leaves)
        run.epochs.append(epoch)
        run.cache.clear()
        for task in epoch.task_runs:
            self.task_runs[task.run_id] = (run, task)
        return epoch

    # ------------------------------------------------------------------ reading runs

    def find(self, data: Mapping[str, Any]) -> tuple[RunRecord, TaskRun | None]:
        run_id = p.get_int(data, "run_id", required=True) or 0
        self.expire(self.clock())
        run = self.runs.get(run_id)
        if run is not None:
            return run, None
        if run_id in self.task_runs:
            return self.task_runs[run_id]
        raise missing("Run", run_id)

    def get_run(self, query: Mapping[str, Any], version: str) -> dict[str, Any] | bytes:
        """The run as JSON; kept until its next phase change (state only changes at known times)."""
        run, task = self.find(query)
        now = self.clock()
        if task is not None:
            return self.task_view(run, task, now)
        history = p.get_bool(query, "include_history")
        page_token = query.get("page_token") if version == "2.2" else None
        key = (version, page_token, history)
        cached = run.cache.get(key)
        if cached is not None and cached[0] <= now < cached[1]:
            return cached[2]
        tasks = run.tasks(now)
        offset = p.decode_page(page_token)
        paged = version == "2.2" and len(tasks) > p.TASK_PAGE
        page = tasks[offset : offset + p.TASK_PAGE] if paged else tasks
        data = run.snapshot(now, self.base_url, tasks=page, history=history, first_page=offset == 0)
        if paged and offset + p.TASK_PAGE < len(tasks):
            data["next_page_token"] = p.encode_page(offset + p.TASK_PAGE)
        if paged and offset:
            data["prev_page_token"] = p.encode_page(max(0, offset - p.TASK_PAGE))
        body = json.dumps(data).encode()
        run.cache[key] = (*run.stable_window(now), body)
        return body

    def task_view(self, run: RunRecord, task: TaskRun, now: float) -> dict[str, Any]:
        data = task.snapshot(now, page_url(self.base_url, run.job_id, task.run_id))
        data.update(
            job_id=run.job_id,
            run_type=run.run_type,
            run_name=task.task_key,
            parent_run_id=run.run_id,
            creator_user_name=run.creator,
        )
        return data

    def get_output(self, query: Mapping[str, Any]) -> dict[str, Any]:
        run, task = self.find(query)
        now = self.clock()
        if task is None:
            if len(run.order) > 1:
                raise ApiError(400, "INVALID_PARAMETER_VALUE", MULTI_TASK_OUTPUT)
            task = run.tasks(now)[0]
        return {"metadata": self.task_view(run, task, now), **task_output(task, now)}

    def list_runs(self, query: Mapping[str, Any]) -> dict[str, Any]:
        # "If a request specifies a limit of 0, the service instead uses the maximum limit."
        limit = p.get_int(query, "limit", default=20, minimum=0, maximum=p.RUNS_LIST_MAX)
        limit = limit or p.RUNS_LIST_MAX
        offset = p.decode_page(query.get("page_token")) + (p.get_int(query, "offset", default=0, minimum=0) or 0)
        job_id = p.get_int(query, "job_id")
        active, completed = p.get_bool(query, "active_only"), p.get_bool(query, "completed_only")
        if active and completed:
            raise invalid("active_only", "active_only and completed_only cannot both be true")
        run_type = query.get("run_type")
        start_from = p.get_int(query, "start_time_from")
        start_to = p.get_int(query, "start_time_to")
        expand = p.get_bool(query, "expand_tasks")
        now = self.clock()
        self.expire(now)
        runs = []
        for run in reversed(self.runs.values()):
            if job_id is not None and run.job_id != job_id:
                continue
            if (active and run.is_terminal(now)) or (completed and not run.is_terminal(now)):
                continue
            if run_type and run.run_type != run_type:
                continue
            started = int(run.created * 1000)
            if (start_from and started < start_from) or (start_to and started > start_to):
                continue
            runs.append(run)
        page = runs[offset : offset + limit]
        out: dict[str, Any] = {"has_more": offset + limit < len(runs)}
        if page:
            out["runs"] = [
                r.snapshot(now, self.base_url, tasks=r.tasks(now) if expand else None, history=False) for r in page
            ]
        if out["has_more"]:
            out["next_page_token"] = p.encode_page(offset + limit)
        if offset:
            out["prev_page_token"] = p.encode_page(max(0, offset - limit))
        return out

    # ------------------------------------------------------------------ inspection

    def snapshots(self) -> list[dict[str, Any]]:
        return [self.snapshot(run_id) for run_id in self.runs]

    def snapshot(self, run_id: int) -> dict[str, Any]:
        run = self.runs.get(run_id)
        if run is None:
            raise missing("Run", run_id)
        now = self.clock()
        data = run.snapshot(now, self.base_url, tasks=run.tasks(now), history=True)
        data["idempotency_token"] = run.idempotency_token
        return data


def task_output(task: TaskRun, now: float) -> dict[str, Any]:
    """What runs/get-output adds to a task run's metadata once it ended: output, logs, error."""
    out: dict[str, Any] = {}
    if now < task.end:
        return out
    if "notebook_task" in task.spec.settings:
        text = task.output
        if text is None:
            out["notebook_output"] = {}
        else:
            raw = text.encode()
            truncated = len(raw) > OUTPUT_MAX_BYTES
            result = raw[:OUTPUT_MAX_BYTES].decode(errors="ignore") if truncated else text
            out["notebook_output"] = {"result": result, "truncated": truncated}
    else:
        out["logs"] = f"[emulator] task {task.task_key} attempt {task.attempt_number}: {task.result}\n"
        out["logs_truncated"] = False
    if task.result not in OK_RESULTS:
        out["error"] = task.error or task.outcome.message
        if task.error_trace:
            out["error_trace"] = task.error_trace
    return out
