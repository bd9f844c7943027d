"""The command line (a real subprocess), the pytest plugin, and a warning-free import."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]


def _wait_for(path: Path, process: subprocess.Popen[str], timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the emulator did not write its port file"
        time.sleep(0.02)
    return path.read_text().strip()


def test_cli_serves_until_sigterm(tmp_path: Path) -> None:
    port_file = tmp_path / "url"
    process = subprocess.Popen(
        [
            sys.executable,
            "-W",
            "error",
            "-m",
            "airflow_dbx.emulator",
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--token",
            "dapi-cli",
            "--time-scale",
            "0.01",
            "--oauth-client",
            "cid:csecret",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = _wait_for(port_file, process)
        assert url.startswith("http://127.0.0.1:")
        headers = {"Authorization": "Bearer dapi-cli"}
        run = requests.post(
            f"{url}/api/2.2/jobs/runs/submit",
            headers=headers,
            timeout=5,
            json={"run_name": "cli", "notebook_task": {"notebook_path": "/x"}},
        )
        assert run.status_code == 200
        assert requests.get(f"{url}/api/2.2/jobs/runs/list", timeout=5).status_code == 401
        assert (
            requests.get(f"{url}/__emulator__/runs", headers=headers, timeout=5).json()["runs"][0]["run_name"] == "cli"
        )
        token = requests.post(
            f"{url}/oidc/v1/token", data={"grant_type": "client_credentials"}, auth=("cid", "csecret"), timeout=5
        )
        assert token.status_code == 200
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert out.strip() == f"airflow-dbx emulator listening on {url}"
    assert err == ""


def test_cli_reports_a_busy_port(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "airflow_dbx.emulator", "--port", str(port)],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_import_is_warning_free() -> None:
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", "import airflow_dbx.emulator, airflow_dbx.emulator.pytest_plugin"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_pytest_plugin_fixtures(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["airflow_dbx.emulator.pytest_plugin"]\n')
    (tmp_path / "test_user.py").write_text(
        textwrap.dedent("""
        import os
        import requests

        def test_emulator(databricks_emulator):
            response = requests.get(databricks_emulator.url + "/api/2.2/jobs/runs/list",
                                    headers={"Authorization": "Bearer " + databricks_emulator.token})
            assert response.status_code == 200
            assert databricks_emulator.time_scale < 1

        def test_connection(databricks_emulator_conn):
            assert os.environ["AIRFLOW_CONN_DATABRICKS_DEFAULT"] == databricks_emulator_conn.conn_uri()
    """)
    )
    env = {k: v for k, v in os.environ.items() if k != "AIRFLOW_CONN_DATABRICKS_DEFAULT"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
    assert "AIRFLOW_CONN_DATABRICKS_DEFAULT" not in os.environ


def test_conn_uri_parses_as_an_airflow_connection() -> None:
    from airflow.sdk import Connection

    from airflow_dbx.emulator import Emulator

    emu = Emulator(token="dapi/with+chars", port=4321)
    conn = Connection.from_uri(emu.conn_uri(), conn_id="x")
    assert (conn.conn_type, conn.host, conn.port, conn.password) == ("dbx", "http://127.0.0.1", 4321, "dapi/with+chars")
