"""Why did a run not learn? A verdict from the recorded statistics, with numbers and fixes.

The rules (`siamese.diagnosis_rules`) each read the history that `fit` records and return a
`Finding` or nothing. Findings come out root cause first: a data bug explains a collapse, a
divergence explains dead units.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from siamese.diagnosis_rules import (
    Finding,
    collapsed,
    dead_head,
    dead_relu2_output,
    dead_units_note,
    diverged,
    no_signal,
    overfitting,
    spike_note,
    stalled,
)
from siamese.train.history import EpochRecord, History

__all__ = ["Diagnosis", "Finding", "diagnose", "render_text"]


@dataclass(frozen=True)
class Diagnosis:
    verdict: str  # "converged", "failed" or "incomplete"
    findings: tuple[Finding, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def kinds(self) -> list[str]:
        return [f.kind for f in self.findings] or [self.verdict]

    @property
    def label(self) -> str:
        """One short string for tags and tables: "converged" or e.g. "collapsed+stalled"."""
        return "+".join(self.kinds)

    @property
    def failed(self) -> bool:
        return self.verdict != "converged"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "label": self.label, "kinds": self.kinds}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Diagnosis:
        findings = tuple(Finding(**f) for f in raw.get("findings", []))
        return cls(raw["verdict"], findings, tuple(raw.get("notes", ())))


# Run in this order when nothing blew up; a blow-up (`diverged`, checked first) is
# handled by `_with_blow_up` instead, which decides what may stand beside it.
RULES: tuple[Callable[[History, list[EpochRecord]], Finding | None], ...] = (
    no_signal,
    dead_head,
    collapsed,
    stalled,
    overfitting,
)


# What a run shows that is worth saying but is no failure: a loss spike it came back from,
# dead units in a run that learned.
NOTES: tuple[Callable[[History, list[EpochRecord]], str | None], ...] = (
    spike_note,
    dead_units_note,
)


# A finding that a finding before it explains: its own fix would point away from the cause
# (identical images give the tower no gradient, so its weights do not move; "raise the
# learning rate" would be wrong).
EXPLAINED_BY = {"stalled": ("no_signal", "dead_head"), "collapsed": ("no_signal", "dead_head")}


def _is_cause(finding: Finding) -> bool:
    """A dead head is one; chance-level validation is one only as the identical-images bug
    (otherwise it is a suspicion, and a relu2 head or a learning rate may be the cause)."""
    if finding.kind == "no_signal":
        return float(finding.evidence.get("identical_pair_fraction", 0.0)) >= 0.5
    return True


def _explained(findings: list[Finding]) -> list[Finding]:
    """Each explained finding keeps what it saw (its summary up to the cause it would name)
    and its evidence; its fix says which finding explains it."""
    kept: list[Finding] = []
    for finding in findings:
        roots = EXPLAINED_BY.get(finding.kind, ())
        root = next((r for r in kept if r.kind in roots and _is_cause(r)), None)
        if root is not None:
            finding = replace(
                finding,
                summary=finding.summary.split(": ")[0],
                fix=f"none of its own: {root.kind} explains it, fix that first",
            )
        kept.append(finding)
    return kept


def _with_blow_up(h: History, records: list[EpochRecord], blow_up: Finding) -> list[Finding]:
    """A blow-up explains what comes after it (dead units, collapse, chance-level validation);
    only a data bug (identical pairs) comes before it, and the relu2 output, which fails at
    any learning rate, stays beside it while its numbers are still finite."""
    data_bug = no_signal(h, records) if h.identical_pair_fraction >= 0.5 else None
    finite = math.isfinite(records[-1].train_loss) and math.isfinite(records[-1].output_std)
    relu2: tuple[Finding | None, ...] = ()
    if h.config.get("head") == "relu2" and finite:
        relu2 = (dead_relu2_output(h, records), collapsed(h, records))
    return [f for f in (data_bug, blow_up, *relu2) if f]


def diagnose(history: History) -> Diagnosis:
    records = history.records
    if not records:
        return Diagnosis("incomplete", notes=(f"no epoch finished (stop: {history.stop_reason})",))
    blow_up = diverged(history, records)
    if blow_up:
        findings = _with_blow_up(history, records, blow_up)
    else:
        findings = [f for rule in RULES if (f := rule(history, records))]
    findings = _explained(findings)
    notes = [_stop_note(history)] if history.stop_reason != "completed" else []
    notes += [note for rule in NOTES if (note := rule(history, records))]
    notes += [f"data warning: {w}" for w in history.data_warnings]
    if not findings:
        return Diagnosis("converged", notes=tuple(notes))
    return Diagnosis("failed", tuple(findings), tuple(notes))


def early_stop_text(raw: dict[str, Any]) -> str:
    """`History.early_stop` in one line: what, where, and why the run could not recover."""
    step, steps = int(raw["step"]), int(raw["epoch_steps"])
    where = f"step {step} of {steps} in epoch {raw['epoch']} ({step / max(steps, 1):.0%})"
    return f"stopped early at {where}: {raw['verdict']} - {raw.get('proof', '')}"


def _stop_note(history: History) -> str:
    if history.early_stop:
        return early_stop_text(history.early_stop)
    return f"stopped early: {history.stop_reason}"


def render_text(diagnosis: Diagnosis) -> str:
    """The diagnosis in plain words, as printed by `train` and `diagnose`."""
    if diagnosis.verdict == "converged":
        lines = ["Diagnosis: converged - the network learned (no failure pattern found)."]
    elif diagnosis.verdict == "incomplete":
        lines = ["Diagnosis: incomplete - no epoch finished, nothing to judge."]
    else:
        lines = [f"Diagnosis: FAILED TO CONVERGE ({diagnosis.label})"]
    for finding in diagnosis.findings:
        lines += [
            f"- {finding.kind}: {finding.summary}",
            f"    evidence: {finding.evidence_text}",
            f"    fix: {finding.fix}",
        ]
    lines += [f"  note: {note}" for note in diagnosis.notes]
    return "\n".join(lines)
