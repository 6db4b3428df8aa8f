"""The curve figure logged with every run (matplotlib, no display needed)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

# A bare Figure on an Agg canvas needs no pyplot, display or figure manager: safe on
# headless machines and in any thread. Everything drawing needs is imported here, at once,
# not on first savefig: this module is imported in the MLflow tracker's writer thread (or,
# for a tracker that draws at once, with Ctrl-C held), where Ctrl-C cannot leave a
# half-done import of matplotlib to break every later one.
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, NullLocator

from siamese.diagnosis_rules import COLLAPSE_STD, HEALTHY_UPDATE_RATIO
from siamese.train.history import EpochRecord, History
from tracking.drawing_notes import hush_matplotlib_notes

hush_matplotlib_notes()  # for a program that draws without the command line

# (panel, record field, label): the curves, one line each; the panels are loss, validation,
# update ratio (log scale) and output spread, in reading order.
CURVES = (
    (0, "train_loss", "train_loss"),
    (0, "val_loss", "val_loss"),
    (1, "val_auc", "val_auc"),
    (1, "val_acc", "val_acc"),
    (2, "update_ratio", "update/weight"),
    (3, "output_std", "std of P(same)"),
)


def _value(record: EpochRecord, field: str) -> float:
    value = float(getattr(record, field))
    return max(value, 1e-12) if field == "update_ratio" else value  # a log axis


class CurvesFigure:
    """The figure, its panels, lines and legends, made once and given each run's data:
    building them is about half of drawing one figure (legends, ticks, text), and a search
    draws one per trial. The picture is the one a new figure would give (tested pixel for
    pixel). One run at a time: a lock, for any thread that draws."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.fig = Figure(figsize=(10, 7))
        FigureCanvasAgg(self.fig)
        self.axes = list(self.fig.subplots(2, 2).flat)
        _, metric_ax, ratio_ax, std_ax = self.axes
        self.lines: list[Line2D] = [
            self.axes[panel].plot([], [], "o-", label=label)[0] for panel, _, label in CURVES
        ]
        ratio_ax.set_yscale("log")
        metric_ax.axhline(0.5, color="grey", linestyle=":", label="chance")
        ratio_ax.axhline(
            HEALTHY_UPDATE_RATIO,
            color="green",
            linestyle=":",
            label=f"healthy ~{HEALTHY_UPDATE_RATIO:g}",
        )
        std_ax.axhline(COLLAPSE_STD, color="red", linestyle=":", label="collapse threshold")
        for ax, title in zip(
            self.axes, ("loss", "validation", "update ratio per step", "output spread"), strict=True
        ):
            ax.set_title(title, y=1.0)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
            ax.yaxis.set_minor_locator(NullLocator())
            ax.legend(fontsize=8)
        self.title = self.fig.suptitle("")
        # Drawing time is mostly ticks and text measuring: fixed margins instead of
        # tight_layout, titles at a fixed height (no overlap search), no minor log ticks.
        self.fig.subplots_adjust(
            left=0.08, right=0.98, bottom=0.08, top=0.9, hspace=0.35, wspace=0.2
        )

    def draw(self, history: History, path: Path, title: str) -> Path:
        epochs = [r.epoch for r in history.records]
        with self.lock:
            for line, (_, field, _) in zip(self.lines, CURVES, strict=True):
                line.set_data(epochs, [_value(r, field) for r in history.records])
            # The panel of one value again: numpy's divide-by-zero on the way to widening it
            # (np.errstate is per thread: the writer thread draws).
            with np.errstate(divide="ignore", invalid="ignore"):
                for ax in self.axes:
                    ax.relim()
                    ax.autoscale_view()
                self.title.set_text(title)
                self.fig.savefig(path, dpi=80, pil_kwargs={"compress_level": 1})
        return path


_figure: CurvesFigure | None = None
_made = threading.Lock()


def plot_curves(history: History, path: Path, title: str) -> Path:
    """Loss, validation AUC/accuracy, update ratio and output spread, one panel each."""
    global _figure
    with _made:
        if _figure is None:
            _figure = CurvesFigure()
        figure = _figure
    return figure.draw(history, path, title)
