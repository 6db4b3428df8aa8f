"""`siamese-lab data check` and `siamese-lab data export`: the data alone, no training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from search.cli.common import data_options, print_json
from siamese.config import DataConfig, build_data_config


@click.group()
def data() -> None:
    """Inspect the data alone."""


@data.command("check")
@data_options(DataConfig())
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def check(seed: int, as_json: bool, **flags: Any) -> None:
    """Run the pre-flight data checks without training (exit 2 on an error)."""
    from siamese.data import prepare_data

    config = build_data_config(flags, seed)
    summary = prepare_data(config).summary()
    if as_json:
        print_json({"data": config.source, **summary})
        return
    click.echo(
        f"data {config.source}: {summary['classes']} classes; images {summary['images']}; "
        f"pairs {summary['pairs']}; positive fraction {summary['positive_fraction']:.2f}"
    )
    found = summary.get("warnings")
    warnings = [str(w) for w in found] if isinstance(found, list) else []
    for warning in warnings:
        click.echo(f"warning: {warning}")
    click.echo("ok: no errors" + (f", {len(warnings)} warning(s)" if warnings else ""))


@data.command("export")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="a new folder (it must not exist yet)",
)
@click.option(
    "--pairs",
    "count",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="how many test pairs",
)
@data_options(DataConfig())
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="the seed of the split: the one the model was trained with",
)
def export(out: Path, count: int, seed: int, **flags: Any) -> None:
    """Write held-out test pairs as PNG files plus pairs.csv, to try `predict` on."""
    from siamese.data import prepare_data
    from siamese.data.export import PAIRS_FILE, export_test_pairs

    if flags.get("inject_bug") not in (None, "none"):
        raise click.UsageError("--inject-bug: not for export; its pairs would show one image twice")
    config = build_data_config(flags, seed)
    exported = export_test_pairs(prepare_data(config), out, count)
    different = exported.pairs - exported.same
    click.echo(
        f"wrote {exported.pairs} test pairs ({exported.same} same, {different} different) and "
        f"{exported.images} images to {out}; no run with --seed {seed} has trained on them"
    )
    if exported.pairs < count:
        asked = click.get_current_context().get_parameter_source("count")
        given = "--pairs" if asked is not click.core.ParameterSource.DEFAULT else "the default"
        click.echo(
            f"note: {given} {count}: the test split has {exported.pairs} (as many as "
            f"--val-pairs); all of them are here"
        )
    click.echo(
        f"try: siamese-lab predict --model models:/siamese@champion --pairs {out / PAIRS_FILE}"
    )
