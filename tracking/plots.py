"""The curve figure logged with every run (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

# A bare Figure on an Agg canvas needs no pyplot, display or figure manager: safe on
# headless machines and in any thread. Everything drawing needs is imported here, at once,
# not on first savefig: tracking imports this module with Ctrl-C held (a half-done import
# of matplotlib breaks every later one).
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullLocator

from siamese.diagnosis_rules import COLLAPSE_STD, HEALTHY_UPDATE_RATIO
from siamese.train.history import History


def plot_curves(history: History, path: Path, title: str) -> Path:
    """Loss, validation AUC/accuracy, update ratio and output spread, one panel each."""
    epochs = [r.epoch for r in history.records]
    fig = Figure(figsize=(10, 7))
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2)
    (loss_ax, metric_ax), (ratio_ax, std_ax) = axes
    loss_ax.plot(epochs, [r.train_loss for r in history.records], "o-", label="train_loss")
    loss_ax.plot(epochs, [r.val_loss for r in history.records], "o-", label="val_loss")
    loss_ax.set_title("loss", y=1.0)
    metric_ax.plot(epochs, [r.val_auc for r in history.records], "o-", label="val_auc")
    metric_ax.plot(epochs, [r.val_acc for r in history.records], "o-", label="val_acc")
    metric_ax.axhline(0.5, color="grey", linestyle=":", label="chance")
    metric_ax.set_title("validation", y=1.0)
    ratio_ax.semilogy(
        epochs, [max(r.update_ratio, 1e-12) for r in history.records], "o-", label="update/weight"
    )
    ratio_ax.axhline(
        HEALTHY_UPDATE_RATIO,
        color="green",
        linestyle=":",
        label=f"healthy ~{HEALTHY_UPDATE_RATIO:g}",
    )
    ratio_ax.set_title("update ratio per step", y=1.0)
    std_ax.plot(epochs, [r.output_std for r in history.records], "o-", label="std of P(same)")
    std_ax.axhline(COLLAPSE_STD, color="red", linestyle=":", label="collapse threshold")
    std_ax.set_title("output spread", y=1.0)
    for ax in axes.flat:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.legend(fontsize=8)
    fig.suptitle(title)
    # Drawing time is mostly ticks and text measuring: fixed margins instead of tight_layout,
    # titles at a fixed height (no overlap search), no minor ticks on the log axis.
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.08, top=0.9, hspace=0.35, wspace=0.2)
    fig.savefig(path, dpi=80)
    return path
