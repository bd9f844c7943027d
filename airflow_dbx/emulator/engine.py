"""The workspace the emulator keeps: jobs, runs and what each Jobs API call does to them."""

from __future__ import annotations

import itertools
import json
import threading
import time
from typing import TYPE_CHECKING, Any

from airflow_dbx.emulator import payloads as p
from airflow_dbx.emulator.errors import ApiError, invalid, not_found
from airflow_dbx.emulator.jobs import Jobs
from airflow_dbx.emulator.model import TERMINATING_SECONDS, Epoch, Outcome, RunRecord, TaskRun
from airflow_dbx.emulator.timeline import Context, cut, schedule

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

OUTPUT_MAX_BYTES = 5 * 1024 * 1024
MULTI_TASK_OUTPUT = (
    "Retrieving the output of runs with multiple tasks is not supported. "
    "Please retrieve the output of each individual task run instead."
)


class Engine:
    """All state behind the API. Callers hold ``lock`` around every call."""

    def __init__(self, time_scale: float = 1.0, clock: Callable[[], float] = time.time) -> None:
        self.lock = threading.RLock()
        self.time_scale = time_scale
        self.clock = clock
        self.base_url = "http://127.0.0.1"
        self.clusters: set[str] = set()
        self._ids = itertools.count(1_000_001)
        self.jobs = Jobs(clock)
        self.reset()

    def reset(self) -> None:
        self.jobs.reset()
        self.runs: dict[int, RunRecord] = {}
        self.task_runs: dict[int, tuple[RunRecord, TaskRun]] = {}
        self.tokens: dict[str, int] = {}
        self.created = {"runs": 0, "idempotent_replays": 0, "repairs": 0, "cancels": 0}

    def cluster_known(self, cluster_id: str) -> bool:
        return cluster_id.startswith("emulator-") or cluster_id in self.clusters

    def _ctx(self) -> Context:
        return Context(self.time_scale, lambda: next(self._ids), self.cluster_known)

    # ------------------------------------------------------------------ starting runs

    def submit(self, body: Mapping[str, Any], user: str) -> dict[str, Any]:
        token = p.check_idempotency_token(body)
        if token in self.tokens:
            self.created["idempotent_replays"] += 1
            return {"run_id": self.tokens[token]}
        if body.get("new_cluster") is not None and body.get("existing_cluster_id") is not None:
            raise invalid("new_cluster", "give either new_cluster or existing_cluster_id, not both")
        if body.get("tasks") is not None:
            extra = next((k for k in body if p.is_task_type(k) and body[k] is not None), None)
            if extra:
                raise invalid(extra, "give either tasks or a single task type, not both")
            tasks = body["tasks"]
            if isinstance(tasks, list) and not tasks:
                raise invalid("tasks", "at least one task is required")
        else:
            tasks = p.single_task(dict(body))
        specs, order, topo = p.task_specs(tasks)
        timeout = p.get_int(body, "timeout_seconds", minimum=0)
        name = p.get_str(body, "run_name") or "Untitled"
        run = self._start(
            job_id=0,
            run_name=name,
            run_type="SUBMIT_RUN",
            creator=user,
            specs=specs,
            order=order,
            topo=topo,
            timeout=float(timeout) if timeout else None,
            overrides={},
            idempotency_token=token,
        )
        return {"run_id": run.run_id}

    def run_now(self, body: Mapping[str, Any], user: str) -> dict[str, Any]:
        token = p.check_idempotency_token(body)
        overrides = p.overrides(body)
        only = p.get_list(body, "only")
        job = self.jobs.find(body)
        if token in self.tokens:
            self.created["idempotent_replays"] += 1
            return {"run_id": self.tokens[token], "number_in_job": self.tokens[token]}
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
        run = self._start(
            job_id=job["job_id"],
            run_name=settings["name"],
            run_type="JOB_RUN",
            creator=user,
            specs=specs,
            order=order,
            topo=topo,
            timeout=float(timeout) if timeout else None,
            overrides=overrides,
            job_parameters=job_parameters,
            idempotency_token=token,
            defaults=defaults,
        )
        return {"run_id": run.run_id, "number_in_job": run.run_id}

    def _start(self, *, job_id: int, **fields: Any) -> RunRecord:
        """A new run from RunRecord fields; a one-time run gets its own run id as job id."""
        run_id = next(self._ids)
        now = self.clock()
        run = RunRecord(run_id=run_id, job_id=job_id or run_id, created=now, **fields)
        self._schedule_epoch(run, None, run.order, now)
        self.runs[run_id] = run
        if run.idempotency_token is not None:
            self.tokens[run.idempotency_token] = run_id
        self.created["runs"] += 1
        return run

    def _schedule_epoch(
        self, run: RunRecord, repair_id: int | None, keys: list[str], t0: float, extra: Mapping[str, Any] | None = None
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
            ctx=self._ctx(),
        )
        epoch = Epoch(repair_id, t0, created, view)
        if run.timeout:
            limit = t0 + run.timeout * self.time_scale
            if any(t.stop > limit for t in created):
                term = TERMINATING_SECONDS * self.time_scale
                message = f"The run timed out after {run.timeout:g} seconds."
                cut(
                    created,
                    limit,
                    Outcome("TIMEDOUT", message, "CANCELED", "CLIENT_ERROR", user_cancelled_or_timedout=True),
                    Outcome("CANCELED", message, "CANCELED", "CLIENT_ERROR", user_cancelled_or_timedout=True),
                    term,
                )
                epoch.timed_out = run.timeout
        epoch.settle(run.order, run.leaves)
        run.epochs.append(epoch)
        run.cache.clear()
        for task in created:
            self.task_runs[task.run_id] = (run, task)
        return epoch

    # ------------------------------------------------------------------ reading runs

    def _find(self, data: Mapping[str, Any]) -> tuple[RunRecord, TaskRun | None]:
        run_id = p.get_int(data, "run_id", required=True) or 0
        run = self.runs.get(run_id)
        if run is not None:
            return run, None
        if run_id in self.task_runs:
            return self.task_runs[run_id]
        raise not_found(f"Run {run_id} does not exist.")

    def get_run(self, query: Mapping[str, Any], version: str) -> dict[str, Any] | bytes:
        """The run as JSON; kept until its next phase change (state only changes at known times)."""
        run, task = self._find(query)
        now = self.clock()
        if task is not None:
            return self._task_view(run, task, now)
        history = p.get_bool(query, "include_history")
        page_token = query.get("page_token") if version == "2.2" else None
        key = (version, page_token, history)
        cached = run.cache.get(key)
        if cached is not None and cached[0] <= now < cached[1]:
            return cached[2]
        tasks = run.tasks()
        offset = p.decode_page(page_token)
        paged = version == "2.2" and len(tasks) > p.TASK_PAGE
        page = tasks[offset : offset + p.TASK_PAGE] if paged else tasks
        data = run.snapshot(now, self.base_url, tasks=page, history=history)
        if paged and offset + p.TASK_PAGE < len(tasks):
            data["next_page_token"] = p.encode_page(offset + p.TASK_PAGE)
        if paged and offset:
            data["prev_page_token"] = p.encode_page(max(0, offset - p.TASK_PAGE))
        body = json.dumps(data).encode()
        run.cache[key] = (*run.stable_window(now), body)
        return body

    def _task_view(self, run: RunRecord, task: TaskRun, now: float) -> dict[str, Any]:
        data = task.snapshot(now, run.job_id, self.base_url)
        data.update(
            job_id=run.job_id,
            run_type=run.run_type,
            run_name=task.task_key,
            parent_run_id=run.run_id,
            creator_user_name=run.creator,
        )
        return data

    def get_output(self, query: Mapping[str, Any]) -> dict[str, Any]:
        run, task = self._find(query)
        if task is None:
            if len(run.specs) > 1:
                raise ApiError(400, "INVALID_PARAMETER_VALUE", MULTI_TASK_OUTPUT)
            task = run.tasks()[0]
        now = self.clock()
        out: dict[str, Any] = {"metadata": self._task_view(run, task, now)}
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
        if task.result not in ("SUCCESS", "EXCLUDED"):
            out["error"] = task.error or task.outcome.message
            if task.error_trace:
                out["error_trace"] = task.error_trace
        return out

    def list_runs(self, query: Mapping[str, Any]) -> dict[str, Any]:
        limit = p.get_int(query, "limit", default=20, minimum=1, maximum=25) or 20
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
                r.snapshot(now, self.base_url, tasks=r.tasks() if expand else None, history=False) for r in page
            ]
        if out["has_more"]:
            out["next_page_token"] = p.encode_page(offset + limit)
        if offset:
            out["prev_page_token"] = p.encode_page(max(0, offset - limit))
        return out

    # ------------------------------------------------------------------ changing runs

    def cancel(self, body: Mapping[str, Any]) -> dict[str, Any]:
        run, _task = self._find(body)
        self._cancel(run)
        return {}

    def _cancel(self, run: RunRecord) -> None:
        now = self.clock()
        if run.is_terminal(now):
            return
        epoch = run.current
        term = TERMINATING_SECONDS * self.time_scale
        cancelled = Outcome(
            "CANCELED", "Run cancelled by user.", "USER_CANCELED", "CLIENT_ERROR", user_cancelled_or_timedout=True
        )
        cut(epoch.task_runs, now, cancelled, cancelled, term)
        epoch.cancelled = True
        epoch.timed_out = None
        epoch.settle(run.order, run.leaves)
        run.cache.clear()
        self.created["cancels"] += 1

    def cancel_all(self, body: Mapping[str, Any]) -> dict[str, Any]:
        job_id = p.get_int(body, "job_id")
        queued_only = p.get_bool(body, "all_queued_runs")
        if job_id is None and not queued_only:
            raise invalid("job_id", "give job_id or all_queued_runs")
        if job_id is not None and job_id not in self.jobs:
            raise not_found(f"Job {job_id} does not exist.")
        now = self.clock()
        for run in list(self.runs.values()):
            if job_id is not None and run.job_id != job_id:
                continue
            if queued_only and now >= run.current.first_start:
                continue
            self._cancel(run)
        return {}

    def repair(self, body: Mapping[str, Any]) -> dict[str, Any]:
        run, task = self._find(body)
        if task is not None:
            raise invalid("run_id", f"{task.run_id} is a task run; repair its parent run {run.run_id}")
        now = self.clock()
        if not run.is_terminal(now):
            raise ApiError(
                400, "INVALID_STATE", f"Run {run.run_id} is still active; only a finished run can be repaired."
            )
        repairs = [e.repair_id for e in run.epochs if e.repair_id is not None]
        latest = p.get_int(body, "latest_repair_id")
        if repairs and latest != repairs[-1]:
            raise invalid(
                "latest_repair_id", f"expected the latest repair id {repairs[-1]} of run {run.run_id}, got {latest}"
            )
        if not repairs and latest is not None:
            raise invalid("latest_repair_id", f"run {run.run_id} has not been repaired yet, got {latest}")
        keys = self._repair_keys(run, body)
        epoch = self._schedule_epoch(run, next(self._ids), keys, now, p.overrides(body))
        self.created["repairs"] += 1
        return {"repair_id": epoch.repair_id}

    def _repair_keys(self, run: RunRecord, body: Mapping[str, Any]) -> list[str]:
        rerun = p.get_list(body, "rerun_tasks")
        all_failed = p.get_bool(body, "rerun_all_failed_tasks")
        if rerun and all_failed:
            raise invalid("rerun_tasks", "give rerun_tasks or rerun_all_failed_tasks, not both")
        view = run.current.view
        if all_failed:
            keys = {k for k in run.order if k in view and view[k].result not in ("SUCCESS", "EXCLUDED")}
        elif rerun:
            unknown = [k for k in rerun if k not in run.specs]
            if unknown:
                raise invalid("rerun_tasks", f"unknown task key(s) {unknown}")
            keys = set(rerun)
        else:
            raise invalid("rerun_tasks", "give rerun_tasks or rerun_all_failed_tasks")
        if not keys:
            raise invalid("rerun_all_failed_tasks", f"run {run.run_id} has no failed tasks to repair")
        if p.get_bool(body, "rerun_dependent_tasks"):
            changed = True
            while changed:
                more = {k for k, s in run.specs.items() if k not in keys and keys.intersection(s.depends_on)}
                changed = bool(more)
                keys |= more
        return [k for k in run.topo if k in keys]

    # ------------------------------------------------------------------ inspection

    def snapshots(self) -> list[dict[str, Any]]:
        return [self.snapshot(run_id) for run_id in self.runs]

    def snapshot(self, run_id: int) -> dict[str, Any]:
        run = self.runs.get(run_id)
        if run is None:
            raise not_found(f"Run {run_id} does not exist.")
        data = run.snapshot(self.clock(), self.base_url, tasks=run.tasks(), history=True)
        data["idempotency_token"] = run.idempotency_token
        return data
