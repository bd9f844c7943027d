"""The README's install from a checkout: build the sdist and wheel, install the wheel into a clean
virtual environment with Airflow, and find the provider there.

Runs only with ``AIRFLOW_DBX_WHEEL=1`` (CI runs it once). To stay fast it installs the Airflow
version of the running environment, with every dependency pinned to what is installed here, so
pip resolves nothing new and takes the packages from its cache.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STEP_TIMEOUT = 900

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(2 * STEP_TIMEOUT),
    pytest.mark.skipif(
        os.environ.get("AIRFLOW_DBX_WHEEL") != "1", reason="builds and installs a wheel: set AIRFLOW_DBX_WHEEL=1"
    ),
]


def _run(command: list[str], **kwargs: object) -> str:
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=STEP_TIMEOUT, check=False, **kwargs  # type: ignore[call-overload]
    )
    output = f"{result.stdout}\n{result.stderr}"
    assert result.returncode == 0, f"{' '.join(command)} exited {result.returncode}:\n{output[-4000:]}"
    return str(output)


def _clean_env(home: Path) -> dict[str, str]:
    """The caller's environment without its venv, Python path or Airflow settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW", "PYTHON")) and key != "VIRTUAL_ENV"
    }
    env["AIRFLOW_HOME"] = str(home)
    return env


def test_the_wheel_installs_and_registers_the_provider(tmp_path: Path) -> None:
    # Build from a copy, so nothing left in the checkout (build/, egg-info, caches) gets in.
    source = tmp_path / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", ".airflow", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
        ),
    )
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--outdir", str(dist), str(source)])
    (wheel,) = dist.glob("airflow_dbx-*.whl")
    assert len(list(dist.glob("airflow_dbx-*.tar.gz"))) == 1
    names = zipfile.ZipFile(wheel).namelist()
    assert "airflow_dbx/py.typed" in names
    assert any(name.endswith(".dist-info/licenses/LICENSE") or name.endswith(".dist-info/LICENSE") for name in names)
    assert not any(name.startswith("tests/") for name in names)

    env_dir = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(env_dir)])
    pins = tmp_path / "pins.txt"
    pins.write_text(_run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"]).strip() + "\n")
    python = env_dir / "bin" / "python"
    home = tmp_path / "airflow-home"
    home.mkdir()
    env = _clean_env(home)
    _run(
        [
            str(python), "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off",
            "-c", str(pins), str(wheel), f"apache-airflow=={version('apache-airflow')}",
        ],
        env=env,
        cwd=tmp_path,
    )

    # Run outside the checkout, so only the installed package can answer.
    located = _run([str(python), "-c", "import airflow_dbx; print(airflow_dbx.__file__)"], env=env, cwd=home)
    assert str(env_dir) in located
    providers = _run([str(env_dir / "bin" / "airflow"), "providers", "list"], env=env, cwd=home)
    assert "airflow-dbx" in providers, providers[-3000:]
    assert (env_dir / "bin" / "airflow-dbx-emulator").exists()
