"""Out-of-range numbers on the command line exit 2 naming the flag, before any work."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from search.cli import cli


@pytest.mark.parametrize(
    "args,flag",
    [
        (["search", "--trials", "-1"], "--trials"),
        (["search", "--jobs", "0"], "--jobs"),
        (["search", "--timeout", "0"], "--timeout"),
        (["worker", "--study", "s", "--storage", "journal:x", "--trials", "0"], "--trials"),
        (["ui", "--port", "99999"], "--port"),
    ],
)
def test_out_of_range_flags_exit_2(tmp_path: Path, args: list[str], flag: str) -> None:
    result = CliRunner().invoke(cli, [*args, "--home", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{flag}'" in result.output
    assert not list(tmp_path.iterdir())  # no study, store or checkpoint was created
