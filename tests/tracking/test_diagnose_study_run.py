"""`diagnose` on a study's own run says what that run is and where its trials' diagnoses
are, instead of "it did not finish an epoch" (it has a report, not a diagnosis)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from search.cli import cli
from tests.faults.expect import bad_input

TINY = ["--trials", "1", "--epochs", "1", "--train-pairs", "128", "--val-pairs", "64"]


def test_diagnose_on_a_study_run_points_to_its_trials_and_report(tmp_path: Path) -> None:
    home = ["--home", str(tmp_path)]
    searched = CliRunner().invoke(cli, [*home, "search", "--study", "st", *TINY, "--json"])
    assert searched.exit_code == 0, searched.output
    parent = json.loads(searched.stdout)["parent_run_id"]
    result = CliRunner().invoke(cli, [*home, "diagnose", parent[:8]])
    bad_input(result, f"run {parent}: is study st's run", "report --study st")
