"""Airflow's own UI, in headless Chromium, against a throwaway API server and the emulator.

Runs only with ``AIRFLOW_DBX_BROWSER=1``. Needs Debian's ``chromium`` and ``chromium-driver``
(installed here when missing and running as root) and the ``selenium`` package. Every
process started here is stopped at the end of the module, whether its tests passed or not.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import requests

from airflow_dbx.emulator import Emulator

if TYPE_CHECKING:
    from collections.abc import Iterator

    from selenium.webdriver.remote.webdriver import WebDriver

    from tests.browser.pages import AirflowUI

ENABLED = os.environ.get("AIRFLOW_DBX_BROWSER") == "1"
REPO = Path(__file__).resolve().parents[2]
DAGS_FOLDER = REPO / "dags_examples"
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
EMULATOR_TOKEN = "dapi-browser-test-7d41c2e9"
SERVER_START_TIMEOUT = 180.0
COMMAND_TIMEOUT = 300.0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "browser: drives Airflow's UI in headless Chromium (needs AIRFLOW_DBX_BROWSER=1)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if ENABLED:
        return
    skip = pytest.mark.skip(reason="browser test: set AIRFLOW_DBX_BROWSER=1 to run it (needs chromium and selenium)")
    for item in items:
        if item.get_closest_marker("browser"):
            item.add_marker(skip)


# --------------------------------------------------------------------------- Airflow


@dataclass
class AirflowStack:
    """An API server on 127.0.0.1 with its own AIRFLOW_HOME, and the emulator it can reach."""

    home: Path
    url: str
    env: dict[str, str]
    emulator: Emulator

    def airflow(
        self, *args: str, timeout: float = COMMAND_TIMEOUT, **extra_env: str
    ) -> subprocess.CompletedProcess[str]:
        """Run an ``airflow`` command against this stack (with ``extra_env`` set); fail with its
        output's tail if it fails."""
        result = subprocess.run(
            [AIRFLOW, *args], env={**self.env, **extra_env}, capture_output=True, text=True, timeout=timeout,
            check=False,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"airflow {' '.join(args)} exited {result.returncode}:\n{output[-4000:]}"
        return result

    def api(self, path: str) -> dict[str, object]:
        response = requests.get(f"{self.url}/api/v2/{path}", timeout=30)
        response.raise_for_status()
        result: dict[str, object] = response.json()
        return result


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _airflow_env(home: Path, url: str) -> dict[str, str]:
    # Nothing of the calling environment's Airflow settings or connections leaks in.
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS_FOLDER),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
        AIRFLOW__CORE__TEST_CONNECTION="Enabled",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        AIRFLOW__API__BASE_URL=url,
        AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",
    )
    return env


def _tail(path: Path, chars: int = 4000) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-chars:]
    return ""


def _stop(process: subprocess.Popen[bytes]) -> None:
    """End the process group this module started: SIGTERM, then SIGKILL after 20 s."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"airflow api-server exited {process.returncode}:\n{_tail(log)}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{url}/api/v2/monitor/health", timeout=5).ok:
                return
        time.sleep(0.5)
    pytest.fail(f"airflow api-server not healthy after {SERVER_START_TIMEOUT:.0f}s:\n{_tail(log)}")


@pytest.fixture(scope="module")
def airflow_stack() -> Iterator[AirflowStack]:
    """The emulator, a migrated sqlite DB and ``airflow api-server`` in a temporary AIRFLOW_HOME."""
    with (
        tempfile.TemporaryDirectory(prefix="dbx-browser-") as tmp,
        Emulator(time_scale=0.1, token=EMULATOR_TOKEN) as emu,
    ):
        home = Path(tmp)
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        stack = AirflowStack(home=home, url=url, env=_airflow_env(home, url), emulator=emu)
        stack.airflow("db", "migrate")
        log = home / "api-server.log"
        with log.open("wb") as out:
            server = subprocess.Popen(
                [AIRFLOW, "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                env=stack.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so its workers stop with it
            )
        try:
            _wait_healthy(url, server, log)
            yield stack
        finally:
            _stop(server)


# --------------------------------------------------------------------------- Chromium


def _ensure_chromium() -> None:
    """Install Debian's chromium and chromium-driver when missing (root only, as on CI)."""
    if os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER):
        return
    if os.geteuid() != 0:
        pytest.fail(f"{CHROMIUM} or {CHROMEDRIVER} is missing: apt-get install -y chromium chromium-driver")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"]
    if subprocess.run(install, env=env, capture_output=True, timeout=900, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=300, check=False)
        result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900, check=False)
        assert result.returncode == 0, f"apt-get install chromium failed:\n{(result.stdout + result.stderr)[-3000:]}"


@contextlib.contextmanager
def chromium(log: Path) -> Iterator[WebDriver]:
    """Headless Chromium driven by Selenium through the system chromedriver; quits on exit."""
    _ensure_chromium()
    os.environ["SE_OFFLINE"] = "1"  # Selenium Manager must never try to download a driver or browser
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is not installed: run.py adds the browser extra when AIRFLOW_DBX_BROWSER=1")

    profile = tempfile.mkdtemp(prefix="dbx-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--window-size=1280,1080",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(argument)
    service = Service(CHROMEDRIVER, log_output=str(log))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.set_page_load_timeout(60)
        driver.set_script_timeout(30)
        yield driver
    finally:
        driver.quit()  # also ends chromedriver and the browser
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def ui(airflow_stack: AirflowStack) -> Iterator[AirflowUI]:
    """Headless Chromium on the stack's UI."""
    from tests.browser.pages import AirflowUI

    with chromium(airflow_stack.home / "chromedriver.log") as driver:
        yield AirflowUI(driver, airflow_stack.url)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """Headless Chromium alone (no Airflow), for pages the emulator serves."""
    with chromium(tmp_path_factory.mktemp("chromium") / "chromedriver.log") as driver:
        yield driver
