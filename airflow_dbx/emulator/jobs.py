"""Jobs: jobs/create, jobs/reset, jobs/get, jobs/list and jobs/delete over an in-memory store."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from airflow_dbx.emulator import fields
from airflow_dbx.emulator import payloads as p
from airflow_dbx.emulator.errors import invalid, missing

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping


RESET_JOB = frozenset({"job_id", "new_settings"})


class Jobs:
    """The workspace's jobs by id, in creation order."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._ids = itertools.count(1001)
        self.by_id: dict[int, dict[str, Any]] = {}
        self.created = 0

    def clear(self) -> None:
        self.by_id.clear()
        self.created = 0
        self.resets = 0

    def __contains__(self, job_id: object) -> bool:
        return job_id in self.by_id

    def create(self, body: Mapping[str, Any], user: str) -> dict[str, Any]:
        fields.check_job_settings(body, fields.CREATE_JOB)
        settings = checked_settings(body)
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

    def reset(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """jobs/reset: "Overwrite all settings for the given job" (runs already started keep theirs)."""
        fields.check_known(body, RESET_JOB)
        job = self.find(body)
        new_settings = p.get_map(body, "new_settings")
        if new_settings is None:
            raise fields.required_field("new_settings")
        fields.check_job_settings(new_settings)
        job["settings"] = checked_settings(new_settings)
        self.resets += 1
        return {}

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


# Settings the API keeps apart from the job's settings: jobs/get never shows them.
_NOT_SETTINGS = ("access_control_list",)


def checked_settings(body: Mapping[str, Any]) -> dict[str, Any]:
    """A jobs/create body (or jobs/reset's new_settings) as the job's settings, once checked."""
    settings = {k: v for k, v in body.items() if k not in _NOT_SETTINGS}
    settings["name"] = p.get_str(body, "name", "Untitled")
    clusters = job_cluster_keys(body)
    if body.get("tasks") is not None:
        specs, _, _ = p.task_specs(body["tasks"])
        for i, spec in enumerate(specs.values()):
            key = spec.settings.get("job_cluster_key")
            if key is not None and key not in clusters:
                raise invalid(f"tasks[{i}].job_cluster_key", f"{key!r} is not a job_cluster_key of job_clusters")
    params = p.get_list(body, "parameters") or []
    for i, item in enumerate(params):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise invalid(f"parameters[{i}]", 'expected {"name": ..., "default": ...}')
    p.get_int(body, "timeout_seconds", minimum=0)
    p.get_int(body, "max_concurrent_runs", minimum=0, maximum=p.MAX_CONCURRENT_RUNS)
    p.queue_enabled(body)
    return settings


def job_cluster_keys(body: Mapping[str, Any]) -> set[str]:
    """The keys of a job's ``job_clusters``, each with its ``new_cluster``, none twice."""
    keys: set[str] = set()
    for i, cluster in enumerate(p.get_list(body, "job_clusters") or []):
        key = cluster.get("job_cluster_key") if isinstance(cluster, dict) else None
        if not isinstance(key, str) or not key:
            raise invalid(f"job_clusters[{i}].job_cluster_key", "a non-empty string is required")
        if not isinstance(cluster.get("new_cluster"), dict):
            raise invalid(f"job_clusters[{i}].new_cluster", "an object is required")
        if key in keys:
            raise invalid(f"job_clusters[{i}].job_cluster_key", f"duplicate job cluster key {key!r}")
        keys.add(key)
    return keys
