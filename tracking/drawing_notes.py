"""matplotlib's notes about its own drawing, kept off the user's terminal.

They reached it in the middle of a search's progress lines: a "best" legend place that took
over a second to find (a loaded machine: `search --jobs 8` on 2 cores), and a panel whose
values are all one (a run stuck at chance: AUC and accuracy 0.5 on the chance line), which
matplotlib widens by itself. Light on purpose (no matplotlib): the command line installs
these filters from its main thread at start-up. Installed only where the curves are drawn,
in the MLflow writer thread, they were lost whenever the main thread was inside a
`warnings.catch_warnings()` block at that moment (Optuna enters one around every trial),
since leaving that block restores the filters as they were.
"""

from __future__ import annotations

import warnings

_MATPLOTLIB_NOTES = ('Creating legend with loc="best"', "Attempting to set identical low and high")


def hush_matplotlib_notes() -> None:
    for note in _MATPLOTLIB_NOTES:
        warnings.filterwarnings("ignore", message=note, category=UserWarning)
