"""run.py's command line: every documented form, in the orders people type them. No venv is built."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def _load_run_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("airflow_dbx_run_script", ROOT / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


run = _load_run_script()


def parsed(*argv: str) -> tuple[str, str, tuple[str, ...]]:
    invocation = run.parse_args(argv)
    return invocation.command, invocation.airflow, invocation.pytest_args


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["demo"], ("demo", "3.3", ())),
        (["test"], ("test", "3.3", ())),
        (["test", "--airflow", "3.1"], ("test", "3.1", ())),
        (["--airflow", "3.1", "test"], ("test", "3.1", ())),
        (["--airflow=3.2", "demo"], ("demo", "3.2", ())),
        (["test", "--", "-k", "trigger"], ("test", "3.3", ("-k", "trigger"))),
        (["test", "--airflow", "3.1", "--", "tests/deployment", "-x"], ("test", "3.1", ("tests/deployment", "-x"))),
        (["test", "--airflow", "3.1", "--", "-x"], ("test", "3.1", ("-x",))),
        (["--airflow", "3.1", "test", "--", "-k", "x"], ("test", "3.1", ("-k", "x"))),
        (["test", "tests/deployment", "--airflow", "3.1"], ("test", "3.1", ("tests/deployment",))),
        (["test", "--airflow", "3.1", "tests/deployment"], ("test", "3.1", ("tests/deployment",))),
        (["test", "tests/unit", "--", "-x"], ("test", "3.3", ("tests/unit", "-x"))),
        # Only the first -- splits: later ones belong to pytest, verbatim.
        (["test", "--", "-k", "x", "--", "y"], ("test", "3.3", ("-k", "x", "--", "y"))),
        (["test", "--"], ("test", "3.3", ())),
    ],
)
def test_documented_forms(argv: list[str], expected: tuple[str, str, tuple[str, ...]]) -> None:
    assert parsed(*argv) == expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["test", "--", "-k", "x", "--airflow", "3.1"], "--airflow goes before `--`"),
        (["test", "--", "--airflow=3.1"], "--airflow goes before `--`"),
        (["demo", "--", "-x"], "demo takes no pytest arguments"),
        (["setup", "tests/unit"], "setup takes no pytest arguments"),
        (["test", "--airflow", "2.10"], "invalid choice"),
        (["tset"], "invalid choice"),
        ([], "required"),
        (["test", "-x"], "unrecognized arguments: -x"),
    ],
)
def test_mistakes_are_refused_with_a_reason(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run.parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def extras(*argv: str, **environ: str) -> set[str]:
    return set(run.extras_for(run.parse_args(argv), environ))


def test_the_demo_needs_the_emulator_extra_only() -> None:
    assert extras("demo") == {"emulator"}


def test_setup_prepares_what_the_same_test_command_would_need() -> None:
    assert extras("setup", AIRFLOW_DBX_DEPLOYMENT="core") == extras("test", AIRFLOW_DBX_DEPLOYMENT="core")
    assert "deployment" in extras("setup", AIRFLOW_DBX_DEPLOYMENT="core")


def test_the_tests_need_the_test_and_emulator_extras_only_by_default() -> None:
    assert extras("test") == {"test", "emulator", "openlineage"}
    assert extras("test", "--", "-k", "browser or deployment") == {"test", "emulator", "openlineage"}


@pytest.mark.parametrize(
    ("argv", "environ", "expected"),
    [
        (["test"], {"AIRFLOW_DBX_BROWSER": "1"}, {"test", "emulator", "openlineage", "browser"}),
        (["test"], {"AIRFLOW_DBX_DEPLOYMENT": "1"}, {"test", "emulator", "openlineage", "deployment"}),
        (["test"], {"AIRFLOW_DBX_DEPLOYMENT": "core"}, {"test", "emulator", "openlineage", "deployment"}),
        (["test"], {"AIRFLOW_DBX_BROWSER": "0", "AIRFLOW_DBX_DEPLOYMENT": ""}, {"test", "emulator", "openlineage"}),
        (["test", "--", "tests/deployment", "-x"], {}, {"test", "emulator", "openlineage", "deployment"}),
        (["test", "tests/deployment/"], {}, {"test", "emulator", "openlineage", "deployment"}),
        (["test", "--", "tests/browser/test_airflow_ui.py::test_x"], {}, {"test", "emulator", "openlineage", "browser"}),
        (["test", "--", "tests/deployment", "--deployment"], {}, {"test", "emulator", "openlineage", "deployment"}),
        (["test", "--", "--deployment"], {}, {"test", "emulator", "openlineage", "deployment"}),
        (["test", "--", "tests"], {}, {"test", "emulator", "openlineage"}),
        (["test", "--", "tests/browser_helpers.py"], {}, {"test", "emulator", "openlineage"}),
    ],
)
def test_optional_suites_bring_their_extras(argv: list[str], environ: dict[str, str], expected: set[str]) -> None:
    assert extras(*argv, **environ) == expected


def test_every_extra_run_py_asks_for_exists_in_setup_cfg() -> None:
    import configparser

    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    declared = set(config["options.extras_require"])
    assert {"test", "emulator", *run.OPTIONAL_SUITES} <= declared
    assert "selenium" not in config["options.extras_require"]["test"]
    assert "psycopg2" not in config["options.extras_require"]["test"]


class _Pip:
    """Stands in for subprocess.run: records pip commands and makes the venv's python appear."""

    def __init__(self, env: Path, returncode: int = 0) -> None:
        self.env = env
        self.returncode = returncode
        self.commands: list[list[str]] = []

    def __call__(self, command: list[str], **kwargs: object) -> object:
        self.commands.append(command)
        stdout = kwargs.get("stdout")
        if hasattr(stdout, "write"):
            stdout.write("pip says a great deal here\n")  # type: ignore[union-attr]
        return type("Done", (), {"returncode": self.returncode})()


