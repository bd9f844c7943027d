"""Every auth mode end to end against the emulator (its token endpoints included), and the
token cache under concurrent threads and asyncio tasks."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import types

import pytest

from airflow_dbx import auth
from airflow_dbx.auth import InvalidConnectionError, choose_auth_type
from airflow_dbx.errors import DatabricksApiError
from airflow_dbx.hook import DatabricksHook, parse_host

OIDC = "/oidc/v1/token"
CLIENT_ID, CLIENT_SECRET = "sp-client-1", "sp-secret-abc123"
TENANT = "contoso-tenant-id"


def token_requests(emulator, path: str = OIDC) -> int:
    return sum(1 for r in emulator.requests if r.path == path)


def new_run(hook: DatabricksHook) -> int:
    return hook.submit_run({"run_name": "auth", "notebook_task": {"notebook_path": "/x"}, "existing_cluster_id": "emulator-1"})


# ---------------------------------------------------------------------- mode selection


@pytest.mark.parametrize(
    ("login", "password", "extras", "expected"),
    [
        ("", "dapi-1", {}, "token"),
        ("user", "pw", {"token": "dapi-1"}, "token"),
        ("user", "pw", {}, "basic"),
        ("id", "secret", {"service_principal_oauth": True}, "oauth-m2m"),
        ("id", "secret", {"service_principal_oauth": "true"}, "oauth-m2m"),
        ("id", "secret", {"service_principal_oauth": "false"}, "basic"),
        ("id", "secret", {"azure_tenant_id": "t"}, "azure-service-principal"),
        ("id", "secret", {"auth_type": "oauth-m2m"}, "oauth-m2m"),
        ("", "", {"auth_type": "databricks-sdk"}, "databricks-sdk"),
    ],
)
def test_auth_mode_is_chosen_from_the_connection(login, password, extras, expected) -> None:
    assert choose_auth_type(login, password, extras) == expected


@pytest.mark.parametrize(
    ("login", "password", "extras", "message"),
    [
        ("", "", {}, "the connection has no credentials"),
        ("u", "p", {"auth_type": "pat"}, "unknown auth_type 'pat'; valid values: token, basic, oauth-m2m, azure-service-principal, databricks-sdk"),
    ],
)
def test_auth_mode_errors(login, password, extras, message) -> None:
    with pytest.raises(InvalidConnectionError) as info:
        choose_auth_type(login, password, extras)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"login": "id", "extra": {"service_principal_oauth": True}}, "auth_type 'oauth-m2m' needs a client id and secret"),
        ({"login": "u", "extra": {"auth_type": "basic"}}, "auth_type 'basic' needs a username and password"),
        ({"login": "id", "password": "s", "extra": {"auth_type": "azure-service-principal"}}, "needs the extra 'azure_tenant_id'"),
        (
            {"login": "id", "password": "s", "extra": {"azure_tenant_id": "t", "azure_ad_endpoint": "http://login.example.com"}},
            "plain http:// is refused for login.example.com",
        ),
    ],
)
def test_incomplete_credentials_are_refused(set_connection, fields, message) -> None:
    set_connection(host="https://example.com", **fields)
    ok, text = DatabricksHook().test_connection()
    assert not ok
    assert message in text


# ---------------------------------------------------------------------- static credentials


def test_token_in_password(emulator, set_connection, call) -> None:
    set_connection(host=emulator.url, password=emulator.token)
    hook = DatabricksHook()
    assert call(hook, "get_run_state", new_run(hook)).life_cycle_state


def test_token_in_extra_wins_over_login_and_password(emulator, set_connection, call) -> None:
    set_connection(host=emulator.url, login="someone", password="not-a-token", extra={"token": emulator.token})
    hook = DatabricksHook()
    assert call(hook, "get_run_state", new_run(hook)).life_cycle_state


def test_basic_auth(emulator, set_connection, call) -> None:
    emulator.add_basic_user("alice@example.com", "alice-pw-123")
    set_connection(host=emulator.url, login="alice@example.com", password="alice-pw-123")
    hook = DatabricksHook()
    assert call(hook, "get_run_state", new_run(hook)).life_cycle_state


def test_wrong_basic_password_is_one_401(emulator, set_connection, call) -> None:
    emulator.add_basic_user("alice@example.com", "alice-pw-123")
    set_connection(host=emulator.url, login="alice@example.com", password="wrong-pw-456")
    with pytest.raises(DatabricksApiError) as info:
        call(DatabricksHook(retry_limit=5), "get_run_state", 1)
    assert info.value.status_code == 401
    assert len(emulator.requests) == 1
    assert "wrong-pw-456" not in str(info.value)


# ---------------------------------------------------------------------- OAuth M2M


@pytest.fixture
def oauth(emulator, set_connection):
    emulator.add_oauth_client(CLIENT_ID, CLIENT_SECRET, ttl_seconds=3600)
    set_connection(host=emulator.url, login=CLIENT_ID, password=CLIENT_SECRET, extra={"service_principal_oauth": True})
    return emulator


def test_oauth_token_is_fetched_once_and_shared_by_hooks(oauth, call) -> None:
    run_id = new_run(DatabricksHook())
    for _ in range(3):
        call(DatabricksHook(), "get_run_state", run_id)
    assert token_requests(oauth) == 1


def test_oauth_token_expired_mid_run_is_refreshed_once(oauth, call) -> None:
    hook = DatabricksHook(retry_limit=1)  # the refresh is not a retry: it works even with one attempt
    run_id = new_run(hook)
    oauth.expire_oauth_tokens()
    assert call(hook, "get_run_state", run_id).life_cycle_state
    statuses = [r.status for r in oauth.requests if r.path == "/api/2.2/jobs/runs/get"]
    assert statuses == [401, 200]
    assert token_requests(oauth) == 2


def test_oauth_token_is_refreshed_shortly_before_expiry(emulator, set_connection) -> None:
    emulator.add_oauth_client(CLIENT_ID, CLIENT_SECRET, ttl_seconds=2)
    set_connection(host=emulator.url, login=CLIENT_ID, password=CLIENT_SECRET, extra={"auth_type": "oauth-m2m"})
    hook = DatabricksHook()
    run_id = new_run(hook)
    time.sleep(1.6)  # a 2 s token is renewed after 1.5 s, before the server would refuse it
    hook.get_run_state(run_id)
    assert token_requests(emulator) == 2
    assert all(r.status != 401 for r in emulator.requests)


def test_oauth_wrong_secret_is_a_clear_error_without_the_secret(emulator, set_connection, call) -> None:
    emulator.add_oauth_client(CLIENT_ID, CLIENT_SECRET)
    set_connection(host=emulator.url, login=CLIENT_ID, password="guessed-secret-000", extra={"service_principal_oauth": True})
    with pytest.raises(DatabricksApiError) as info:
        call(DatabricksHook(retry_limit=4), "get_run_state", 1)
    assert (info.value.status_code, info.value.error_code) == (401, "invalid_client")
    assert f"POST {emulator.url}{OIDC} failed" in str(info.value)
    assert "guessed-secret-000" not in str(info.value)
    assert token_requests(emulator) == 1


def test_token_endpoint_outage_is_retried(oauth, call) -> None:
    oauth.fail_next("POST", "oidc/v1/token", count=2, status=503)
    hook = DatabricksHook(retry_delay=0.01)
    assert call(hook, "get_run_state", new_run(hook)).life_cycle_state


def test_one_refresh_for_many_threads_and_tasks_at_once(oauth) -> None:
    """After the server drops every token, 16 threads and 48 asyncio tasks (in two loops)
    all hit 401 together; they must share a single new token."""
    run_id = new_run(DatabricksHook())
    assert token_requests(oauth) == 1
    oauth.expire_oauth_tokens()
    oauth.delay_next("POST", "oidc/v1/token", seconds=0.3)  # a slow endpoint widens the race
    start = threading.Barrier(18)
    errors: list[BaseException] = []

    def in_thread() -> None:
        start.wait()
        try:
            DatabricksHook().get_run_state(run_id)
        except BaseException as exc:
            errors.append(exc)

    def in_loop() -> None:
        async def many() -> None:
            await asyncio.gather(*(DatabricksHook().a_get_run_state(run_id) for _ in range(24)))

        start.wait()
        try:
            asyncio.run(many())
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=in_thread) for _ in range(16)] + [threading.Thread(target=in_loop) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert not errors
    assert token_requests(oauth) == 2


def test_async_reads_the_cache_without_a_thread(oauth, monkeypatch) -> None:
    hook = DatabricksHook()
    run_id = new_run(hook)  # the token is now cached, and the connection read

    async def no_thread(fn):
        raise AssertionError("a cached token must not need a thread")

    monkeypatch.setattr(auth, "run_blocking", no_thread)
    assert asyncio.run(hook.a_get_run_state(run_id)).life_cycle_state


# ---------------------------------------------------------------------- Azure AD


@pytest.fixture
def azure(emulator, set_connection):
    emulator.add_azure_client(TENANT, CLIENT_ID, CLIENT_SECRET)
    set_connection(
        host=emulator.url,
        login=CLIENT_ID,
        password=CLIENT_SECRET,
        extra={"azure_tenant_id": TENANT, "azure_ad_endpoint": emulator.url},
    )
    return emulator


def test_azure_service_principal(azure, call) -> None:
    hook = DatabricksHook()
    run_id = new_run(hook)
    assert call(hook, "get_run_state", run_id).life_cycle_state
    assert token_requests(azure, f"/{TENANT}/oauth2/v2.0/token") == 1


def test_azure_token_expired_mid_run_is_refreshed(azure, call) -> None:
    hook = DatabricksHook()
    run_id = new_run(hook)
    azure.expire_oauth_tokens()
    assert call(hook, "get_run_state", run_id).life_cycle_state
    assert token_requests(azure, f"/{TENANT}/oauth2/v2.0/token") == 2


def test_azure_workspace_resource_id_adds_management_headers(azure, set_connection) -> None:
    resource = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Databricks/workspaces/w"
    set_connection(
        host=azure.url,
        login=CLIENT_ID,
        password=CLIENT_SECRET,
        extra={"azure_tenant_id": TENANT, "azure_ad_endpoint": azure.url, "azure_resource_id": resource},
    )
    hook = DatabricksHook()
    new_run(hook)
    headers = hook._api.settings().auth.headers()
    assert headers["X-Databricks-Azure-Workspace-Resource-Id"] == resource
    assert headers["Authorization"].startswith("Bearer emu-")
    management = headers["X-Databricks-Azure-SP-Management-Token"]
    assert management.startswith("emu-")
    assert management != headers["Authorization"].removeprefix("Bearer ")
    assert token_requests(azure, f"/{TENANT}/oauth2/v2.0/token") == 2  # one per audience


def test_azure_audiences_and_sovereign_authority() -> None:
    fetched: list[tuple[str, dict]] = []

    def fetch(url, form, basic_auth):
        fetched.append((url, dict(form)))
        return {"access_token": f"tok-{len(fetched)}", "expires_in": "3599"}

    built = auth.build_auth(
        host_url="https://adb-1.2.azuredatabricks.us",
        login="id",
        password="secret",
        extras={"azure_tenant_id": "t", "azure_ad_endpoint": "https://login.microsoftonline.us/", "azure_resource_id": "/r"},
        fetch=fetch,
        check_url=parse_host,
    )
    built.headers()
    assert [url for url, _ in fetched] == ["https://login.microsoftonline.us/t/oauth2/v2.0/token"] * 2
    assert [form["scope"] for _, form in fetched] == [
        "2ff814a6-3304-4ab8-85cb-cd0e6f879c1d/.default",
        "https://management.core.usgovcloudapi.net//.default",
    ]


# ---------------------------------------------------------------------- databricks-sdk


def test_sdk_mode_without_the_package_names_the_extra(set_connection, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "databricks.sdk.core", None)  # makes the import fail
    set_connection(host="https://example.com", extra={"auth_type": "databricks-sdk"})
    ok, message = DatabricksHook().test_connection()
    assert not ok
    assert "pip install 'airflow-dbx[sdk]'" in message


def test_sdk_mode_delegates_to_the_sdk(emulator, set_connection, monkeypatch, call) -> None:
    made: list[dict] = []

    class Config:  # the part of databricks.sdk.core.Config the hook uses
        def __init__(self, host=None, profile=None):
            made.append({"host": host, "profile": profile})
            self.host = host or emulator.url

        def authenticate(self):
            return {"Authorization": f"Bearer {emulator.token}"}

    fake = types.ModuleType("databricks.sdk.core")
    fake.Config = Config  # type: ignore[attr-defined]
    for name in ("databricks", "databricks.sdk"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "databricks.sdk.core", fake)
    set_connection(extra={"auth_type": "databricks-sdk", "profile": "emulator"})  # the host comes from the profile
    hook = DatabricksHook()
    assert hook.host_url == emulator.url
    assert call(hook, "get_run_state", new_run(hook)).life_cycle_state
    assert made == [{"host": None, "profile": "emulator"}]


# ---------------------------------------------------------------------- the cache itself


def test_invalidate_only_drops_the_token_that_failed() -> None:
    cache = auth.TokenCache()
    request = auth.TokenRequest(url="https://h/oidc/v1/token", form={}, key=("k",))
    answers = iter([{"access_token": "first", "expires_in": 3600}, {"access_token": "second", "expires_in": 3600}])
    fetch = lambda url, form, basic: next(answers)  # noqa: E731
    assert cache.get(request, fetch) == "first"
    assert cache.invalidate(request, "first")
    assert cache.get(request, fetch) == "second"
    assert not cache.invalidate(request, "first")  # a late 401 for the old token keeps the new one
    assert cache.peek(request) == "second"


def test_reprs_hold_no_secret() -> None:
    assert "dapi-xyz-987" not in repr(auth.StaticAuth.token("dapi-xyz-987"))
    built = auth.build_auth(
        host_url="https://h", login="id", password="s3cret-value", extras={"service_principal_oauth": True},
        fetch=lambda *a: {}, check_url=str,
    )
    assert "s3cret-value" not in repr(built)
    assert "s3cret-value" in built.secrets()
