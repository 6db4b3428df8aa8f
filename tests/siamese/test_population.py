"""A population of trials trained as one program (issue 10, part 2), held against `fit`.

Each member must end where `fit` with its config and seed ends: the same history (every
metric and statistic), weights and checkpoint files. On the CPU the members run fit's own
kernels and dropout masks: SGD and RMSprop end bit for bit where fit ends, Adam and AdamW
within the last bits of their fused kernels (which grow to ~1e-3 in an epoch-2 gradient norm
of the AdamW/contrastive case)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from siamese import DataConfig, PairData, TrainConfig, fit, prepare_data
from siamese.config import SEED_PRESET
from siamese.scoring import read_checkpoint, score, scorer_from_checkpoint
from siamese.train import History, load_checkpoint
from siamese.train.population import fit_population, population_groups
from siamese.train.population_optim import Hyper, StackedOptimizer, StackedState
from siamese.train.step import make_optimizer

# Two steps an epoch at batch 16: fast, and enough to cover sampled statistics.
TINY = DataConfig(train_pairs=32, val_pairs=32)
# Relative tolerance per optimizer, on every metric and on each weight tensor's norm.
TOLERANCE = {"sgd": 1e-6, "rmsprop": 1e-6, "adam": 2e-3, "adamw": 5e-3}
# One head per optimizer, and a second member with other hyperparameters and dropout: four
# runs cover every optimizer, every head and fit's dropout masks.
CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "sgd": (
        {"optimizer": "sgd", "head": "relu2", "lr": 0.05, "momentum": 0.9},
        {"lr": 0.02, "momentum": 0.5, "weight_decay": 1e-3, "dropout": 0.3},
    ),
    "adam": (
        {"optimizer": "adam", "head": "sq"},
        {"lr": 2e-3, "weight_decay": 1e-3, "dropout": 0.3},
    ),
    "adamw": (
        {"optimizer": "adamw", "head": "contrastive"},
        {"lr": 2e-3, "weight_decay": 1e-2, "dropout": 0.3},
    ),
    "rmsprop": (
        {"optimizer": "rmsprop", "head": "abs", "lr": 1e-4},
        {"lr": 3e-4, "momentum": 0.0, "weight_decay": 1e-3, "dropout": 0.3},
    ),
}
# Measured per epoch, not results: they differ between any two runs.
TIMINGS = ("seconds", "pairs_per_second")


@pytest.fixture(scope="module")
def tiny() -> PairData:
    return prepare_data(TINY)


def data_config(train_pairs: int) -> DataConfig:
    return replace(TINY, train_pairs=train_pairs)


def cfg(**changes: Any) -> TrainConfig:
    # float32: bf16 autocast (the default where the CPU has it) rounds the member's and
    # fit's differently ordered kernels apart; test_a_bf16_member_ends_near_fit covers it.
    base = TrainConfig(epochs=2, batch_size=16, device="cpu", precision="fp32", data=TINY)
    return replace(base, **changes)


def members(optimizer: str) -> list[TrainConfig]:
    common, other = CASES[optimizer]
    return [cfg(**common, seed=1), cfg(**{**common, **other}, seed=2)]


def _close(a: float, b: float, rel: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= rel * max(abs(b), 1e-6)


def assert_same_history(mine: History, theirs: History, rel: float) -> None:
    assert (mine.stop_reason, mine.config, mine.device) == (
        theirs.stop_reason,
        theirs.config,
        theirs.device,
    )
    assert mine.step_path == theirs.step_path
    assert _close(mine.initial_val_loss, theirs.initial_val_loss, rel)
    assert _close(mine.initial_output_std, theirs.initial_output_std, rel)
    assert [r.epoch for r in mine.records] == [r.epoch for r in theirs.records]
    for a, b in zip(mine.records, theirs.records, strict=True):
        ours, fits = a.metrics(), b.metrics()
        assert set(ours) == set(fits)
        wrong = {k: (ours[k], fits[k]) for k in ours if k not in TIMINGS}
        wrong = {k: pair for k, pair in wrong.items() if not _close(*pair, rel)}
        assert not wrong, f"epoch {a.epoch}: {wrong}"


def assert_same_weights(mine: dict[str, Tensor], theirs: dict[str, Tensor], rel: float) -> None:
    """Each tensor within `rel` of fit's in norm (Adam moves a weight whose gradient is all
    rounding noise by a whole step either way: single weights are no measure), NaN where
    fit's is NaN."""
    assert list(mine) == list(theirs)
    for name, tensor in theirs.items():
        ours, nan = mine[name], tensor.isnan()
        assert torch.equal(ours.isnan(), nan), name
        gap = float(torch.where(nan, 0.0, ours - tensor).float().norm())
        size = float(torch.where(nan, 0.0, tensor).float().norm())
        assert gap <= rel * max(size, 1e-12), (name, gap)