@pytest.fixture
def fake_venv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, _Pip]:
    env = tmp_path / "venv"
    monkeypatch.setenv("AIRFLOW_DBX_VENV", str(env))

    def create(path: Path, with_pip: bool) -> None:
        (Path(path) / "bin").mkdir(parents=True)
        (Path(path) / "bin" / "python").write_text("")

    monkeypatch.setattr(run.venv, "create", create)
    pip = _Pip(env)
    monkeypatch.setattr(run.subprocess, "run", pip)
    return env, pip


def _installed_target(command: list[str]) -> str:
    return next(arg for arg in command if arg.startswith(str(run.ROOT)))


def test_the_stamp_accounts_for_extras(fake_venv: tuple[Path, _Pip], capsys: pytest.CaptureFixture[str]) -> None:
    env, pip = fake_venv
    run.environment("3.3", frozenset())
    assert [_installed_target(c) for c in pip.commands if "-e" in c] == [str(run.ROOT)]
    assert json.loads((env / "airflow-dbx.stamp").read_text())["extras"] == []

    pip.commands.clear()
    run.environment("3.3", frozenset())
    assert pip.commands == []  # nothing new asked for: reused as is

    run.environment("3.3", frozenset({"test", "browser"}))
    assert [_installed_target(c) for c in pip.commands] == [f"{run.ROOT}[browser,test]"]

    pip.commands.clear()
    run.environment("3.3", frozenset({"deployment"}))
    # Extras installed earlier stay in the request, so pip never has to choose between them.
    assert [_installed_target(c) for c in pip.commands] == [f"{run.ROOT}[browser,deployment,test]"]

    pip.commands.clear()
    run.environment("3.3", frozenset({"test"}))
    assert pip.commands == []
    output = capsys.readouterr().out
    assert "pip says" not in output
    assert len(output.splitlines()) <= 12


def test_a_changed_airflow_line_or_setup_cfg_reinstalls(fake_venv: tuple[Path, _Pip]) -> None:
    env, pip = fake_venv
    run.environment("3.3", frozenset({"test"}))
    stamp = env / "airflow-dbx.stamp"
    recorded = json.loads(stamp.read_text())
    stamp.write_text(json.dumps({**recorded, "source": "an older setup.cfg"}))
    pip.commands.clear()
    run.environment("3.3", frozenset())
    assert any("--upgrade" in c for c in pip.commands)
    assert [_installed_target(c) for c in pip.commands if "-e" in c] == [f"{run.ROOT}[test]"]


def test_a_failed_setup_names_its_log(fake_venv: tuple[Path, _Pip], capsys: pytest.CaptureFixture[str]) -> None:
    env, pip = fake_venv
    pip.returncode = 1
    with pytest.raises(SystemExit) as exit_info:
        run.environment("3.1", frozenset({"test"}))
    assert str(env / "setup.log") in str(exit_info.value.code)
    assert "pip says a great deal here" in capsys.readouterr().err
    assert not (env / "airflow-dbx.stamp").exists()


def test_each_airflow_line_installs_airflow_and_its_pins() -> None:
    assert run.requirements("3.1") == ("apache-airflow>=3.1,<3.2",)
    assert run.requirements("3.3") == ("apache-airflow>=3.3,<3.4",)
    # Airflow 3.2's execution API breaks with fastapi 0.156+ and svcs 26+, and its models warn
    # under SQLAlchemy 2.1 (see LINE_PINS).
    assert run.requirements("3.2") == ("apache-airflow>=3.2,<3.3", "fastapi<0.137", "svcs<26", "sqlalchemy<2.1")
    assert set(run.LINE_PINS) <= set(run.AIRFLOW_LINES)


def test_the_pins_go_to_pip_with_the_airflow_spec(fake_venv: tuple[Path, _Pip]) -> None:
    _, pip = fake_venv
    run.environment("3.2", frozenset({"test"}))
    (install,) = [c for c in pip.commands if "-e" in c]
    assert install[install.index("-e") + 1 :] == [f"{run.ROOT}[test]", *run.requirements("3.2")]


def test_changed_pins_reinstall(fake_venv: tuple[Path, _Pip], monkeypatch: pytest.MonkeyPatch) -> None:
    _, pip = fake_venv
    run.environment("3.2", frozenset())
    pip.commands.clear()
    monkeypatch.setitem(run.LINE_PINS, "3.2", ("fastapi<0.137",))
    run.environment("3.2", frozenset())
    assert any("--upgrade" in c for c in pip.commands)


def test_the_readme_gives_users_the_same_pins() -> None:
    readme = (ROOT / "README.rst").read_text()
    for line, pins in run.LINE_PINS.items():
        spec = f"'apache-airflow{run.AIRFLOW_LINES[line]}'"
        assert f"pip install {spec} {' '.join(repr(pin) for pin in pins)} ." in readme
