"""The ``spargo`` dispatcher: overview, version, one-line errors, extras named (issue 11)."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pytest

import spargo
from spargo import cli


def test_bare_spargo_prints_the_overview_and_runs_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    for command in cli.COMMANDS:
        assert command in out
    assert out.startswith("usage: spargo")


def test_version_is_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"spargo {spargo.__version__}"


def test_python_dash_m_spargo_is_the_same_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "spargo", "--version"], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == f"spargo {spargo.__version__}"


def test_a_command_imports_only_its_own_module() -> None:
    code = (
        "import sys; from spargo.cli import build_parser; build_parser('sim');"
        "print(sorted(m for m in ('spargo.node.peer','spargo.node.lab','spargo.node.monitor',"
        "'spargo.topology.cli') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("command", "module", "extra"),
    [
        ("sim", "matplotlib.figure", "sim"),
        ("sim", "rich", "sim"),
        ("monitor", "rich", "monitor"),
        ("lab", "rich.console", "monitor"),
        ("node", "uvloop", "uvloop"),
        ("node", "sklearn", "sim"),
        ("sim", "some_unrelated_module", None),
    ],
)
def test_missing_extra_names_the_extra_of_the_command(
    command: str, module: str, extra: str | None
) -> None:
    assert cli.missing_extra(command, module) == extra


def _fake_command(exc: BaseException) -> Any:
    def run(args: Any) -> int:
        raise exc

    return SimpleNamespace(run=run, add_parser=lambda sub: sub.add_parser("sim"))


def test_a_missing_optional_module_is_one_line_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib")
    monkeypatch.setattr(cli, "_module", lambda name: _fake_command(missing))
    assert cli.main(["sim"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "'matplotlib'" in err
    assert "pip install 'spargo[sim]'" in err


def test_a_missing_module_of_no_extra_is_not_disguised(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = ModuleNotFoundError("No module named 'nope'", name="nope")
    monkeypatch.setattr(cli, "_module", lambda name: _fake_command(missing))
    with pytest.raises(ModuleNotFoundError):
        cli.main(["sim"])


def test_an_unknown_command_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["bogus"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1