def assert_same_optimizer_state(
    mine: dict[int, dict[str, Tensor]], theirs: dict[int, dict[str, Tensor]], rel: float
) -> None:
    """torch.optim's state: the same keys and step counts parameter by parameter, and each
    kind of buffer (momentum, exp_avg, ...) within `rel` of fit's in one norm over all the
    parameters. Per parameter, a small bias's Adam moments are mostly rounding noise that
    Adam's division amplifies: they came 4e-3 apart on a Xeon with AMX, the model's 1e-6."""
    assert sorted(mine) == sorted(theirs)
    kinds: dict[str, tuple[list[Tensor], list[Tensor]]] = {}
    for index, state in theirs.items():
        assert sorted(mine[index]) == sorted(state), index
        if "step" in state:
            assert float(mine[index]["step"]) == float(state["step"])
        for kind, buffer in state.items():
            if kind != "step":
                ours, fits = kinds.setdefault(kind, ([], []))
                ours.append(mine[index][kind].reshape(-1))
                fits.append(buffer.reshape(-1))
    whole = {kind: (torch.cat(ours), torch.cat(fits)) for kind, (ours, fits) in kinds.items()}
    assert_same_weights(
        {kind: ours for kind, (ours, _) in whole.items()},
        {kind: fits for kind, (_, fits) in whole.items()},
        max(rel, 1e-6),
    )


@pytest.mark.parametrize("optimizer", list(CASES))
def test_each_member_ends_where_fit_ends(optimizer: str, tiny: PairData, tmp_path: Path) -> None:
    configs = members(optimizer)
    dirs = [tmp_path / f"member-{i}" for i in range(len(configs))]
    results = fit_population(configs, tiny, checkpoint_dirs=dirs, checkpoint_every_s=None)
    rel = TOLERANCE[optimizer]
    for config, mine, folder in zip(configs, results, dirs, strict=True):
        theirs = fit(config, tiny, checkpoint_dir=folder.with_name(folder.name + "-fit"))
        assert mine.error is None
        assert_same_history(mine.history, theirs.history, rel)
        assert_same_weights(mine.model.state_dict(), theirs.model.state_dict(), rel)
        # Written only at the member's end, yet the files fit writes epoch by epoch.
        assert theirs.best_checkpoint is not None and theirs.last_checkpoint is not None
        for path, fits_path in (
            (mine.best_checkpoint, theirs.best_checkpoint),
            (mine.last_checkpoint, theirs.last_checkpoint),
        ):
            assert path is not None and path.parent == folder
            ours, fits = load_checkpoint(path), load_checkpoint(fits_path)
            assert (ours["epoch"], ours["best_val_auc"]) == pytest.approx(
                (fits["epoch"], fits["best_val_auc"]), rel=rel
            )
            assert_same_weights(ours["model"], fits["model"], rel)
            assert ours["optimizer"]["param_groups"] == fits["optimizer"]["param_groups"]
            assert_same_optimizer_state(ours["optimizer"]["state"], fits["optimizer"]["state"], rel)
            assert_same_history(
                History.from_dict(ours["history"]), History.from_dict(fits["history"]), rel
            )


