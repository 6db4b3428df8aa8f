"""The command line loads each command on first use: help answers without the heavy imports."""

import subprocess
import sys
from pathlib import Path

import click
import pytest

from search.cli import COMMANDS, cli

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "mlflow", "optuna", "matplotlib")


def _imported_after(code: str) -> list[str]:
    probe = f"{code}\nimport sys\nprint('imported:', *(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    marker = result.stdout.rindex("imported:")
    return result.stdout[marker:].split()[1:]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_listed_line_is_the_commands_own(name: str) -> None:
    command = cli.get_command(click.Context(cli), name)
    assert isinstance(command, click.Command) and command.name == name
    assert COMMANDS[name][2] == command.get_short_help_str(limit=1000)


def test_help_lists_every_command_without_importing_torch_mlflow_or_optuna() -> None:
    shown = _imported_after(
        "from search.cli import cli\n"
        "try:\n    cli(['--help'])\nexcept SystemExit as exit:\n    assert exit.code == 0"
    )
    assert shown == []


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_commands_own_help_imports_nothing_heavy(name: str) -> None:
    args = [name, "check", "--help"] if name == "data" else [name, "--help"]
    shown = _imported_after(
        "from search.cli import cli\n"
        f"try:\n    cli({args!r})\nexcept SystemExit as exit:\n    assert exit.code == 0"
    )
    assert shown == []


def test_train_without_tracking_imports_neither_mlflow_nor_optuna_nor_matplotlib() -> None:
    # `train --no-track` needs torch; logging (MLflow, matplotlib) and search (Optuna) stay out.
    code = (
        "import search.cli.train, search.training, search.printing\n"
        "from search.cli.common import current_env"
    )
    assert _imported_after(code) == ["torch"]


def test_an_unknown_command_is_bad_usage() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "search.cli", "trian"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "No such command 'trian'. Did you mean 'train'?" in result.stderr


def test_completing_a_command_name_imports_nothing_heavy() -> None:
    shown = _imported_after(
        "import click\nfrom search.cli import cli\n"
        "items = cli.shell_complete(click.Context(cli), 'tr')\n"
        "assert [item.value for item in items] == ['train'], items"
    )
    assert shown == []


def test_reading_runs_and_studies_never_imports_torch() -> None:
    # diagnose, report and promote read MLflow and Optuna; torch alone costs ~0.7 s.
    code = (
        "import search.cli.tracking, search.cli.search, tracking.mlflow_tracker\n"
        "import tracking.readback, tracking.registry, siamese.diagnosis\n"
        "import search.report, search.setup, search.storage"
    )
    assert "torch" not in _imported_after(code)
