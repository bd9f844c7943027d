"""Secrets audit: credentials must never show where users or other systems can read them.

Every scenario runs the hook, the operators and the trigger with recognisable credentials (a
personal access token, basic credentials, an OAuth M2M secret, an Azure AD secret) and the
tokens the emulator issues for them, then searches everything the run left readable: log
records at DEBUG and everything written to stdout/stderr, exception text as shown (with
chained causes), XCom values, rendered template fields, the trigger's serialised form, the
emulator's request log, the hook's repr and the Test button's message.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import traceback
from typing import TYPE_CHECKING, Any

import pytest

from airflow_dbx import errors
from airflow_dbx.emulator import Emulator
from airflow_dbx.emulator import auth as emulator_auth
from airflow_dbx.hook import DatabricksHook
from airflow_dbx.operators import DatabricksRunNowOperator, DatabricksSubmitRunOperator
from airflow_dbx.trigger import DatabricksRunTrigger
from tests.integration.conftest import TaskDeferred, TryContext

if TYPE_CHECKING:
    from collections.abc import Iterator

PAT = "dapi-CANARYPAT-7c1e9a4b2f6d8e0a"
BASIC_USER, BASIC_PASSWORD = "canary-user@example.com", "CANARYBASIC-pw-93b1f0"
OAUTH_ID, OAUTH_SECRET = "canary-sp", "CANARYOAUTH-secret-5d2c7e"
AZURE_TENANT, AZURE_ID, AZURE_SECRET = "canary-tenant", "canary-az-app", "CANARYAZURE-secret-81fa3c"
PROXY_PASSWORD = "CANARYPROXY-pw-44e0"
CLUSTER = "emulator-cluster"
FAST = {"polling_period_seconds": 0.05, "databricks_retry_delay": 0.01, "databricks_retry_limit": 2}
AUTH_MODES = ("pat", "basic", "oauth", "azure")


class Audit:
    """Collects every readable text of a scenario and the secrets that must not be in any."""

    def __init__(self, emu: Emulator, issued: list[str]) -> None:
        self.emu = emu
        self.issued = issued
        self.places: list[tuple[str, str]] = []

    @property
    def secrets(self) -> dict[str, str]:
        basic = base64.b64encode(f"{BASIC_USER}:{BASIC_PASSWORD}".encode()).decode()
        out = {"PAT": PAT, "basic password": BASIC_PASSWORD, "basic header": basic, "OAuth secret": OAUTH_SECRET,
               "Azure secret": AZURE_SECRET, "proxy password": PROXY_PASSWORD}
        out.update({f"issued token {i}": token for i, token in enumerate(self.issued)})
        return out

    def add(self, where: str, value: Any) -> None:
        self.places.append((where, value if isinstance(value, str) else json.dumps(value, default=repr)))

    def exception(self, where: str, exc: BaseException) -> None:
        self.add(f"{where}: str", str(exc))
        self.add(f"{where}: repr", repr(exc))
        self.add(f"{where}: traceback", "".join(traceback.format_exception(exc)))

    def leaks(self) -> list[str]:
        found = []
        for where, text in self.places:
            for name, secret in self.secrets.items():
                if secret and secret in text:
                    at = text.index(secret)
                    found.append(f"{name} in {where}: ...{text[max(at - 80, 0):at + len(secret) + 20]!r}...")
        return found


@pytest.fixture
def audit(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str],
          monkeypatch: pytest.MonkeyPatch) -> Iterator[Audit]:
    issued: list[str] = []
    original = emulator_auth.Credentials._issue

    def record(self: Any, principal: str, ttl: float) -> str:
        token = original(self, principal, ttl)
        issued.append(token)
        return token

    monkeypatch.setattr(emulator_auth.Credentials, "_issue", record)
    caplog.set_level(logging.DEBUG)
    for name in ("airflow_dbx", "airflow", "aiohttp", "urllib3", "requests"):
        caplog.set_level(logging.DEBUG, logger=name)
    with Emulator(time_scale=0.05, token=PAT) as emu:
        emu.add_basic_user(BASIC_USER, BASIC_PASSWORD)
        emu.add_oauth_client(OAUTH_ID, OAUTH_SECRET)
        emu.add_azure_client(AZURE_TENANT, AZURE_ID, AZURE_SECRET)
        checker = Audit(emu, issued)
        yield checker
        checker.add("emulator request log", [list(r) for r in emu.requests])
    out, err = capfd.readouterr()
    checker.add("stdout", out)
    checker.add("stderr", err)
    # In teardown, caplog.records holds only the teardown's records: read every phase's.
    records = [*caplog.get_records("setup"), *caplog.get_records("call"), *caplog.records]
    assert records, "no log record captured: the audit would see nothing"
    checker.add("log records", "\n".join(
        f"{r.name} {r.levelname} {r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in records))
    leaks = checker.leaks()
    assert not leaks, "secrets leaked:\n" + "\n".join(leaks)


def connect(monkeypatch: pytest.MonkeyPatch, emu: Emulator, mode: str, conn_id: str = "databricks_default",
            **extra: Any) -> str:
    fields: dict[str, Any] = {"conn_type": "dbx", "host": emu.url}
    if mode == "pat":
        fields["password"] = PAT
    elif mode == "basic":
        fields.update(login=BASIC_USER, password=BASIC_PASSWORD)
    elif mode == "oauth":
        fields.update(login=OAUTH_ID, password=OAUTH_SECRET)
        extra["service_principal_oauth"] = True
    else:
        fields.update(login=AZURE_ID, password=AZURE_SECRET)
        extra.update(azure_tenant_id=AZURE_TENANT, azure_ad_endpoint=emu.url)
    fields["extra"] = extra
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))
    return conn_id


def notebook(**params: Any) -> dict[str, Any]:
    return {"notebook_path": "/Shared/audit", "base_parameters": {"emulator_duration": 1, **params}}


def submit(**kwargs: Any) -> DatabricksSubmitRunOperator:
    kwargs.setdefault("task_id", "audit")
    kwargs.setdefault("existing_cluster_id", CLUSTER)
    return DatabricksSubmitRunOperator(**FAST, **kwargs)


def rendered(audit: Audit, op: Any, ctx: TryContext) -> None:
    op.render_template_fields({**ctx, "ds": "2026-01-01", "params": {}})
    audit.add("rendered template fields", {name: getattr(op, name) for name in op.template_fields})


@pytest.mark.parametrize("mode", AUTH_MODES)
def test_sync_runs_success_and_failure(audit: Audit, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    connect(monkeypatch, audit.emu, mode)
    ctx = TryContext()
    op = submit(notebook_task=notebook(emulator_output="42 rows"), run_name="audit {{ ds }}")
    rendered(audit, op, ctx)
    op.execute(ctx)
    failing = submit(task_id="audit_failing", notebook_task=notebook(
        emulator_result="FAILED", emulator_error="ValueError: bad rows", emulator_error_trace="Traceback\n  x"))
    failing_ctx = TryContext(task_id="audit_failing")
    with pytest.raises(errors.DatabricksRunFailed) as caught:
        failing.execute(failing_ctx)
    audit.add("XCom of the failed task", failing_ctx.xcom)
    audit.exception("run failure", caught.value)
    audit.add("XCom", ctx.xcom)
    hook = DatabricksHook()
    audit.add("hook repr", [repr(hook), repr(hook._api.settings()), repr(hook._api.settings().auth)])
    audit.add("test_connection", hook.test_connection())


@pytest.mark.parametrize("mode", AUTH_MODES)
def test_deferred_run_serialised_trigger_and_kill(audit: Audit, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    connect(monkeypatch, audit.emu, mode)
    ctx = TryContext()
    job = audit.emu.create_job({"name": "audit", "tasks": [
        {"task_key": "only", "existing_cluster_id": CLUSTER, "notebook_task": {"notebook_path": "/nb"}}]})
    op = DatabricksRunNowOperator(task_id="audit_deferred", job_id=job, deferrable=True,
                                  notebook_params={"emulator_duration": 1, "emulator_output": "ok"}, **FAST)
    rendered(audit, op, ctx)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(ctx)
    trigger = deferred.value.trigger
    audit.add("trigger serialisation", trigger.serialize())
    audit.add("trigger repr", repr(trigger))
    rebuilt = DatabricksRunTrigger(**trigger.serialize()[1])

    async def first_event(t: DatabricksRunTrigger) -> dict[str, Any]:
        async for event in t.run():
            return event.payload
        raise AssertionError("no event")

    event = asyncio.run(first_event(rebuilt))
    audit.add("trigger event", event)
    op.execute_complete(ctx, event)
    audit.add("XCom", ctx.xcom)

    # A user kills a long run while it is deferred (Airflow 3.3 path: on_kill).
    long_run = DatabricksHook().run_now({"job_id": job, "notebook_params": {"emulator_duration": "600"}})
    killed = DatabricksRunTrigger(run_id=long_run, polling_period_seconds=0.05)

    async def kill() -> None:
        waiting = asyncio.ensure_future(first_event(killed))
        await asyncio.sleep(0.2)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await killed.on_kill()

    asyncio.run(kill())


@pytest.mark.parametrize("mode", AUTH_MODES)
def test_oauth_expiry_and_api_errors(audit: Audit, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    connect(monkeypatch, audit.emu, mode)
    hook = DatabricksHook(retry_limit=2, retry_delay=0.01)
    run_id = hook.submit_run({"run_name": "audit", "tasks": [
        {"task_key": "only", "existing_cluster_id": CLUSTER, "notebook_task": notebook()}]})
    audit.emu.expire_oauth_tokens()  # a token refresh mid-run, on both transports
    hook.get_run(run_id)
    audit.emu.expire_oauth_tokens()
    asyncio.run(hook.a_get_run(run_id))
    for status in (401, 403, 500):
        audit.emu.fail_next("GET", "jobs/runs/get", count=3, status=status)
        with pytest.raises(errors.DatabricksApiError) as caught:
            hook.get_run(run_id)
        audit.exception(f"HTTP {status}", caught.value)
        audit.emu.clear_faults()
    # A proxy or server that echoes the request's Authorization header in its error page.
    sent = {"pat": PAT, "basic": base64.b64encode(f"{BASIC_USER}:{BASIC_PASSWORD}".encode()).decode()}.get(
        mode, audit.issued[-1] if audit.issued else "")
    own = {"pat": PAT, "basic": BASIC_PASSWORD, "oauth": OAUTH_SECRET, "azure": AZURE_SECRET}[mode]
    for transport in ("sync", "async"):
        audit.emu.fail_next("GET", "jobs/runs/get", status=400, body=(
            f"<html><body>400 Bad Request<br>Authorization: Bearer {sent}<br>password={own}</body></html>"
        ).encode())
        with pytest.raises(errors.DatabricksApiError) as caught:
            if transport == "sync":
                hook.get_run(run_id)
            else:
                asyncio.run(hook.a_get_run(run_id))
        audit.exception(f"echoed header ({transport})", caught.value)
    audit.emu.drop_next("GET", "jobs/runs/get", count=5)
    with pytest.raises(errors.DatabricksApiError) as caught:
        asyncio.run(DatabricksHook(retry_limit=2, retry_delay=0.01).a_get_run(run_id))
    audit.exception("dropped connection", caught.value)


@pytest.mark.parametrize("mode", AUTH_MODES)
def test_wrong_credentials_are_not_echoed(audit: Audit, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    """A wrong secret must not show either: it is usually one character off the right one."""
    fields: dict[str, Any] = {"conn_type": "dbx", "host": audit.emu.url}
    wrong = {"pat": {"password": PAT + "x"}, "basic": {"login": BASIC_USER, "password": BASIC_PASSWORD + "x"},
             "oauth": {"login": OAUTH_ID, "password": OAUTH_SECRET + "x", "extra": {"service_principal_oauth": True}},
             "azure": {"login": AZURE_ID, "password": AZURE_SECRET + "x",
                       "extra": {"azure_tenant_id": AZURE_TENANT, "azure_ad_endpoint": audit.emu.url}}}[mode]
    monkeypatch.setenv("AIRFLOW_CONN_WRONG", json.dumps({**fields, **wrong}))
    for call in (lambda h: h.get_run(1), lambda h: asyncio.run(h.a_get_run(1))):
        with pytest.raises(errors.DatabricksApiError) as caught:
            call(DatabricksHook("wrong", retry_limit=2, retry_delay=0.01))
        audit.exception("wrong credentials", caught.value)
    audit.add("test_connection", DatabricksHook("wrong", retry_limit=1).test_connection())


@pytest.mark.parametrize("mode", ["pat", "oauth"])
def test_proxy_credentials_and_unreachable_hosts(audit: Audit, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    proxies = {"http": f"http://proxy-user:{PROXY_PASSWORD}@127.0.0.1:9", "https": f"http://u:{PROXY_PASSWORD}@127.0.0.1:9"}
    connect(monkeypatch, audit.emu, mode, conn_id="proxied", proxies=proxies)
    for call in (lambda h: h.get_run(1), lambda h: asyncio.run(h.a_get_run(1))):
        with pytest.raises(errors.DatabricksApiError) as caught:
            call(DatabricksHook("proxied", retry_limit=2, retry_delay=0.01))
        audit.exception("proxy failure", caught.value)
    audit.add("test_connection", DatabricksHook("proxied", retry_limit=1).test_connection())
    monkeypatch.setenv("AIRFLOW_CONN_CLOSED", json.dumps({"conn_type": "dbx", "host": "http://127.0.0.1:9", "password": PAT}))
    with pytest.raises(errors.DatabricksApiError) as caught:
        submit(databricks_conn_id="closed", notebook_task=notebook()).execute(TryContext())
    audit.exception("unreachable host", caught.value)