def test_a_bf16_member_trains_in_bf16_and_ends_near_fit(tiny: PairData) -> None:
    """Under bf16 autocast the population computes in bf16 as fit does: near fit's results
    (both round differently ordered kernels), and far from the same run in float32."""
    config = cfg(optimizer="sgd", head="sq", lr=0.05, momentum=0.9, precision="bf16", seed=1)
    (mine,) = fit_population([config], tiny, checkpoint_every_s=None)
    theirs = fit(config, tiny)
    in_fp32 = fit(replace(config, precision="fp32"), tiny)
    assert mine.error is None
    assert mine.history.precision == theirs.history.precision == "bf16"
    assert in_fp32.history.precision == "fp32"
    assert_same_history(mine.history, theirs.history, 2e-2)
    ours, fp32 = mine.history.records[-1], in_fp32.history.records[-1]
    assert ours.train_loss != fp32.train_loss


def test_check_points_cut_a_members_epoch_where_they_cut_fits(tiny: PairData) -> None:
    """Eight steps an epoch: fit checks after steps 4 to 7. A NaN loss cuts the epoch there;
    so does a proven failure in epoch 1 of an early_stop run (the seed network)."""
    data = prepare_data(data_config(64))
    base = cfg(optimizer="sgd", head="relu2", batch_size=8, data=data_config(64), epochs=1)
    configs = [
        replace(base, lr=1e4, seed=2),
        replace(base, **{**SEED_PRESET, "batch_size": 8}, early_stop=True, seed=3),
        replace(base, lr=0.05, early_stop=True, seed=1),
    ]
    results = fit_population(configs, data)
    for config, mine in zip(configs, results, strict=True):
        theirs = fit(config, data)
        assert mine.history.early_stop == theirs.history.early_stop
        assert_same_history(mine.history, theirs.history, rel=1e-6)
        assert_same_weights(mine.model.state_dict(), theirs.model.state_dict(), rel=1e-6)
    assert [r.history.stop_reason for r in results] == ["non_finite", "pruned", "completed"]
    cut_at = [(r.history.early_stop or {}).get("step") for r in results]
    assert cut_at[0] is not None and cut_at[1] is not None and cut_at[2] is None  # mid-epoch


@pytest.mark.parametrize("kind", list(CASES))
def test_the_stacked_optimizer_steps_as_torch_optim_does(kind: str) -> None:
    """Three members with their own hyperparameters against torch's optimizers as fit builds
    them; the third stops after two steps and keeps its weights and state bit for bit, and
    the second's NaN gradient reaches no one else."""
    configs = [
        TrainConfig(optimizer=kind, lr=1e-2, momentum=0.9, weight_decay=0.0),
        TrainConfig(optimizer=kind, lr=3e-3, momentum=0.0, weight_decay=1e-2),
        TrainConfig(optimizer=kind, lr=1e-3, momentum=0.5, weight_decay=1e-3),
    ]
    generator = torch.Generator().manual_seed(0)
    start = torch.randn(3, 1000, generator=generator)
    state = StackedState.start(start.clone(), kind)
    stacked = StackedOptimizer(kind, state, Hyper.of(configs, torch.device("cpu")))
    params = [torch.nn.Parameter(start[k].clone()) for k in range(3)]
    theirs = [
        make_optimizer(c, [p], capturable=False) for c, p in zip(configs, params, strict=True)
    ]
    active = torch.tensor([[True], [True], [True]])
    for step in range(5):
        grads = torch.randn(3, 1000, generator=generator)
        if step == 2:
            active[2] = False
            frozen = [t.clone() for t in state.tensors()]
        if step == 4:
            grads[1] = math.nan
        stacked.step(grads, active)
        for k in range(3 if step < 2 else 2):
            if step < 4 or k != 1:
                params[k].grad = grads[k].clone()
                theirs[k].step()
    for k in (0, 2):  # Adam's last bits differ from the fused kernel's; the rest are exact
        assert_same_weights({"w": state.flat[k]}, {"w": params[k].detach()}, 1e-6)
    assert all(torch.equal(t[2], f[2]) for t, f in zip(state.tensors(), frozen, strict=True))
    assert state.flat[1].isnan().all() and not state.flat[[0, 2]].isnan().any()


