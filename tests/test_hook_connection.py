"""DatabricksHook: connection fields -> base URL, TLS, timeouts; constructor checks; test_connection."""

from __future__ import annotations

import datetime
import json
import logging
import ssl
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest

try:
    from airflow.sdk.exceptions import AirflowNotFoundException
except ImportError:  # Airflow 3.1
    from airflow.exceptions import AirflowNotFoundException  # type: ignore[no-redef]

from airflow_dbx import compat
from airflow_dbx.auth import InvalidConnectionError
from airflow_dbx.errors import DatabricksApiError
from airflow_dbx.hook import DatabricksHook, parse_host

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

GOOD_HOSTS = [
    ("adb-1234.5.azuredatabricks.net", None, "https://adb-1234.5.azuredatabricks.net"),
    ("https://dbc-a1b2.cloud.databricks.com", None, "https://dbc-a1b2.cloud.databricks.com"),
    ("https://dbc-a1b2.cloud.databricks.com/", None, "https://dbc-a1b2.cloud.databricks.com"),
    ("  HTTPS://Example.COM  ", None, "https://example.com"),
    ("https://example.com:8443", None, "https://example.com:8443"),
    ("example.com", 8443, "https://example.com:8443"),
    ("https://example.com:8443", 8443, "https://example.com:8443"),
    ("http://127.0.0.1:5000", None, "http://127.0.0.1:5000"),
    ("http://127.0.0.1", 5000, "http://127.0.0.1:5000"),
    ("http://127.42.0.7/", None, "http://127.42.0.7"),
    ("http://localhost:8080", None, "http://localhost:8080"),
    ("http://[::1]:8080", None, "http://[::1]:8080"),
]

BAD_HOSTS = [
    ("", None, "no host"),
    ("http://example.com", None, "plain http:// is refused for example.com"),
    ("http://10.0.0.5:8080", None, "only for loopback"),
    ("http://128.0.0.1", None, "plain http:// is refused"),
    ("ftp://example.com", None, "scheme 'ftp' is not supported"),
    ("https://example.com/api/2.2", None, "without a path or query, got '/api/2.2'"),
    ("https://adb-1.azuredatabricks.net/?o=123", None, "use https://adb-1.azuredatabricks.net"),
    ("https://example.com/#/job/1", None, "without a path"),
    ("https://example.com:99999", None, "not a valid URL"),
    ("https://example.com:8443", 443, "port 8443 but the Port field says 443"),
    ("https://", None, "names no server"),
    ("https://example..com", None, "Host 'example..com' has an empty or over-long label"),
    ("https://example.com\\evil", None, "Host 'example.com\\evil' contains invalid character '\\'"),
    ("https://exa mple.com", None, "Host 'exa mple.com' contains invalid character ' '"),
    ("https://[::1", None, "not a valid URL: Invalid IPv6 URL"),
]


@pytest.mark.parametrize(("raw", "port", "expected"), GOOD_HOSTS)
def test_host_forms_accepted(raw: str, port: int | None, expected: str) -> None:
    assert parse_host(raw, port) == expected


@pytest.mark.parametrize(("raw", "port", "message"), BAD_HOSTS)
def test_host_forms_refused_with_reason(raw: str, port: int | None, message: str) -> None:
    with pytest.raises(InvalidConnectionError) as info:
        parse_host(raw, port)
    assert message in str(info.value)


def test_host_with_credentials_is_refused_without_echoing_them() -> None:
    with pytest.raises(InvalidConnectionError) as info:
        parse_host("https://me:s3cret-pw@example.com")
    assert "credentials" in str(info.value)
    assert "s3cret-pw" not in str(info.value)


# ---------------------------------------------------------------------- connection forms


