"""Each diagnosis class on constructed statistic series, and converged on a healthy one."""

import math
from dataclasses import replace
from typing import Any

import pytest

from siamese.diagnosis import diagnose, render_text
from siamese.train.history import EpochRecord, History

GRADS = {"conv1": 0.1, "fc": 0.1, "head": 0.1}


def rec(epoch: int, **changes: Any) -> EpochRecord:
    healthy = EpochRecord(
        epoch=epoch,
        train_loss=0.6 / epoch,
        val_loss=0.6 / epoch,
        val_acc=0.8,
        val_auc=0.9,
        grad_norm=GRADS,
        update_ratio=1e-3,
        dead_unit_fraction=0.3,
        head_zero_fraction=math.nan,
        output_std=0.3,
        output_mean=0.5,
        seconds=1.0,
        pairs_per_second=500.0,
    )
    return replace(healthy, **changes)


def history(
    records: list[EpochRecord], head: str = "sq", lr: float = 1e-3, **kw: object
) -> History:
    h = History(
        config={"head": head, "lr": lr, "optimizer": "adam"},
        records=records,
        initial_val_loss=0.693,
    )
    for key, value in kw.items():
        setattr(h, key, value)
    return h


def kinds(h: History) -> list[str]:
    return diagnose(h).kinds


def test_healthy_run_converged() -> None:
    d = diagnose(history([rec(1), rec(2), rec(3)]))
    assert d.verdict == "converged" and not d.failed and "converged" in render_text(d)


def test_squeezed_but_ranked_outputs_are_called_a_slow_start_not_a_dead_network() -> None:
    h = history([rec(e, output_std=0.004, output_mean=0.51, val_auc=0.85) for e in (1, 2)], lr=1e-5)
    finding = next(f for f in diagnose(h).findings if f.kind == "collapsed")
    assert "order already does" in finding.summary and "same output" not in finding.summary
    assert "0.85" in finding.evidence_text and "learning rate" in finding.fix
    at_chance = history([rec(e, output_std=0.004, output_mean=0.51, val_auc=0.52) for e in (1, 2)])
    summaries = [f.summary for f in diagnose(at_chance).findings]
    assert "the network gives the same output for every pair" in summaries


def test_collapsed_constant_output() -> None:
    h = history(
        [rec(e, output_std=0.0004, output_mean=0.503, val_auc=0.5) for e in (1, 2)], head="relu2"
    )
    d = diagnose(h)
    assert "collapsed" in d.kinds
    finding = next(f for f in d.findings if f.kind == "collapsed")
    assert "0.503" in finding.evidence_text and "--head sq" in finding.fix


def test_dead_head_relu_outputs_zero() -> None:
    # A ReLU that outputs 0 passes no gradient: updates are zero too, which is not "lr too low".
    zero_grads = dict.fromkeys(GRADS, 0.0)
    h = history(
        [
            rec(
                1,
                head_zero_fraction=1.0,
                output_std=0.0,
                val_auc=0.5,
                update_ratio=0.0,
                grad_norm=zero_grads,
            )
        ],
        head="relu2",
    )
    assert kinds(h)[:2] == ["dead_head", "collapsed"]


def test_dead_embedding_units() -> None:
    assert "dead_head" in kinds(history([rec(1, dead_unit_fraction=0.99, val_auc=0.62)]))


def test_dead_units_in_a_run_that_learned_are_a_note_not_a_failure() -> None:
    # Contrastive RMSprop at 6.4e-4, seed 0: 95%+ of the units dead, val_auc 0.913.
    d = diagnose(history([rec(1), rec(2, dead_unit_fraction=0.96, val_auc=0.913)]))
    assert d.verdict == "converged", d.kinds
    (note,) = d.notes
    assert "96% of the 100 embedding units" in note and "0.913" in note
    # The same units dead below the line: a failure, and no note.
    below = diagnose(history([rec(1), rec(2, dead_unit_fraction=0.96, val_auc=0.79)]))
    assert below.kinds == ["dead_head"] and not below.notes


def test_stalled_learning_rate_too_low() -> None:
    records = [
        rec(e, update_ratio=1e-8, val_loss=0.6931, train_loss=0.6932, val_auc=0.55)
        for e in (1, 2, 3)
    ]
    d = diagnose(history(records, lr=1e-6))
    assert "stalled" in d.kinds
    finding = next(f for f in d.findings if f.kind == "stalled")
    assert finding.evidence["update_ratio"] == pytest.approx(1e-8)
    assert "0.1" in finding.fix  # lr 1e-6 x 1e-3 / 1e-8 = 0.1


