"""The `siamese-lab` command line: parse, build a config, one library call, print."""

from __future__ import annotations

from pathlib import Path

import click

from search.cli_common import LabGroup
from search.cli_search import report, search, worker
from search.cli_tracking import diagnose_run, predict, promote, ui
from search.cli_train import data, train


@click.group(cls=LabGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    type=click.Path(path_type=Path),
    envvar="SIAMESE_LAB_HOME",
    help="folder of the embedded stores and checkpoints (default ~/.siamese-lab)",
)
@click.version_option(package_name="siamese-lab")
def cli(home: Path | None) -> None:
    """Train, search and diagnose Siamese image-pair networks."""


cli.add_command(train)
cli.add_command(data)
for command in (search, worker, report, diagnose_run, promote, predict, ui):
    cli.add_command(command)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
