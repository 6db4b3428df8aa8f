"""Console output shared by the library's long-running calls (rich, no click)."""

from __future__ import annotations

from rich.console import Console

from siamese.train import Callback, EpochRecord, History


class EpochPrinter(Callback):
    """One table row per epoch as it finishes."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def on_fit_start(self, history: History) -> None:
        settings = ", ".join(f"{k}={v}" for k, v in history.config.items() if k != "data")
        self.console.print(f"training on {history.device}: {settings}")
        for warning in history.data_warnings:
            self.console.print(f"[yellow]data warning:[/] {warning}")
        self.console.print(
            f"{'epoch':>5} {'train_loss':>10} {'val_loss':>9} {'val_acc':>7} {'val_auc':>7} "
            f"{'out_std':>8} {'upd_ratio':>9} {'pairs/s':>8}"
        )

    def on_epoch_end(self, record: EpochRecord, history: History) -> str | None:
        self.console.print(
            f"{record.epoch:>5} {record.train_loss:>10.4f} {record.val_loss:>9.4f} "
            f"{record.val_acc:>7.3f} {record.val_auc:>7.3f} {record.output_std:>8.4f} "
            f"{record.update_ratio:>9.2e} {record.pairs_per_second:>8.0f}"
        )
        return None

    def on_fit_end(self, history: History) -> None:
        # How the steps ran: a GPU run that fell back to eager steps says so, and why.
        if history.step_path:
            precision = f" ({history.precision})" if history.precision else ""
            self.console.print(f"training steps: {history.step_path}{precision}", markup=False)
