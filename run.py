#!/usr/bin/env python3
"""Set up a private environment and run the demo or the tests.

    python3 run.py demo                          # example DAGs through `airflow dags test` on the emulator
    python3 run.py test                          # ruff, mypy and pytest
    python3 run.py test --airflow 3.1            # the same against the oldest supported Airflow
    python3 run.py test -- -k trigger            # everything after -- goes to pytest, verbatim
    python3 run.py test --airflow 3.1 -- tests/deployment -x
    python3 run.py setup --airflow 3.2           # only set up that line's environment

Options go before `--`, in any order around the command; pytest paths may also come before it.
Needs only Python 3.10+ with pip and venv. Each Airflow line gets its own virtual environment
under .venv/, made on first use and reused while setup.cfg is unchanged. The browser and
deployment suites' extra packages are installed when they are asked for
(AIRFLOW_DBX_BROWSER=1, AIRFLOW_DBX_DEPLOYMENT=1, or their directory on the command line).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import subprocess
import sys
import time
import venv
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

ROOT = Path(__file__).resolve().parent
AIRFLOW_LINES = {"3.1": ">=3.1,<3.2", "3.2": ">=3.2,<3.3", "3.3": ">=3.3,<3.4"}
NEWEST = "3.3"
# Pins an Airflow line needs on top of its own requirements, passed to pip with the Airflow spec.
# Airflow 3.2 (up to 3.2.2) was released before two changes it does not survive; the README gives
# users the same pins. fastapi: from 0.156.1, Body() no longer sets discriminator=None, so 3.2's
# `Field(discriminator=<function>)` on the task-state union survives and pydantic rejects it: the
# execution API no longer imports. 3.3 caps fastapi below 0.137 itself, and the cap keeps cadwyn
# at 7.0.0 (7.1+ needs fastapi 0.137.1+). svcs: 26.2 removes a lifespan's registry from app.state
# when the lifespan ends, and 3.2's in-process execution API (airflow dags test) lets its lifespan
# end once the helper object is collected, while the transport still serves requests (3.3 rewrote
# that helper). 25.1.0, current when 3.2.2 shipped, is what the pin gets. sqlalchemy: 2.1 deprecates
# `lazy="noload"`, which 3.2's task instance and XCom models declare, so loading them warns (an
# error under -W error, as the tests run); 3.3's models no longer declare it.
LINE_PINS: dict[str, tuple[str, ...]] = {"3.2": ("fastapi<0.137", "svcs<26", "sqlalchemy<2.1")}
# An optional suite -> (the variable that turns it on, its directory under tests/).
OPTIONAL_SUITES = {
    "browser": ("AIRFLOW_DBX_BROWSER", "tests/browser"),
    "deployment": ("AIRFLOW_DBX_DEPLOYMENT", "tests/deployment"),
}


@dataclass(frozen=True)
class Invocation:
    """What the command line asks for."""

    command: str
    airflow: str
    pytest_args: tuple[str, ...]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["demo", "test", "setup"])
    parser.add_argument("--airflow", choices=sorted(AIRFLOW_LINES), default=NEWEST, help="Airflow line to use")
    parser.add_argument("paths", nargs="*", help="pytest paths; put pytest options after --")
    return parser


def parse_args(argv: Sequence[str]) -> Invocation:
    """Split the command line at the first ``--``: options before it, pytest's arguments after.

    ``argparse`` alone cannot do this reliably: a positional list before an option, and ``--``
    itself, are handled differently across Python versions.
    """
    argv = list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    ours, for_pytest = argv[:split], argv[split + 1 :]
    parser = _parser()
    args = parser.parse_intermixed_args(ours)
    if any(arg == "--airflow" or arg.startswith("--airflow=") for arg in for_pytest):
        parser.error("--airflow goes before `--`: everything after `--` is passed to pytest")
    pytest_args = (*args.paths, *for_pytest)
    if args.command != "test" and pytest_args:
        parser.error(f"{args.command} takes no pytest arguments (got {' '.join(pytest_args)})")
    return Invocation(command=args.command, airflow=args.airflow, pytest_args=pytest_args)


def _asks_for(pytest_args: Sequence[str], directory: str) -> bool:
    """Whether a pytest argument names ``directory`` or something inside it."""
    for arg in pytest_args:
        path = arg.split("::", 1)[0].rstrip("/")
        if not path or path.startswith("-"):
            continue
        resolved = (ROOT / path).resolve()
        target = ROOT / directory
        if resolved == target or target in resolved.parents:
            return True
    return False


def extras_for(invocation: Invocation, environ: Mapping[str, str]) -> frozenset[str]:
    """The package extras the command needs: ``emulator`` (its SQL engine) for the demo and the tests,
    ``test`` for the tests, plus each optional suite asked for."""
    if invocation.command == "demo":
        return frozenset({"emulator"})
    # setup: the environment the tests would use, so a later test command installs nothing.
    extras = {"test", "emulator", "openlineage"}
    for extra, (variable, directory) in OPTIONAL_SUITES.items():
        # "1" asks for a suite; the deployment suite also takes "core" (a smaller set of scenarios).
        if environ.get(variable, "0") not in ("", "0") or _asks_for(invocation.pytest_args, directory):
            extras.add(extra)
    if "--deployment" in invocation.pytest_args:
        extras.add("deployment")
    return frozenset(extras)


def _display(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _read_stamp(stamp: Path) -> tuple[str, frozenset[str]]:
    """What a venv was set up from, and with which extras; nothing for a missing or older stamp."""
    try:
        value = json.loads(stamp.read_text())
        return str(value["source"]), frozenset(str(extra) for extra in value["extras"])
    except (OSError, ValueError, TypeError, KeyError):
        return "", frozenset()


def requirements(line: str) -> tuple[str, ...]:
    """What pip installs for an Airflow line besides this package: Airflow itself and the line's pins."""
    return (f"apache-airflow{AIRFLOW_LINES[line]}", *LINE_PINS.get(line, ()))


