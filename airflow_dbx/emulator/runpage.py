"""The read-only HTML page behind every ``run_page_url`` the emulator hands out.

Databricks' run page lives at ``/jobs/<job_id>/runs/<run_id>`` of the workspace UI; the
emulator serves a plain page at the same path: the run, each task run's state, error, trace
and notebook output. Every value is HTML-escaped, there are no scripts and no external
assets, and the Content-Security-Policy forbids loading any. It needs no credentials (a
browser opening the link has no token): it shows what runs/get and runs/get-output show.
"""

from __future__ import annotations

import re
from html import escape
from typing import TYPE_CHECKING, Any

from airflow_dbx.emulator.engine import task_output
from airflow_dbx.emulator.errors import ApiError

if TYPE_CHECKING:
    from airflow_dbx.emulator.engine import Engine
    from airflow_dbx.emulator.model import TaskRun

PATH = re.compile(r"^/jobs/(\d+)/runs/(\d+)/?$")
HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"}
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #1b1b1b; }
table { border-collapse: collapse; margin-bottom: 1.5em; }
th, td { text-align: left; padding: 0.3em 0.8em; border-bottom: 1px solid #ddd; vertical-align: top; }
pre { background: #f4f4f4; padding: 0.6em; max-height: 20em; overflow: auto; white-space: pre-wrap; }
.state { font-weight: bold; }
.SUCCESS { color: #17663a; } .FAILED, .TIMEDOUT, .INTERNAL_ERROR { color: #b3261e; }
.CANCELED, .UPSTREAM_FAILED, .UPSTREAM_CANCELED { color: #8a5300; }
"""


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _state(data: dict[str, Any]) -> str:
    state = data.get("state") or {}
    result = state.get("result_state")
    life = state.get("life_cycle_state", "")
    text = f"{life} / {result}" if result else life
    return f'<span class="state {_e(result or life)}">{_e(text)}</span>'


def render(engine: Engine, job_id: int, run_id: int) -> tuple[int, str]:
    """(HTTP status, page) for the run or task run ``run_id`` of job ``job_id``."""
    try:
        run, task = engine.find({"run_id": run_id})
    except ApiError as exc:
        return 404, _page("Run not found", f"<p>{_e(exc.message)}</p>")
    if run.job_id != job_id:
        return 404, _page("Run not found", f"<p>Run {run_id} is not a run of job {job_id}.</p>")
    now = engine.clock()
    data = run.snapshot(now, engine.base_url, tasks=None, history=False)
    tasks = [task] if task is not None else run.tasks(now)
    title = f"Task run {run_id} of run {run.run_id}" if task is not None else f"Run {run.run_id}"
    rows = [
        ("Run name", _e(run.run_name)),
        ("Run id", _e(run.run_id)),
        ("Job id", _e(run.job_id)),
        ("Run type", _e(run.run_type)),
        ("State", _state(data)),
        ("State message", _e(data["state"].get("state_message"))),
    ]
    parts = ["<table>", *(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows), "</table>", "<h2>Tasks</h2>"]
    parts.append("<table><tr><th>Task</th><th>Task run id</th><th>Attempt</th><th>State</th></tr>")
    for item in tasks:
        cells = (_e(item.task_key), _e(item.run_id), _e(item.attempt_number), _state(item.snapshot(now, "")))
        parts.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    parts.append("</table>")
    for item in tasks:
        parts.append(_task(item, now))
    return 200, _page(title, "\n".join(parts))


def _task(task: TaskRun, now: float) -> str:
    data = task.snapshot(now, "")
    out = task_output(task, now)
    rows = [
        ("Task run id", _e(task.run_id)),
        ("Attempt", _e(task.attempt_number)),
        ("State", _state(data)),
        ("State message", _e(data["state"].get("state_message"))),
    ]
    parts = [f"<section><h3>{_e(task.task_key)}</h3><table>"]
    parts += [f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows]
    parts.append("</table>")
    for label, text in (
        ("Error", out.get("error")),
        ("Error trace", out.get("error_trace")),
        ("Notebook output", (out.get("notebook_output") or {}).get("result")),
        ("Logs", out.get("logs")),
    ):
        if text:
            parts.append(f"<h4>{label}</h4><pre>{_e(text)}</pre>")
    parts.append("</section>")
    return "".join(parts)


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)} - Databricks emulator</title><style>{_STYLE}</style></head>"
        f"<body><h1>{_e(title)}</h1>\n{body}\n"
        "<p><small>Databricks Jobs API emulator (airflow-dbx): a read-only view of runs/get and runs/get-output."
        "</small></p></body></html>\n"
    )
