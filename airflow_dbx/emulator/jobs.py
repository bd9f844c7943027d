"""Jobs: jobs/create, jobs/get, jobs/list and jobs/delete over an in-memory store."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from airflow_dbx.emulator import payloads as p
from airflow_dbx.emulator.errors import invalid, missing

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping


class Jobs:
    """The workspace's jobs by id, in creation order."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._ids = itertools.count(1001)
        self.by_id: dict[int, dict[str, Any]] = {}
        self.created = 0

    def reset(self) -> None:
        self.by_id.clear()
        self.created = 0

    def __contains__(self, job_id: object) -> bool:
        return job_id in self.by_id

    def create(self, body: Mapping[str, Any], user: str) -> dict[str, Any]:
        settings = dict(body)
        settings["name"] = p.get_str(body, "name", "Untitled")
        if body.get("tasks") is not None:
            p.task_specs(body["tasks"])
        params = p.get_list(body, "parameters") or []
        for i, item in enumerate(params):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise invalid(f"parameters[{i}]", 'expected {"name": ..., "default": ...}')
        p.get_int(body, "timeout_seconds", minimum=0)
        p.get_int(body, "max_concurrent_runs", minimum=0, maximum=p.MAX_CONCURRENT_RUNS)
        p.queue_enabled(body)
        job_id = next(self._ids)
        self.by_id[job_id] = {
            "job_id": job_id,
            "creator_user_name": user,
            "run_as_user_name": user,
            "created_time": int(self.clock() * 1000),
            "settings": settings,
        }
        self.created += 1
        return {"job_id": job_id}

    def find(self, data: Mapping[str, Any]) -> dict[str, Any]:
        job_id = p.get_int(data, "job_id", required=True)
        job = self.by_id.get(job_id or 0)
        if job is None:
            raise missing("Job", job_id)
        return job

    def get(self, query: Mapping[str, Any], version: str) -> dict[str, Any]:
        job = self.find(query)
        out = dict(job, settings=dict(job["settings"]))
        tasks = out["settings"].get("tasks")
        if version == "2.2" and tasks:
            offset = p.decode_page(query.get("page_token"))
            out["settings"]["tasks"] = tasks[offset : offset + p.TASK_PAGE]
            if offset + p.TASK_PAGE < len(tasks):
                out["next_page_token"] = p.encode_page(offset + p.TASK_PAGE)
        return out

    def list(self, query: Mapping[str, Any]) -> dict[str, Any]:
        limit = p.get_int(query, "limit", default=20, minimum=1, maximum=100) or 20
        offset = p.decode_page(query.get("page_token")) + (p.get_int(query, "offset", default=0, minimum=0) or 0)
        name = p.get_str(query, "name")
        wanted = None if name is None else name.casefold()  # "the exact (case insensitive) job name"
        expand = p.get_bool(query, "expand_tasks")
        jobs = [j for j in self.by_id.values() if wanted is None or str(j["settings"].get("name")).casefold() == wanted]
        page = jobs[offset : offset + limit]
        out: dict[str, Any] = {"has_more": offset + limit < len(jobs)}
        if page:
            out["jobs"] = [
                dict(j, settings={k: v for k, v in j["settings"].items() if expand or k != "tasks"}) for j in page
            ]
        if out["has_more"]:
            out["next_page_token"] = p.encode_page(offset + limit)
        if offset:
            out["prev_page_token"] = p.encode_page(max(0, offset - limit))
        return out

    def delete(self, body: Mapping[str, Any]) -> dict[str, Any]:
        job = self.find(body)
        del self.by_id[job["job_id"]]
        return {}