def test_diverged_on_nan() -> None:
    h = history([rec(1), rec(2, train_loss=math.nan, val_loss=math.nan, val_auc=math.nan)], lr=50.0)
    d = diagnose(h)
    assert d.kinds == ["diverged"] and "lr=50" in d.findings[0].evidence_text


def test_a_diverged_runs_fix_never_names_an_absurd_learning_rate() -> None:
    blown = [rec(1, train_loss=math.nan, val_loss=math.nan, val_auc=math.nan)]
    typo = diagnose(history(blown, lr=1e308)).findings[0]
    assert typo.fix == "start from a usual learning rate for adam: lr=1e+308 -> 0.001"
    high = diagnose(history(blown, lr=0.5)).findings[0]
    assert high.fix.startswith("lower the learning rate 10-100x (lr=0.5 -> 0.005)")


def test_diverged_on_exploding_loss() -> None:
    assert kinds(history([rec(1, train_loss=0.6), rec(2, train_loss=9.0)])) == ["diverged"]


def test_a_blow_up_at_chance_is_not_blamed_on_the_data() -> None:
    records = [rec(1, val_auc=0.5), rec(2, val_auc=0.5, train_loss=9.0)]
    assert kinds(history(records)) == ["diverged"]
    with_identical_pairs = history(records, identical_pair_fraction=1.0)
    assert kinds(with_identical_pairs) == ["no_signal", "diverged"]  # a data bug comes first


def test_a_relu2_run_gone_nan_reports_no_dead_units_it_cannot_measure() -> None:
    nan = math.nan
    gone_nan = {"train_loss": nan, "val_loss": nan, "val_auc": nan, "output_std": nan}
    records = [
        rec(1, head_zero_fraction=1.0, output_std=0.0, val_auc=0.5),
        rec(2, **gone_nan, output_mean=nan, dead_unit_fraction=1.0, head_zero_fraction=0.0),
    ]
    assert kinds(history(records, head="relu2", lr=1e3)) == ["diverged"]


def test_huge_updates_at_chance_are_too_high_a_learning_rate_not_a_data_problem() -> None:
    # The shape of a real rmsprop lr=1.2e-3 relu2 trial: no NaN, loss near log 2, updates
    # 18% of the weights per step, the ReLU head dead, validation at chance.
    thrashing = {"train_loss": 0.70, "val_loss": 0.70, "val_auc": 0.5, "update_ratio": 0.185}
    dead_relu2 = {"head_zero_fraction": 1.0, "output_std": 0.0, "output_mean": 0.5}
    records = [rec(e, **thrashing, **dead_relu2) for e in (1, 2)]
    d = diagnose(history(records, head="relu2", lr=1.2e-3))
    assert d.kinds == ["diverged", "dead_head", "collapsed"]  # relu2 fails at any lr: kept
    finding = d.findings[0]
    assert "18% of the weights per step" in finding.evidence_text
    assert "6.49e-06" in finding.fix  # 1.2e-3 x 1e-3 / 0.185
    assert "replace the relu2 head" in d.findings[1].fix
    same_with_sq = diagnose(history(records, head="sq", lr=1.2e-3))
    assert same_with_sq.kinds == ["diverged"]  # the blow-up explains the rest


def test_huge_updates_on_a_run_that_learns_are_left_alone() -> None:
    assert kinds(history([rec(e, update_ratio=0.2) for e in (1, 2)])) == ["converged"]


def test_overfitting() -> None:
    records = [
        rec(1, train_loss=0.5, val_loss=0.5),
        rec(2, train_loss=0.3, val_loss=0.45),
        rec(3, train_loss=0.1, val_loss=0.6),
        rec(4, train_loss=0.05, val_loss=0.8),
    ]
    assert kinds(history(records)) == ["overfitting"]


def test_val_loss_bump_is_not_overfitting() -> None:
    records = [
        rec(1, val_loss=0.5),
        rec(2, val_loss=0.45),
        rec(3, val_loss=0.6),
        rec(4, val_loss=0.4),
    ]
    assert kinds(history(records)) == ["converged"]


def test_no_signal_with_identical_inputs() -> None:
    records = [rec(e, val_auc=0.5, output_std=0.0) for e in (1, 2)]
    d = diagnose(history(records, identical_pair_fraction=1.0))
    assert d.kinds[0] == "no_signal"
    assert "100% of training pairs" in d.findings[0].evidence_text


def test_no_signal_at_chance_with_healthy_updates() -> None:
    d = diagnose(history([rec(e, val_auc=0.52) for e in (1, 2)]))
    assert d.kinds == ["no_signal"] and "learning rate" not in d.findings[0].fix


