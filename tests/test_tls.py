"""TLS, end to end: the emulator behind a local HTTPS terminator on 127.0.0.1.

tests/test_hook_connection.py already shows, for one runs/get on both transports, that
verification is on by default, that ``ca_bundle`` trusts a private CA and that
``verify_ssl: false`` turns it off with a warning. This module covers what it does not:
the operators and the trigger over HTTPS (sync and deferred), OAuth token requests over
HTTPS, a certificate signed by a CA (not self-signed), a wrong host name, an expired
certificate, a bundle of the wrong CA, REQUESTS_CA_BUNDLE, and a plain-HTTP server behind an
https:// URL -- each failing at once (never retried) with a clear TLS error, starting no run.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import ssl
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
from cryptography import x509  # Airflow depends on it: the TLS proof never silently skips
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from airflow_dbx import errors, models
from airflow_dbx._http import pool
from airflow_dbx.hook import DatabricksHook
from airflow_dbx.operators import DatabricksSubmitRunOperator
from airflow_dbx.trigger import DatabricksRunTrigger
from tests.integration.conftest import TaskDeferred, TryContext

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from airflow_dbx.emulator import Emulator

NOTEBOOK = {"notebook_path": "/Shared/tls", "base_parameters": {"emulator_duration": 1, "emulator_output": "tls ok"}}
CLUSTER = "emulator-cluster"
FAST = {"polling_period_seconds": 0.05, "databricks_retry_delay": 0.01, "databricks_retry_limit": 3}


# ---------------------------------------------------------------------- certificates


def _name(common_name: str) -> Any:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@dataclass
class Pki:
    ca: Path  # the CA certificate users put in ca_bundle
    other_ca: Path  # a CA that signed nothing here
    leaf: tuple[Path, Path]  # 127.0.0.1, signed by ca
    expired: tuple[Path, Path]  # 127.0.0.1, signed by ca, expired yesterday


def _write(folder: Path, name: str, cert: Any, key: Any | None = None) -> tuple[Path, Path]:
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        key_path.write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path


def _ca(common_name: str) -> tuple[Any, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(_name(common_name))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(ca_cert: Any, ca_key: Any, *, expired: bool = False) -> tuple[Any, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = (now - datetime.timedelta(days=3), now - datetime.timedelta(days=1)) if expired else (
        now - datetime.timedelta(hours=1), now + datetime.timedelta(days=1))
    cert = (
        x509.CertificateBuilder().subject_name(_name("127.0.0.1")).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca_cert, ca_key = _ca("airflow-dbx test CA")
    other_cert, _ = _ca("some other CA")
    return Pki(
        ca=_write(folder, "ca", ca_cert)[0],
        other_ca=_write(folder, "other-ca", other_cert)[0],
        leaf=_write(folder, "leaf", *_leaf(ca_cert, ca_key)),
        expired=_write(folder, "expired", *_leaf(ca_cert, ca_key, expired=True)),
    )


# ---------------------------------------------------------------------- an HTTPS front for the emulator


class TlsFront:
    """Terminates TLS on 127.0.0.1 and pipes the bytes to a plain-HTTP upstream (the emulator)."""

    def __init__(self, upstream_port: int, context: ssl.SSLContext | None) -> None:
        self.upstream_port = upstream_port
        self.context = context
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="tls-front", daemon=True)

    def __enter__(self) -> TlsFront:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _serve(self) -> None:
        self._loop.run_until_complete(self._main())
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._pipe, "127.0.0.1", 0, ssl=self.context)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        server.close()
        pipes = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in pipes:
            task.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)
        await server.wait_closed()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, ssl.SSLError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer), return_exceptions=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"


def _server_context(cert: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*cert)
    return context


@pytest.fixture
def front(emulator: Emulator, pki: Pki) -> Iterator[TlsFront]:
    with TlsFront(emulator.port, _server_context(pki.leaf)) as tls:
        yield tls


def connect(monkeypatch: pytest.MonkeyPatch, host: str, password: str, conn_id: str = "databricks_default",
            **fields: Any) -> str:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}",
                       json.dumps({"conn_type": "dbx", "host": host, "password": password, **fields}))
    return conn_id


def both_transports(hook: DatabricksHook, run_id: int) -> list[models.Run]:
    return [hook.get_run(run_id), asyncio.run(hook.a_get_run(run_id))]


def tls_failures(hook_factory: Any) -> list[errors.DatabricksApiError]:
    """The error of one runs/get on each transport; each must be a TLS error raised at once."""
    failures = []
    for call in (lambda h: h.get_run(1), lambda h: asyncio.run(h.a_get_run(1))):
        with pytest.raises(errors.DatabricksApiError) as caught:
            call(hook_factory())
        failures.append(caught.value)
    return failures


def assert_clear_tls_error(error: errors.DatabricksApiError, *details: str) -> None:
    text = str(error)
    assert "TLS error talking to 127.0.0.1" in text, text
    assert "ca_bundle" in text, text
    assert error.attempts == 1, f"a certificate problem was retried: {text}"
    for detail in details:
        assert detail.lower() in text.lower(), text


# ---------------------------------------------------------------------- the tests


def test_operator_sync_and_deferred_over_https_with_ca_bundle(front, pki, emulator, monkeypatch) -> None:
    connect(monkeypatch, front.url, emulator.token, extra={"ca_bundle": str(pki.ca)})
    ctx = TryContext(task_id="sync")
    run_id = DatabricksSubmitRunOperator(task_id="sync", notebook_task=NOTEBOOK, existing_cluster_id=CLUSTER,
                                         **FAST).execute(ctx)
    assert ctx.xcom["notebook_output"] == "tls ok"
    assert ctx.xcom["run_page_url"].startswith("http")

    ctx = TryContext(task_id="deferred")
    op = DatabricksSubmitRunOperator(task_id="deferred", notebook_task=NOTEBOOK, existing_cluster_id=CLUSTER,
                                     deferrable=True, **FAST)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(ctx)
    trigger = DatabricksRunTrigger(**deferred.value.trigger.serialize()[1])

    async def first_event() -> dict[str, Any]:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("no event")

    event = asyncio.run(first_event())
    assert event["successful"] is True
    assert op.execute_complete(ctx, event) != run_id
    assert len(emulator.runs()) == 2


def test_default_verification_refuses_the_private_ca_and_starts_no_run(front, emulator, monkeypatch) -> None:
    connect(monkeypatch, front.url, emulator.token)
    with pytest.raises(errors.DatabricksApiError) as caught:
        DatabricksSubmitRunOperator(task_id="t", notebook_task=NOTEBOOK, existing_cluster_id=CLUSTER,
                                    **FAST).execute(TryContext())
    assert_clear_tls_error(caught.value, "certificate verify failed")
    assert "POST /api/2.2/jobs/runs/submit" in str(caught.value)
    assert emulator.runs() == []
    for error in tls_failures(DatabricksHook):
        assert_clear_tls_error(error, "certificate verify failed")


def test_a_bundle_of_another_ca_is_refused(front, pki, emulator, monkeypatch) -> None:
    connect(monkeypatch, front.url, emulator.token, extra={"ca_bundle": str(pki.other_ca)})
    for error in tls_failures(DatabricksHook):
        assert_clear_tls_error(error, "certificate verify failed")


def test_a_host_name_the_certificate_does_not_name_is_refused(front, pki, emulator, monkeypatch) -> None:
    connect(monkeypatch, f"https://localhost:{front.port}", emulator.token, extra={"ca_bundle": str(pki.ca)})
    for error in tls_failures(DatabricksHook):
        text = str(error)
        assert "TLS error talking to localhost" in text, text
        assert "localhost" in text and ("hostname" in text.lower() or "match" in text.lower()), text
        assert error.attempts == 1


def test_an_expired_certificate_is_refused_even_with_its_ca(emulator, pki, monkeypatch) -> None:
    with TlsFront(emulator.port, _server_context(pki.expired)) as tls:
        connect(monkeypatch, tls.url, emulator.token, extra={"ca_bundle": str(pki.ca)})
        for error in tls_failures(DatabricksHook):
            assert_clear_tls_error(error, "expired")


def test_plain_http_behind_an_https_url_is_a_tls_error(emulator, monkeypatch) -> None:
    connect(monkeypatch, f"https://127.0.0.1:{emulator.port}", emulator.token)
    for error in tls_failures(DatabricksHook):
        assert_clear_tls_error(error)
    assert [r for r in emulator.requests if r.path.startswith("/api/")] == []


def test_oauth_token_requests_obey_ca_bundle(front, pki, emulator, monkeypatch) -> None:
    emulator.add_oauth_client("tls-sp", "tls-oauth-secret-1")
    fields = {"login": "tls-sp", "extra": {"service_principal_oauth": True, "ca_bundle": str(pki.ca)}}
    connect(monkeypatch, front.url, "tls-oauth-secret-1", **fields)
    run_id = DatabricksHook().submit_run({"run_name": "tls", "tasks": [
        {"task_key": "only", "existing_cluster_id": CLUSTER, "notebook_task": NOTEBOOK}]})
    assert all(run.run_id == run_id for run in both_transports(DatabricksHook(), run_id))
    assert [r.path for r in emulator.requests if r.path.startswith("/oidc")] == ["/oidc/v1/token"]

    connect(monkeypatch, front.url, "tls-oauth-secret-1", conn_id="no_bundle",
            login="tls-sp", extra={"service_principal_oauth": True})
    from airflow_dbx import auth

    auth.TOKEN_CACHE.clear()
    for error in tls_failures(lambda: DatabricksHook("no_bundle", retry_delay=0.01)):
        text = str(error)
        assert f"POST {front.url}/oidc/v1/token" in text or "/oidc/v1/token" in text, text
        assert "TLS error talking to 127.0.0.1" in text, text
        assert error.attempts == 1, text


def test_requests_ca_bundle_is_trusted_by_both_transports(front, pki, emulator, monkeypatch) -> None:
    """Without ca_bundle, both transports trust what requests would (REQUESTS_CA_BUNDLE) -- the same CAs."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.ca))
    # The async transport builds its SSL context once per process (the variable is read at
    # startup in a real worker or triggerer); start from none, as a fresh process would.
    monkeypatch.setattr(pool.SESSIONS, "_contexts", {})
    connect(monkeypatch, front.url, emulator.token)
    run_id = DatabricksHook().submit_run({"run_name": "tls", "tasks": [
        {"task_key": "only", "existing_cluster_id": CLUSTER, "notebook_task": NOTEBOOK}]})
    assert [run.run_id for run in both_transports(DatabricksHook(), run_id)] == [run_id, run_id]


def test_ca_bundle_wins_over_requests_ca_bundle(front, pki, emulator, monkeypatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.ca))
    connect(monkeypatch, front.url, emulator.token, extra={"ca_bundle": str(pki.other_ca)})
    for error in tls_failures(DatabricksHook):
        assert_clear_tls_error(error, "certificate verify failed")