def test_a_diverging_member_changes_nothing_for_the_others(tiny: PairData) -> None:
    a, b = cfg(optimizer="sgd", lr=0.05, seed=1, epochs=1), cfg(optimizer="sgd", seed=3, epochs=1)
    wild = cfg(optimizer="sgd", lr=1e4, seed=2, epochs=1)
    alone = fit_population([a, b], tiny)
    together = fit_population([a, wild, b], tiny)
    for solo, mixed in ((alone[0], together[0]), (alone[1], together[2])):
        assert_same_history(mixed.history, solo.history, rel=0.0)  # not a bit moved
        assert_same_weights(mixed.model.state_dict(), solo.model.state_dict(), rel=0.0)
    diverged, theirs = together[1], fit(wild, tiny)
    assert diverged.history.stop_reason == "non_finite"
    assert_same_history(diverged.history, theirs.history, rel=1e-6)
    assert_same_weights(diverged.model.state_dict(), theirs.model.state_dict(), rel=1e-6)


def test_checkpoints_load_score_and_resume_in_fit(tiny: PairData, tmp_path: Path) -> None:
    config = cfg(optimizer="adam", dropout=0.3, seed=4, epochs=1)
    (member,) = fit_population([config], tiny, checkpoint_dirs=[tmp_path / "m"])
    assert member.last_checkpoint is not None and member.best_checkpoint is not None
    checked = read_checkpoint(member.last_checkpoint)  # config and weights fit the network
    assert checked.config == config
    scorer = scorer_from_checkpoint(member.best_checkpoint)
    pairs = np.stack([np.stack([tiny.val.images[0], tiny.val.images[1]])]).astype(np.float32)
    assert score(scorer, pairs).shape == (1,)
    # fit takes up the member's optimizer state and dropout RNG where the member left them.
    longer = replace(config, epochs=2)
    resumed = fit(longer, tiny, resume_from=member.last_checkpoint)
    straight = fit(longer, tiny)
    assert_same_history(resumed.history, straight.history, rel=TOLERANCE["adam"])
    assert_same_weights(resumed.model.state_dict(), straight.model.state_dict(), TOLERANCE["adam"])


def test_members_train_in_compatible_groups(tiny: PairData) -> None:
    configs = [
        cfg(optimizer="adam", head="sq"),
        cfg(optimizer="sgd", head="sq"),
        cfg(optimizer="adam", head="sq", lr=1e-2, seed=5, dropout=0.2, epochs=1),
        cfg(optimizer="adam", head="abs"),
        cfg(optimizer="adam", head="contrastive", margin=2.0),
        cfg(optimizer="adam", head="contrastive", margin=1.0),
        cfg(optimizer="adam", head="sq", batch_size=8),
    ]
    assert population_groups(configs) == [[0, 2], [1], [3], [4], [5], [6]]
    assert population_groups([configs[0]] * 5, max_size=2) == [[0, 1], [2, 3], [4]]
    one_epoch = [replace(c, epochs=1) for c in configs[:2]]  # two populations of one
    results = fit_population(one_epoch, tiny)
    for config, result in zip(one_epoch, results, strict=True):
        assert result.history.config == config.to_dict()


def test_lean_members_keep_what_a_lean_fit_keeps(tiny: PairData, tmp_path: Path) -> None:
    """A search trial's population member, like its fit: once it ends on its own, best.pt
    holds its best epoch's weights only, and no last.pt is left (nor was written at its end:
    every_s=None)."""
    config = cfg(optimizer="sgd")
    (member,) = fit_population(
        [config], tiny, checkpoint_dirs=[tmp_path / "m"], lean_checkpoints=True
    )
    fit(config, tiny, checkpoint_dir=tmp_path / "f", lean_checkpoints=True)
    for folder in ("m", "f"):
        assert sorted(p.name for p in (tmp_path / folder).iterdir()) == ["best.pt"], folder
    ours, fits = (
        load_checkpoint(tmp_path / "m" / "best.pt"),
        load_checkpoint(tmp_path / "f" / "best.pt"),
    )
    assert ours["resumable"] is False and ours["optimizer"] == {} and ours["epoch"] == fits["epoch"]
    assert_same_weights(ours["model"], fits["model"], TOLERANCE["sgd"])
    assert member.best_checkpoint == tmp_path / "m" / "best.pt"