def test_no_signal_with_large_updates_names_the_learning_rate_too() -> None:
    d = diagnose(history([rec(e, val_auc=0.5, update_ratio=0.05) for e in (1, 2)]))
    assert d.kinds == ["no_signal"]
    assert "data check" in d.findings[0].fix and "lower the learning rate" in d.findings[0].fix


def test_no_epochs_is_incomplete() -> None:
    assert diagnose(history([], stop_reason="interrupted")).verdict == "incomplete"


def test_round_trip_through_dict() -> None:
    from siamese.diagnosis import Diagnosis

    d = diagnose(history([rec(1, output_std=0.0)]))
    assert Diagnosis.from_dict(d.to_dict()) == d


def test_a_finding_another_explains_carries_no_contrary_fix() -> None:
    # The shape of `--inject-bug same-image` under Adam at 1e-3: |a-b| = 0, so only the
    # head's bias moves; the weights barely move because there is no gradient, not because
    # the learning rate is low.
    records = [
        rec(e, update_ratio=2.2e-5, val_loss=0.6931, train_loss=0.6931, val_auc=0.5, output_std=0.0)
        for e in (1, 2)
    ]
    d = diagnose(history(records, identical_pair_fraction=1.0))
    assert d.kinds == ["no_signal", "collapsed", "stalled"]
    stalled = d.findings[2]
    assert "learning rate" not in stalled.summary + stalled.fix
    assert "no_signal explains it" in stalled.fix
    assert "2.2e-05" in stalled.evidence_text  # what it saw stays
    collapsed = d.findings[1]
    assert "raise the learning rate" not in collapsed.fix and "no_signal" in collapsed.fix


def test_a_dead_embedding_explains_the_stall_it_causes() -> None:
    # Dead units want a lower learning rate; the stall they cause must not ask for a higher one.
    records = [
        rec(e, dead_unit_fraction=0.99, update_ratio=1e-8, val_loss=0.6931, val_auc=0.55)
        for e in (1, 2)
    ]
    d = diagnose(history(records, lr=1e-2))
    assert d.kinds[0] == "dead_head" and "stalled" in d.kinds
    assert "lower the learning rate" in d.findings[0].fix
    assert all("raise" not in f.fix for f in d.findings)


def test_an_unexplained_stall_keeps_its_learning_rate_fix() -> None:
    records = [rec(e, update_ratio=1e-8, val_loss=0.6931, val_auc=0.55) for e in (1, 2)]
    stalled = diagnose(history(records, lr=1e-6)).findings[-1]
    assert stalled.summary == "the weights barely move: the learning rate is too low"
    assert "raise the learning rate toward lr" in stalled.fix


def test_a_loss_spike_the_run_came_back_from_is_a_note_not_a_divergence() -> None:
    # The shape of a real contrastive RMSprop lr=6.4e-4 trial: 17x the initial loss in
    # epoch 1, then learning (it ended at val_auc 0.96, among the study's best).
    records = [
        rec(1, train_loss=11.46, val_loss=0.063, val_auc=0.929),
        rec(2, train_loss=0.052, val_loss=0.057, val_auc=0.940),
        rec(3, train_loss=0.045, val_loss=0.046, val_auc=0.959),
    ]
    d = diagnose(history(records, lr=6.4e-4))
    assert d.verdict == "converged", d.kinds
    (note,) = d.notes
    assert "rose to 11.5 in epoch 1" in note and "recovered" in note and "0.959" in note


@pytest.mark.parametrize(
    "last",
    [
        {"train_loss": 9.0},  # still above the blow-up line
        {"train_loss": 0.3, "val_auc": 0.55},  # back down, but at chance
        {"train_loss": 0.3, "val_auc": 0.7},  # back down, above chance, not learned
    ],
)
def test_a_spike_is_a_divergence_unless_the_run_ends_below_it_having_learned(
    last: dict[str, float],
) -> None:
    records = [rec(1, train_loss=11.0), rec(2, **last)]
    d = diagnose(history(records))
    assert "diverged" in d.kinds and not any("recovered" in n for n in d.notes)


def test_a_nan_epoch_is_a_divergence_even_if_later_epochs_look_fine() -> None:
    nan = math.nan
    records = [rec(1, train_loss=11.0, val_loss=nan), rec(2, train_loss=0.3, val_auc=0.95)]
    d = diagnose(history(records))
    assert "diverged" in d.kinds and not any("recovered" in n for n in d.notes)
