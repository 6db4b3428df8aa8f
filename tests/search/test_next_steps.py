"""What `search` tells the user to do next: no `promote` that would be refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from search.cli import cli

# One real tracked trial that cannot learn (~10 s).
pytestmark = pytest.mark.slow

HOPELESS = ["--lr", "1e-7", "--optimizer", "sgd", "--momentum", "0", "--head", "sq"]
SMALL = ["--epochs", "1", "--train-pairs", "64", "--val-pairs", "32", "--device", "cpu"]


def test_a_search_where_nothing_converged_offers_more_trials_not_promote(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    args = ["search", "--home", home, "--study", "s", "--trials", "1", "--no-baseline"]
    result = CliRunner().invoke(cli, [*args, *HOPELESS, "--dropout", "0", *SMALL])
    assert result.exit_code == 0, result.output
    assert "promote the best converged trial" not in result.output
    assert "nothing to promote: no trial converged" in result.output
    assert f"siamese-lab search --study s --trials N --home {home}" in result.output
    refused = CliRunner().invoke(cli, ["promote", "--study", "s", "--home", home])
    assert refused.exit_code == 2 and "no converged" in refused.output


def test_a_search_that_ran_no_trial_offers_no_next_step_about_models(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    result = CliRunner().invoke(cli, ["search", "--home", home, "--study", "s", "--trials", "0"])
    assert result.exit_code == 0, result.output
    assert "promote" not in result.output and "nothing to promote" not in result.output