def environment(line: str, extras: frozenset[str]) -> Path:
    """The virtual environment for one Airflow line with ``extras``, installed or completed as needed.

    The stamp records what was installed for which setup.cfg; a changed setup.cfg reinstalls, a
    missing extra is added, and extras installed before are kept.
    """
    airflow_reqs = requirements(line)
    env = Path(os.environ.get("AIRFLOW_DBX_VENV") or ROOT / ".venv" / f"airflow-{line}")
    python = env / "bin" / "python"
    stamp = env / "airflow-dbx.stamp"
    source = hashlib.sha256((ROOT / "setup.cfg").read_bytes() + " ".join(airflow_reqs).encode()).hexdigest()
    recorded, kept = _read_stamp(stamp) if python.exists() else ("", frozenset())
    fresh = recorded != source
    if not fresh and extras <= kept:
        return env
    wanted = sorted(extras | kept)
    suffix = f"[{','.join(wanted)}]" if wanted else ""
    log = env / "setup.log"
    started = time.monotonic()
    if fresh:
        print(f"Setting up Airflow {line} environment in {_display(env)} (a few minutes, once) ...", flush=True)
    else:
        print(f"Adding the {', '.join(sorted(extras - kept))} extra to {_display(env)} ...", flush=True)
    if not python.exists():
        venv.create(env, with_pip=True)
    print(f"  installing {' '.join(airflow_reqs)} and airflow-dbx{suffix} (full log: {_display(log)})", flush=True)
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off"]
    steps = [[*pip, "--upgrade", "pip", "setuptools", "wheel"]] if fresh else []
    steps.append([*pip, "-e", f"{ROOT}{suffix}", *airflow_reqs])
    code = 0
    with _one_install_at_a_time(), log.open("w") as out:
        for step in steps:
            out.write(f"$ {' '.join(step)}\n")
            out.flush()
            code = subprocess.run(step, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, check=False).returncode
            if code:
                break
    if code:
        stamp.unlink(missing_ok=True)
        tail = log.read_text(errors="replace").splitlines()[-25:]
        print("\n".join(f"  | {text}" for text in tail), file=sys.stderr)
        sys.exit(f"Setup failed (pip exited {code}); the whole log is {log}")
    stamp.write_text(json.dumps({"source": source, "extras": wanted}))
    print(f"  ready after {time.monotonic() - started:.0f} s", flush=True)
    return env


@contextlib.contextmanager
def _one_install_at_a_time() -> Iterator[None]:
    """Hold the checkout's install lock: an editable install writes into the source tree, so
    two Airflow lines set up at once (CI runs lines side by side) take turns."""
    lock = ROOT / ".venv" / "install.lock"
    lock.parent.mkdir(exist_ok=True)
    with lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_env(env: Path) -> dict[str, str]:
    """Variables for every command: the venv first on PATH, a throwaway-free Airflow home."""
    home = ROOT / ".airflow" / env.name
    home.mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        "PATH": f"{env / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "VIRTUAL_ENV": str(env),
        "AIRFLOW_HOME": str(home),
        # mypy's cache holds one Airflow line's types: each line keeps its own, so lines can be
        # checked side by side in one checkout.
        "MYPY_CACHE_DIR": str(env / "mypy-cache"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags_examples"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def main(argv: Sequence[str] | None = None) -> int:
    if sys.version_info < (3, 10):  # noqa: UP036 - this script is what tells users
        sys.exit("airflow-dbx needs Python 3.10 or newer")
    invocation = parse_args(sys.argv[1:] if argv is None else argv)
    env = environment(invocation.airflow, extras_for(invocation, os.environ))
    variables = run_env(env)
    bin_dir = env / "bin"

    def call(*command: str) -> int:
        print("+", " ".join(command), flush=True)
        return subprocess.run(command, cwd=ROOT, env=variables, check=False).returncode

    if invocation.command == "demo":
        return call(str(bin_dir / "python"), "scripts/demo.py")
    if invocation.command == "setup":
        print(f"{_display(env)} is ready", flush=True)
        return 0
    for step in (
        (str(bin_dir / "ruff"), "check", "."),
        (str(bin_dir / "mypy"), "airflow_dbx"),
        (str(bin_dir / "python"), "-m", "pytest", *invocation.pytest_args),
    ):
        if code := call(*step):
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
