"""Authentication (PAT, basic, OAuth, Azure AD stand-in) and error answers."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import requests

from tests.emulator.conftest import Api, notebook

if TYPE_CHECKING:
    from airflow_dbx.emulator import Emulator


def test_pat_and_missing_or_wrong_credentials(emu: Emulator) -> None:
    url = f"{emu.url}/api/2.2/jobs/runs/list"
    assert requests.get(url, headers={"Authorization": f"Bearer {emu.token}"}, timeout=5).status_code == 200
    for headers in (
        {},
        {"Authorization": "Bearer dapi-wrong"},
        {"Authorization": "Token x"},
        {"Authorization": "Basic ???"},
    ):
        response = requests.get(url, headers=headers, timeout=5)
        assert response.status_code == 401
        assert response.json()["error_code"] == "UNAUTHENTICATED"
    emu.add_token("dapi-extra")
    assert Api(emu, token="dapi-extra").get("jobs/runs/list").status_code == 200


def test_basic_auth(emu: Emulator) -> None:
    emu.add_basic_user("alice", "s3cret:with-colon")
    url = f"{emu.url}/api/2.1/jobs/runs/list"
    assert requests.get(url, auth=("alice", "s3cret:with-colon"), timeout=5).status_code == 200
    assert requests.get(url, auth=("alice", "wrong"), timeout=5).status_code == 401
    assert requests.get(url, auth=("bob", "s3cret:with-colon"), timeout=5).status_code == 401
    session = requests.Session()
    session.auth = ("alice", "s3cret:with-colon")
    run_id = session.post(
        f"{emu.url}/api/2.2/jobs/runs/submit", json={"run_name": "x", "notebook_task": notebook()}, timeout=5
    ).json()["run_id"]
    assert emu.run(run_id)["creator_user_name"] == "alice"


def _oauth(emu: Emulator, **kwargs: object) -> requests.Response:
    return requests.post(f"{emu.url}/oidc/v1/token", timeout=5, **kwargs)  # type: ignore[arg-type]


def test_oauth_client_credentials_issue_tokens_that_expire(emu: Emulator) -> None:
    emu.add_oauth_client("sp-id", "sp-secret")
    by_basic = _oauth(emu, data={"grant_type": "client_credentials", "scope": "all-apis"}, auth=("sp-id", "sp-secret"))
    assert by_basic.status_code == 200
    body = by_basic.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600 and body["access_token"]
    by_form = _oauth(emu, data={"grant_type": "client_credentials", "client_id": "sp-id", "client_secret": "sp-secret"})
    assert by_form.status_code == 200 and by_form.json()["access_token"] != body["access_token"]
    client = Api(emu, token=body["access_token"])
    run_id = client.submit({"run_name": "x", "notebook_task": notebook()})
    assert emu.run(run_id)["creator_user_name"] == "sp-id"

    emu.add_oauth_client("short-lived", "s", ttl_seconds=0.3)
    short = _oauth(emu, data={"grant_type": "client_credentials"}, auth=("short-lived", "s")).json()
    assert short["expires_in"] == 1  # rounded up
    time.sleep(0.35)
    assert Api(emu, token=short["access_token"]).get("jobs/runs/list").status_code == 401  # expired
    assert client.get("jobs/runs/list").status_code == 200


def test_expire_oauth_tokens_invalidates_every_issued_token(emu: Emulator) -> None:
    emu.add_oauth_client("sp-id", "sp-secret")
    token = _oauth(emu, data={"grant_type": "client_credentials"}, auth=("sp-id", "sp-secret")).json()["access_token"]
    client = Api(emu, token=token)
    assert client.get("jobs/runs/list").status_code == 200
    emu.expire_oauth_tokens()
    assert client.get("jobs/runs/list").status_code == 401
    assert Api(emu).get("jobs/runs/list").status_code == 200  # PATs are unaffected


def test_oauth_refuses_bad_clients_and_grants(emu: Emulator) -> None:
    emu.add_oauth_client("sp-id", "sp-secret")
    wrong = _oauth(emu, data={"grant_type": "client_credentials"}, auth=("sp-id", "nope"))
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    grant = _oauth(emu, data={"grant_type": "password"}, auth=("sp-id", "sp-secret"))
    assert grant.status_code == 400 and grant.json()["error"] == "unsupported_grant_type"


def test_azure_ad_stand_in_issues_tokens_the_api_accepts(emu: Emulator) -> None:
    emu.add_azure_client("tenant-1", "app-id", "app-secret")
    form = {"grant_type": "client_credentials", "client_id": "app-id", "client_secret": "app-secret"}
    v1 = requests.post(
        f"{emu.url}/tenant-1/oauth2/token", data=dict(form, resource="2ff814a6-3304-4ab8-85cb-cd0e6f879c1d"), timeout=5
    )
    assert v1.status_code == 200
    assert v1.json()["expires_in"] == "3600" and int(v1.json()["expires_on"]) > time.time()
    v2 = requests.post(f"{emu.url}/tenant-1/oauth2/v2.0/token", data=dict(form, scope="x/.default"), timeout=5)
    assert v2.status_code == 200 and v2.json()["expires_in"] == 3600
    for token in (v1.json()["access_token"], v2.json()["access_token"]):
        assert Api(emu, token=token).get("jobs/runs/list").status_code == 200
    other_tenant = requests.post(f"{emu.url}/tenant-2/oauth2/token", data=form, timeout=5)
    assert other_tenant.status_code == 400
    bad_secret = requests.post(f"{emu.url}/tenant-1/oauth2/token", data=dict(form, client_secret="x"), timeout=5)
    assert bad_secret.status_code == 401
    emu.expire_oauth_tokens()
    assert Api(emu, token=v2.json()["access_token"]).get("jobs/runs/list").status_code == 401


def test_request_log_holds_no_credentials(emu: Emulator) -> None:
    emu.add_oauth_client("sp-id", "sp-secret-value")
    token = _oauth(emu, data={"grant_type": "client_credentials"}, auth=("sp-id", "sp-secret-value")).json()[
        "access_token"
    ]
    Api(emu, token=token).get("jobs/runs/list", token="leaky")
    Api(emu).post("jobs/runs/submit", {"run_name": "x", "notebook_task": notebook()})
    text = repr(emu.requests)
    for secret in (emu.token, token, "sp-secret-value", "leaky"):
        assert secret not in text
    assert emu.requests[1].query == {}


def test_malformed_json_and_non_object_bodies(api: Api) -> None:
    bad = api.session.post(api.base + "jobs/runs/submit", data=b"{not json", timeout=5)
    assert bad.status_code == 400 and bad.json()["error_code"] == "MALFORMED_REQUEST"
    listed = api.post("jobs/runs/submit", [1, 2])
    assert listed.status_code == 400 and listed.json()["error_code"] == "MALFORMED_REQUEST"


def test_payload_errors_name_the_field(api: Api) -> None:
    cases = {
        "tasks": {"run_name": "x"},
        "new_cluster": {
            "run_name": "x",
            "notebook_task": notebook(),
            "new_cluster": {},
            "existing_cluster_id": "emulator-1",
        },
        "tasks[0].new_cluster": {
            "tasks": [{"task_key": "a", "notebook_task": notebook(), "new_cluster": {}, "existing_cluster_id": "e"}]
        },
        "tasks[1].task_key": {
            "tasks": [{"task_key": "a", "notebook_task": {}}, {"task_key": "a", "notebook_task": {}}]
        },
        "tasks[0].depends_on": {"tasks": [{"task_key": "a", "notebook_task": {}, "depends_on": [{"task_key": "zz"}]}]},
        "timeout_seconds": {"run_name": "x", "notebook_task": notebook(), "timeout_seconds": "soon"},
        "run_name": {"run_name": 5, "notebook_task": notebook()},
        "spark_jar_task": {"notebook_task": notebook(), "spark_jar_task": {}},
    }
    for field, body in cases.items():
        response = api.post("jobs/runs/submit", body)
        assert response.status_code == 400, (field, response.text)
        assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE"
        assert field in response.json()["message"], (field, response.json())
    cycle = api.post(
        "jobs/runs/submit",
        {
            "tasks": [
                {"task_key": "a", "notebook_task": {}, "depends_on": [{"task_key": "b"}]},
                {"task_key": "b", "notebook_task": {}, "depends_on": [{"task_key": "a"}]},
            ]
        },
    )
    assert cycle.status_code == 400 and "cycle" in cycle.json()["message"]
    assert api.post("jobs/run-now", {"job_id": "abc"}).status_code == 400
    assert api.post("jobs/run-now", {"job_id": 1, "notebook_params": ["x"]}).status_code == 400
    assert api.get("jobs/runs/get", run_id="x1").status_code == 400
    assert api.get("jobs/runs/get").json()["message"] == "Missing required field: run_id"


def test_unknown_ids_are_400_invalid_parameter_value_as_databricks_answers(api: Api) -> None:
    # The Databricks SDK turns exactly these answers into ResourceDoesNotExist (its error overrides).
    for response in (
        api.get("jobs/runs/get", run_id=42),
        api.get("jobs/runs/get-output", run_id=42),
        api.post("jobs/runs/cancel", {"run_id": 42}),
        api.post("jobs/runs/repair", {"run_id": 42, "rerun_all_failed_tasks": True}),
        api.post("jobs/runs/delete", {"run_id": 42}),
    ):
        assert (response.status_code, response.json()) == (
            400,
            {"error_code": "INVALID_PARAMETER_VALUE", "message": "Run 42 does not exist."},
        ), response.url
    for response in (
        api.get("jobs/get", job_id=42),
        api.post("jobs/run-now", {"job_id": 42}),
        api.post("jobs/delete", {"job_id": 42}),
        api.post("jobs/runs/cancel-all", {"job_id": 42}),
    ):
        assert (response.status_code, response.json()) == (
            400,
            {"error_code": "INVALID_PARAMETER_VALUE", "message": "Job 42 does not exist."},
        ), response.url


def test_wrong_method_and_unknown_routes(emu: Emulator, api: Api) -> None:
    wrong = api.get("jobs/runs/submit")
    assert wrong.status_code == 405 and wrong.headers["Allow"] == "POST"
    assert wrong.json()["error_code"] == "METHOD_NOT_ALLOWED"
    missing = api.get("jobs/nothing")
    assert missing.status_code == 404 and missing.json()["error_code"] == "ENDPOINT_NOT_FOUND"
    assert Api(emu, "2.0").get("jobs/runs/list").status_code == 404
    assert requests.get(f"{emu.url}/", timeout=5).status_code == 404


def test_a_handler_bug_is_a_500_json_and_the_server_keeps_serving(emu: Emulator, api: Api, monkeypatch, caplog) -> None:
    from airflow_dbx.emulator import app

    def broken(*args: object) -> object:
        raise RuntimeError("secret internals")

    monkeypatch.setitem(app.API_ROUTES, ("GET", "jobs/runs/list"), broken)
    response = api.get("jobs/runs/list")
    assert response.status_code == 500
    assert response.json() == {"error_code": "INTERNAL_ERROR", "message": "Emulator error: RuntimeError"}
    assert api.get("jobs/list").status_code == 200


def test_token_endpoint_faults_can_be_injected(emu: Emulator) -> None:
    emu.add_oauth_client("sp-id", "sp-secret")
    emu.fail_next("POST", "/oidc/v1/token", status=503, retry_after=1)
    first = _oauth(emu, data={"grant_type": "client_credentials"}, auth=("sp-id", "sp-secret"))
    assert first.status_code == 503 and first.headers["Retry-After"] == "1"
    assert _oauth(emu, data={"grant_type": "client_credentials"}, auth=("sp-id", "sp-secret")).status_code == 200


def test_an_oversized_body_is_a_json_413(api: Api) -> None:
    response = api.session.post(api.base + "jobs/runs/submit", data=b"{" + b" " * (17 * 1024 * 1024) + b"}", timeout=30)
    assert response.status_code == 413
    assert response.json()["error_code"] == "MALFORMED_REQUEST"
    assert api.get("jobs/runs/list").status_code == 200
