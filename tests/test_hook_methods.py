"""DatabricksHook's endpoint methods against the emulator, the shared aiohttp pool, and secrets."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
import time

import pytest

from airflow_dbx import errors, models
from airflow_dbx._http import pool
from airflow_dbx.auth import TOKEN_CACHE
from airflow_dbx.hook import DatabricksHook


def notebook_run(name: str = "methods-test", tasks: int = 1, **params: str) -> dict:
    return {
        "run_name": name,
        "tasks": [
            {
                "task_key": f"t{i}",
                "notebook_task": {"notebook_path": "/x", "base_parameters": dict(params)},
                "existing_cluster_id": "emulator-1",
            }
            for i in range(tasks)
        ],
    }


def wait_until_terminal(hook: DatabricksHook, run_id: int) -> models.RunState:
    for _ in range(200):
        state = hook.get_run_state(run_id)
        if state.is_terminal:
            return state
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} did not end")


def test_submit_get_and_output(emulator_conn, call) -> None:
    hook = DatabricksHook()
    run_id = hook.submit_run(notebook_run(emulator_duration="1", emulator_output="42"))
    assert isinstance(run_id, int)
    state = wait_until_terminal(hook, run_id)
    assert state.is_successful()
    run = call(hook, "get_run", run_id)
    assert isinstance(run, models.Run)
    assert (run.run_id, run.state.result_state, run.run_name) == (run_id, "SUCCESS", "methods-test")
    assert call(hook, "get_run_state", run_id) == state
    output = call(hook, "get_run_output", run.tasks[0].run_id)
    assert output["notebook_output"]["result"] == "42"
    assert hook.get_run_page_url(run_id) == run.run_page_url != ""


def test_run_with_250_tasks_is_read_whole(emulator_conn, call) -> None:
    hook = DatabricksHook()
    run_id = hook.submit_run(notebook_run(tasks=250))
    run = call(hook, "get_run", run_id)
    assert len(run.tasks) == 250
    assert len({t.task_key for t in run.tasks}) == 250
    pages = [r for r in emulator_conn.requests if r.path == "/api/2.2/jobs/runs/get"]
    assert len(pages) == 3


def test_cancel_run(emulator_conn, call) -> None:
    hook = DatabricksHook()
    run_id = hook.submit_run(notebook_run(emulator_duration="100"))
    assert call(hook, "cancel_run", run_id) is None
    state = wait_until_terminal(hook, run_id)
    assert state.result_state == "CANCELED"


def test_run_now_cancel_all_and_list_runs(emulator_conn) -> None:
    hook = DatabricksHook()
    # Three concurrent runs of one job: Databricks allows one unless max_concurrent_runs says more.
    job_id = emulator_conn.create_job({"name": "nightly", "max_concurrent_runs": 3, "tasks": notebook_run(emulator_duration="100")["tasks"]})
    run_ids = [hook.run_now({"job_id": job_id}) for _ in range(3)]
    other = hook.submit_run(notebook_run(emulator_duration="100"))
    listed = hook.list_runs(job_id=job_id, active_only=True)
    assert sorted(r["run_id"] for r in listed) == sorted(run_ids)
    assert len(hook.list_runs(limit=2)) == 2
    hook.cancel_all_runs(job_id)
    for run_id in run_ids:
        assert wait_until_terminal(hook, run_id).result_state == "CANCELED"
    assert not hook.get_run_state(other).is_terminal


def test_list_runs_follows_pages(emulator_conn) -> None:
    hook = DatabricksHook()
    for _ in range(30):
        hook.submit_run(notebook_run())
    assert len(hook.list_runs()) == 30
    assert len([r for r in emulator_conn.requests if r.path == "/api/2.2/jobs/runs/list"]) == 2


def test_repair_run(emulator_conn) -> None:
    hook = DatabricksHook()
    job_id = emulator_conn.create_job({"name": "repairable", "tasks": notebook_run(emulator_fail_attempts="1", emulator_duration="1")["tasks"]})
    failed = hook.run_now({"job_id": job_id})
    assert wait_until_terminal(hook, failed).result_state == "FAILED"
    repair_id = hook.repair_run({"run_id": failed, "rerun_all_failed_tasks": True})
    assert isinstance(repair_id, int)
    assert wait_until_terminal(hook, failed).is_successful()
    assert hook.get_run(failed, include_history=True).repair_ids == (repair_id,)


def test_find_job_id_by_name(emulator_conn) -> None:
    hook = DatabricksHook()
    wanted = emulator_conn.create_job({"name": "etl", "tasks": notebook_run()["tasks"]})
    for i in range(3):
        emulator_conn.create_job({"name": f"other-{i}", "tasks": notebook_run()["tasks"]})
    assert hook.find_job_id_by_name("etl") == wanted
    with pytest.raises(errors.PayloadError, match="no Databricks job is named 'missing'") as info:
        hook.find_job_id_by_name("missing")
    assert info.value.field == "job_name"
    twin = emulator_conn.create_job({"name": "etl", "tasks": notebook_run()["tasks"]})
    with pytest.raises(errors.PayloadError, match=rf"2 Databricks jobs are named 'etl' \(ids \[{wanted}, {twin}\]\)"):
        hook.find_job_id_by_name("etl")


# ---------------------------------------------------------------------- the shared aiohttp pool


def sessions_in(loop: asyncio.AbstractEventLoop) -> int:
    """How many aiohttp sessions the shared pool holds open for ``loop``."""
    entry = pool.SESSIONS._loops.get(loop)
    return len(entry.sessions) if entry else 0


async def test_hooks_in_one_loop_share_one_session_and_a_bounded_pool(emulator_conn, monkeypatch) -> None:
    run_ids = [DatabricksHook().submit_run(notebook_run(emulator_duration="100")) for _ in range(10)]
    loop = asyncio.get_running_loop()
    opened = 0
    create_connection = loop.create_connection

    async def counting(*args, **kwargs):
        nonlocal opened
        opened += 1
        return await create_connection(*args, **kwargs)

    monkeypatch.setattr(loop, "create_connection", counting)
    hooks = [DatabricksHook() for _ in range(25)]
    emulator_conn.delay_next("GET", "jobs/runs/get", count=200, seconds=0.02)  # keep many in flight at once
    states = await asyncio.gather(*(hooks[i % 25].a_get_run_state(run_ids[i % 10]) for i in range(1000)))
    assert len(states) == 1000
    assert 1 <= opened <= pool.MAX_CONNECTIONS_PER_HOST
    assert sessions_in(loop) == 1


def test_sessions_close_with_their_loop_without_warnings(emulator_conn) -> None:
    """asyncio.run (as the triggerer and pytest-asyncio run loops) closes the sessions with
    the loop; a loop left open has its sessions closed at exit. A loop closed by hand without
    ``shutdown_asyncgens`` leaves asyncio's own transport warnings, but no aiohttp session or
    connector is reported unclosed."""
    run_id = DatabricksHook().submit_run(notebook_run())
    script = textwrap.dedent(
        f"""
        import asyncio, gc, os
        os.environ["AIRFLOW_CONN_DATABRICKS_DEFAULT"] = {emulator_conn.conn_uri()!r}
        from airflow_dbx.hook import DatabricksHook

        async def poll():
            return await DatabricksHook().a_get_run_state({run_id})

        asyncio.run(poll())
        closed_by_hand = asyncio.new_event_loop()
        closed_by_hand.run_until_complete(poll())
        closed_by_hand.close()
        never_closed = asyncio.new_event_loop()
        never_closed.run_until_complete(poll())
        gc.collect()
        print("polled")
        """
    )
    flags = ["-X", "dev", "-W", "error::ResourceWarning", "-W", "error::RuntimeWarning"]
    done = subprocess.run([sys.executable, *flags, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "polled" in done.stdout
    for bad in ("Unclosed client session", "Unclosed connector", "never awaited", "aiohttp"):
        assert bad not in done.stderr


# ---------------------------------------------------------------------- secrets


def test_no_secret_in_logs_errors_or_reprs(emulator, set_connection, caplog) -> None:
    secret = "oauth-client-secret-7d1e"
    emulator.add_oauth_client("client-1", secret, ttl_seconds=3600)
    set_connection("dbx_oauth", host=emulator.url, login="client-1", password=secret, extra={"service_principal_oauth": True})
    set_connection(host=emulator.url, password=emulator.token)
    set_connection("dbx_bad", host=emulator.url, password="dapi-wrong-token-4242")
    seen_errors: list[str] = []
    caplog.set_level(logging.DEBUG)

    async def async_suite(hook: DatabricksHook, run_id: int) -> None:
        await hook.a_get_run(run_id)
        await hook.a_get_run_state(run_id)
        await hook.a_get_run_output(run_id)
        emulator.fail_next("GET", "jobs/runs/get", status=503)
        await hook.a_get_run_state(run_id)
        await hook.a_cancel_run(run_id)

    for conn_id in ("databricks_default", "dbx_oauth"):
        hook = DatabricksHook(conn_id, retry_delay=0.01)
        run_id = hook.submit_run(notebook_run())
        hook.get_run(run_id)
        hook.get_run_output(run_id)
        emulator.fail_next("GET", "jobs/runs/get", status=503)
        hook.get_run_state(run_id)
        emulator.expire_oauth_tokens()
        hook.list_runs()
        asyncio.run(async_suite(hook, run_id))
        hook.cancel_run(run_id)
        assert hook.test_connection()[0]
        seen_errors += [repr(hook), repr(hook._api.settings()), repr(hook._api.settings().auth)]
        for bad in (lambda h=hook: h.get_run_state(10**9), lambda h=hook: asyncio.run(h.a_get_run_state(10**9))):
            with pytest.raises(errors.DatabricksApiError) as info:
                bad()
            seen_errors += [str(info.value), repr(info.value)]
    bad_hook = DatabricksHook("dbx_bad", retry_delay=0.01)
    seen_errors.append(bad_hook.test_connection()[1])
    set_connection("dbx_oauth_wrong", host=emulator.url, login="client-1", password="wrong-secret-99", extra={"service_principal_oauth": True})
    seen_errors.append(DatabricksHook("dbx_oauth_wrong").test_connection()[1])

    issued = [t.value for t in TOKEN_CACHE._tokens.values()]
    assert issued  # the OAuth run did fetch tokens
    secrets = [emulator.token, secret, "dapi-wrong-token-4242", "wrong-secret-99", *issued]
    text = caplog.text + "\n".join(seen_errors)
    assert "jobs/runs/get" in caplog.text  # DEBUG lines were captured at all
    assert not any(r.levelno == logging.INFO and r.name.startswith("airflow_dbx") for r in caplog.records)
    for value in secrets:
        assert value not in text


async def test_close_sessions_then_poll_again(emulator_conn) -> None:
    from airflow_dbx.hook import close_sessions

    run_id = DatabricksHook().submit_run(notebook_run())
    await DatabricksHook().a_get_run_state(run_id)
    await close_sessions()
    assert sessions_in(asyncio.get_running_loop()) == 0
    await DatabricksHook().a_get_run_state(run_id)
    assert sessions_in(asyncio.get_running_loop()) == 1