def test_uri_connection_with_http_in_host_reaches_emulator(emulator, monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DATABRICKS_DEFAULT", f"dbx://http://:{quote(emulator.token, safe='')}@127.0.0.1:{emulator.port}")
    hook = DatabricksHook()
    assert hook.host_url == emulator.url
    assert hook.test_connection() == (True, f"Connected to {emulator.url}: the Jobs API answered.")


def test_uri_connection_without_scheme_means_https(monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DATABRICKS_DEFAULT", "dbx://:dapi-tok-123@127.0.0.1:8443")
    assert DatabricksHook().host_url == "https://127.0.0.1:8443"


def test_json_connection_with_port_field(emulator, set_connection) -> None:
    set_connection(host="http://127.0.0.1", port=emulator.port, password=emulator.token)
    assert DatabricksHook().host_url == emulator.url
    assert DatabricksHook().test_connection()[0]


def test_official_provider_connection_with_host_and_token_extras(emulator, set_connection) -> None:
    set_connection(conn_type="databricks", host="ignored.example.com", extra={"host": emulator.url, "token": emulator.token})
    hook = DatabricksHook()
    assert hook.host_url == emulator.url
    assert hook.test_connection()[0]


def test_missing_host_is_a_clear_error(set_connection) -> None:
    set_connection(password="dapi-tok-123")
    ok, message = DatabricksHook().test_connection()
    assert not ok
    assert "no host" in message


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"timeout_seconds": 0}, "timeout_seconds must be a positive number"),
        ({"timeout_seconds": "soon"}, "timeout_seconds must be a positive number"),
        ({"proxies": "not json"}, "proxies must be a JSON object"),
        ({"ca_bundle": "/nonexistent/ca.pem"}, "ca_bundle '/nonexistent/ca.pem' is not a readable file"),
        ({"auth_type": "kerberos"}, "unknown auth_type 'kerberos'; valid values: token, basic, oauth-m2m"),
        ('{"ca_bundle": "/etc/ssl/corp.pem",', "the connection's extra is not valid JSON (Expecting property name"),
        ("[1, 2]", "the connection's extra must be a JSON object, got a list"),
    ],
)
def test_bad_extras_are_refused(set_connection, extra, message) -> None:
    set_connection(host="https://example.com", password="dapi-tok-123", extra=extra)
    try:
        DatabricksHook.get_connection("databricks_default")
    except AirflowNotFoundException:
        # Airflow 3.1's environment backend drops a connection whose extra is not a JSON object.
        assert compat.AIRFLOW_VERSION < (3, 2), "only Airflow 3.1 drops such a connection itself"
        assert not extra.startswith("{") or not extra.rstrip().endswith("}")
        return
    with pytest.raises(InvalidConnectionError) as info:
        DatabricksHook().host_url  # noqa: B018
    assert message in str(info.value)


def test_extras_in_string_form_from_uri_connections(monkeypatch) -> None:
    proxies = quote(json.dumps({"https": "http://proxy.internal:3128"}))
    monkeypatch.setenv(
        "AIRFLOW_CONN_DATABRICKS_DEFAULT", f"dbx://:dapi-tok-123@example.com?timeout_seconds=2.5&proxies={proxies}"
    )
    settings = DatabricksHook()._api.settings()
    assert settings.timeout == 2.5
    assert settings.proxies == {"https": "http://proxy.internal:3128"}


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"retry_limit": 0}, "retry_limit"),
        ({"retry_limit": -2}, "retry_limit"),
        ({"retry_limit": True}, "retry_limit"),
        ({"retry_limit": 2.5}, "retry_limit"),
        ({"retry_limit": "3"}, "retry_limit"),
        ({"retry_delay": -1}, "retry_delay"),
        ({"retry_delay": "1"}, "retry_delay"),
        ({"retry_args": ["stop"]}, "retry_args: must be a dict"),
        ({"retry_args": {"stop_after_attempt": 2}}, "retry_args: 'stop_after_attempt' not tenacity.Retrying arguments"),
    ],
)
def test_bad_retry_settings_name_the_argument(kwargs, name) -> None:
    with pytest.raises(ValueError, match=name):
        DatabricksHook(**kwargs)


def test_hook_attributes_and_user_agent() -> None:
    hook = DatabricksHook("my_conn", caller="DatabricksSubmitRunOperator")
    assert (hook.conn_name_attr, hook.default_conn_name, hook.conn_type) == ("databricks_conn_id", "databricks_default", "dbx")
    assert hook.hook_name == "Databricks (airflow-dbx)"
    assert hook.databricks_conn_id == "my_conn"
    from airflow import __version__ as airflow_version

    from airflow_dbx import __version__

    assert hook.user_agent == f"airflow-dbx/{__version__} apache-airflow/{airflow_version} (DatabricksSubmitRunOperator)"


