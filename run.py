#!/usr/bin/env python3
"""Set up a private environment and run the demo or the tests.

    python3 run.py demo                 # example DAGs through `airflow dags test` on the emulator
    python3 run.py test                 # ruff, mypy and pytest
    python3 run.py test --airflow 3.1   # the same against the oldest supported Airflow
    python3 run.py test -- -k trigger   # anything after -- goes to pytest

Needs only Python 3.10+ with pip and venv. Each Airflow line gets its own virtual
environment under .venv/, made on first use and reused while setup.cfg is unchanged.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
AIRFLOW_LINES = {"3.1": ">=3.1,<3.2", "3.2": ">=3.2,<3.3", "3.3": ">=3.3,<3.4"}
NEWEST = "3.3"


def environment(line: str) -> Path:
    """The virtual environment for one Airflow line, installed or refreshed as needed."""
    spec = f"apache-airflow{AIRFLOW_LINES[line]}"
    env = Path(os.environ.get("AIRFLOW_DBX_VENV") or ROOT / ".venv" / f"airflow-{line}")
    python = env / "bin" / "python"
    stamp = env / "airflow-dbx.stamp"
    wanted = hashlib.sha256((ROOT / "setup.cfg").read_bytes() + spec.encode()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return env
    print(f"Setting up {env} with {spec} (first run only) ...", flush=True)
    if not python.exists():
        venv.create(env, with_pip=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip", "setuptools", "wheel"], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}[test,emulator]", spec], check=True, cwd=ROOT)
    stamp.write_text(wanted)
    return env


def run_env(env: Path) -> dict[str, str]:
    """Variables for every command: the venv first on PATH, a throwaway-free Airflow home."""
    home = ROOT / ".airflow" / env.name
    home.mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        "PATH": f"{env / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "VIRTUAL_ENV": str(env),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags_examples"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def main() -> int:
    if sys.version_info < (3, 10):  # noqa: UP036 - this script is what tells users
        sys.exit("airflow-dbx needs Python 3.10 or newer")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["demo", "test"])
    parser.add_argument("--airflow", choices=sorted(AIRFLOW_LINES), default=NEWEST, help="Airflow line to use")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args()
    env = environment(args.airflow)
    variables = run_env(env)
    bin_dir = env / "bin"

    def call(*command: str) -> int:
        print("+", " ".join(command), flush=True)
        return subprocess.run(command, cwd=ROOT, env=variables, check=False).returncode

    if args.command == "demo":
        return call(str(bin_dir / "python"), "scripts/demo.py")
    for step in (
        (str(bin_dir / "ruff"), "check", "."),
        (str(bin_dir / "mypy"), "airflow_dbx"),
        (str(bin_dir / "python"), "-m", "pytest", *args.pytest_args),
    ):
        if code := call(*step):
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
