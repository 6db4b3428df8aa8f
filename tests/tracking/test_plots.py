"""The curve figure is made once and given each run's data: what it draws for a run must
not depend on the runs drawn before it."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from siamese.train.history import EpochRecord, History
from tracking.drawing_notes import hush_matplotlib_notes
from tracking.plots import CurvesFigure


def _history(epochs: int, scale: float, nan_at: int | None = None) -> History:
    records = []
    for epoch in range(1, epochs + 1):
        loss = math.nan if epoch == nan_at else scale / epoch
        records.append(
            EpochRecord(
                epoch, loss, loss * 1.1, 0.5 + 0.04 * epoch, 0.5 + 0.05 * epoch,
                {"conv1": 0.1}, scale * 1e-3 / epoch, 0.0, 0.0, 0.02 * scale, 0.5, 1.0, 1.0,
            )
        )  # fmt: skip
    return History({}, records=records)


RUNS = {
    "long": _history(5, 3.0),
    "diverged": _history(3, 0.5, nan_at=3),
    "one epoch": _history(1, 100.0),
}


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.mark.parametrize("last", list(RUNS))
def test_a_reused_figure_draws_what_a_new_one_draws(tmp_path: Path, last: str) -> None:
    reused = CurvesFigure()
    for name, history in RUNS.items():  # every run first, so the last one follows others
        reused.draw(history, tmp_path / f"{name}.png", f"trial · {name}")
    reused.draw(RUNS[last], tmp_path / "reused.png", "the run")
    CurvesFigure().draw(RUNS[last], tmp_path / "new.png", "the run")
    assert np.array_equal(_pixels(tmp_path / "reused.png"), _pixels(tmp_path / "new.png"))
    other = next(name for name in RUNS if name != last)
    assert not np.array_equal(_pixels(tmp_path / "reused.png"), _pixels(tmp_path / f"{other}.png"))


@pytest.mark.parametrize("order", [["long", "one epoch"], ["one epoch", "long"]])
def test_each_panel_shows_all_of_its_runs_data(tmp_path: Path, order: list[str]) -> None:
    """The limits follow each run's data: a big run's range does not linger after it, and a
    small run's does not cut the next off."""
    figure = CurvesFigure()
    for name in order:
        history = RUNS[name]
        figure.draw(history, tmp_path / f"{name}.png", name)
        for line in figure.lines:
            ax = line.axes
            assert ax is not None
            xs, ys = (np.asarray(values, dtype=float) for values in line.get_data())
            ys = ys[np.isfinite(ys)]
            (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
            assert x0 <= xs.min() and xs.max() <= x1, (name, line.get_label())
            assert y0 <= ys.min() and ys.max() <= y1, (name, line.get_label())
            if ax.get_yscale() == "linear":  # fitted, not stuck at an earlier run's range
                drawn = np.concatenate([np.asarray(other.get_ydata(), float) for other in ax.lines])
                drawn = drawn[np.isfinite(drawn)]
                span = drawn.max() - drawn.min()
                assert (y1 - y0) <= 3 * max(span, 0.1 * abs(drawn.max()), 0.02), name


def test_a_run_stuck_at_chance_draws_without_warnings(tmp_path: Path) -> None:
    # The same loss, AUC and accuracy (0.5, on the chance line) every epoch: panels with
    # nothing to scale. matplotlib's notes about them (numpy's divide-by-zero among them)
    # went to the user's terminal, between a search's progress lines.
    stuck = History(
        {},
        records=[
            EpochRecord(e, 0.69, 0.69, 0.5, 0.5, {"conv1": 0.0}, 1e-3, 0.0, 0.0, 0.2, 0.5, 1.0, 1.0)
            for e in range(1, 4)
        ],
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # what a plain `siamese-lab` process shows
        hush_matplotlib_notes()  # as importing tracking.plots does there
        path = CurvesFigure().draw(stuck, tmp_path / "stuck.png", "stuck")
    assert path.is_file() and _pixels(path).std() > 0  # a picture, not a blank
    assert [str(w.message) for w in caught] == []


@pytest.mark.parametrize(
    "note",
    [
        'Creating legend with loc="best" can be slow with large amounts of data.',
        "Attempting to set identical low and high ylims makes transformation singular; "
        "automatically expanding.",
    ],
)
def test_matplotlibs_notes_about_its_drawing_are_hushed_and_nothing_else(note: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        hush_matplotlib_notes()
        warnings.warn(note, UserWarning, stacklevel=1)
        warnings.warn("a warning of the user's own", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["a warning of the user's own"]


def test_the_command_line_hushes_them_from_its_main_thread() -> None:
    # Installed only where the curves are drawn (the writer thread), the filters were lost
    # when the main thread was inside a catch_warnings block (Optuna's, around each trial).
    from click.testing import CliRunner

    from search.cli import cli

    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        warnings.simplefilter("default")
        assert CliRunner().invoke(cli, ["--version"]).exit_code == 0
        warnings.warn('Creating legend with loc="best" can be slow', UserWarning, stacklevel=1)
    assert caught == []