def test_test_connection_reports_refusal_without_the_token(emulator, set_connection) -> None:
    set_connection(host=emulator.url, password="dapi-wrong-token-777")
    ok, message = DatabricksHook(retry_delay=0).test_connection()
    assert not ok
    assert "HTTP 401" in message
    assert "dapi-wrong-token-777" not in message


def test_test_connection_reports_an_unreachable_host(set_connection) -> None:
    set_connection(host="http://127.0.0.1:9", password="dapi-tok-123")  # discard port: nothing listens
    ok, message = DatabricksHook(retry_limit=1).test_connection()
    assert not ok
    assert "connection failed" in message


# ---------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    import ipaddress

    from cryptography import x509  # Airflow depends on it: the TLS proof never silently skips
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "airflow-dbx test CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class _RunsGet(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"run_id": 1, "status": {"state": "RUNNING"}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def https_server(tls_files) -> Iterator[str]:
    cert, key = tls_files
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RunsGet)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_tls_is_verified_by_default(https_server, set_connection, call) -> None:
    set_connection(host=https_server, password="dapi-tok-123")
    with pytest.raises(DatabricksApiError) as info:
        call(DatabricksHook(retry_delay=0), "get_run_state", 1)
    assert "TLS error talking to 127.0.0.1" in str(info.value)
    assert "ca_bundle" in str(info.value)
    assert info.value.attempts == 1  # a certificate problem is not worth retrying


def test_ca_bundle_makes_a_private_certificate_trusted(https_server, tls_files, set_connection, call) -> None:
    set_connection(host=https_server, password="dapi-tok-123", extra={"ca_bundle": str(tls_files[0])})
    assert call(DatabricksHook(), "get_run_state", 1).life_cycle_state == "RUNNING"


def test_verify_ssl_false_skips_verification_with_a_warning(https_server, set_connection, call, caplog) -> None:
    set_connection(host=https_server, password="dapi-tok-123", extra={"verify_ssl": False})
    from urllib3.exceptions import InsecureRequestWarning

    with caplog.at_level(logging.WARNING, logger="airflow_dbx"), warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureRequestWarning)  # urllib3's own, per request
        state = call(DatabricksHook(), "get_run_state", 1)
    assert state.life_cycle_state == "RUNNING"
    assert "TLS certificate verification is off" in caplog.text


# ---------------------------------------------------------------------- proxies


class _ForwardProxy(BaseHTTPRequestHandler):
    """A plain HTTP forward proxy on loopback that counts what passes through it."""

    seen: list[str]

    def _forward(self) -> None:
        import urllib.request

        self.seen.append(f"{self.command} {self.path}")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "proxy-connection", "connection")}
        request = urllib.request.Request(self.path, data=body, headers=headers, method=self.command)
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                status, content = answer.status, answer.read()
        except urllib.error.HTTPError as error:
            status, content = error.code, error.read()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    do_GET = do_POST = _forward

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_both_transports_go_through_the_configured_proxy(emulator, set_connection) -> None:
    seen: list[str] = []
    handler = type("CountingProxy", (_ForwardProxy,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        proxy = f"http://127.0.0.1:{server.server_address[1]}"
        set_connection(host=emulator.url, password=emulator.token, extra={"proxies": {"http": proxy}})
        run_id = DatabricksHook().submit_run({
            "run_name": "via proxy", "tasks": [{"task_key": "a", "existing_cluster_id": "emulator-cluster",
                                                 "notebook_task": {"notebook_path": "/nb"}}]})
        assert DatabricksHook().get_run(run_id).run_id == run_id
        import asyncio

        assert asyncio.run(DatabricksHook().a_get_run(run_id)).run_id == run_id
    finally:
        server.shutdown()
    runs_get = f"GET {emulator.url}/api/2.2/jobs/runs/get?run_id={run_id}"
    assert seen == [f"POST {emulator.url}/api/2.2/jobs/runs/submit", runs_get, runs_get]
    assert [r.path for r in emulator.requests][-3:] == [
        "/api/2.2/jobs/runs/submit", "/api/2.2/jobs/runs/get", "/api/2.2/jobs/runs/get"
    ]
