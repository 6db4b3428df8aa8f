"""The training step's statistics and the validation pass, on a handful of CPU tensors."""

import math

import pytest
import torch
from torch import nn

from siamese.config import TrainConfig
from siamese.model import build_model
from siamese.train.device_data import DeviceData
from siamese.train.evaluate import evaluate
from siamese.train.step import StepRunner, layer_names, make_optimizer
from tests.siamese.test_model import head_linear

LAYERS = ["conv1", "conv2", "conv3", "conv4", "fc", "head"]


def _data(n_images: int = 6, n_pairs: int = 8) -> DeviceData:
    generator = torch.Generator().manual_seed(0)
    return DeviceData(
        images=torch.rand(n_images, 40, 50, generator=generator),
        left=torch.randint(n_images, (n_pairs,), generator=generator),
        right=torch.randint(n_images, (n_pairs,), generator=generator),
        labels=(torch.arange(n_pairs) % 2).float(),
    )


def _norm(module: nn.Module) -> float:
    grads = [p.grad.flatten() for p in module.parameters() if p.grad is not None]
    return float(torch.cat(grads).norm())


@pytest.mark.parametrize("reordered", [False, True])
def test_gradient_norms_belong_to_the_layer_they_are_named_after(reordered: bool) -> None:
    torch.manual_seed(0)
    config = TrainConfig(head="abs", optimizer="sgd", batch_size=8, device="cpu")
    model = build_model(config)
    if reordered:  # registration order decides parameter order: the names must not care
        model.tower._modules = dict(reversed(model.tower._modules.items()))
        assert next(model.named_parameters())[0].startswith("tower.fc.")
    assert layer_names(model) == LAYERS
    optimizer = make_optimizer(config, list(model.parameters()), capturable=False)
    runner = StepRunner(model, optimizer, _data(), config)
    runner.run(torch.arange(8))  # the first eager step measures its statistics
    _, grad_norm, update_ratio = runner.read_sums()
    assert list(grad_norm) == LAYERS and update_ratio > 0
    tower = model.tower
    modules = [tower.conv1, tower.conv2, tower.conv3, tower.conv4, tower.fc, model.head]
    for name, module in zip(LAYERS, modules, strict=True):
        assert grad_norm[name] == pytest.approx(_norm(module), rel=1e-5), name


def test_a_small_gradient_after_a_blow_up_still_shows_in_the_running_sums() -> None:
    """The early stop reads gradients as differences of running sums: after a blow-up
    (sums of 1e10), a later step's small norm (here 0.007) must not round away, or a live
    tower would read as one without gradient (a float32 sum reads it as 0)."""
    torch.manual_seed(0)
    config = TrainConfig(head="abs", optimizer="sgd", lr=1e-3, batch_size=8, device="cpu")
    model = build_model(config)
    optimizer = make_optimizer(config, list(model.parameters()), capturable=False)
    runner = StepRunner(model, optimizer, _data(), config)
    runner.grad_sums.fill_(1e10)  # what the epoch's blown-up first steps left
    runner.run(torch.arange(8))
    measured = runner.grad_sums - 1e10
    assert (
        0
        < float(measured[LAYERS.index("conv1")])
        == pytest.approx(_norm(model.tower.conv1), rel=1e-3)
    )


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "rmsprop"])
def test_the_optimizer_takes_its_settings_from_the_config(optimizer: str) -> None:
    config = TrainConfig(optimizer=optimizer, lr=0.02, weight_decay=1e-3, device="cpu")
    made = make_optimizer(config, list(build_model(config).parameters()), capturable=False)
    group = made.param_groups[0]
    assert (group["lr"], group["weight_decay"]) == (0.02, 1e-3)


def test_evaluate_limits_to_the_first_pairs_and_reports_the_relu2_zero_share() -> None:
    torch.manual_seed(0)
    model = build_model(TrainConfig(head="relu2", device="cpu"))
    with torch.no_grad():
        head_linear(model).bias.fill_(-50.0)  # both outputs at the ReLU's 0 for every pair
    result = evaluate(model, _data(), limit=5)
    assert len(result.probs) == 5
    assert result.head_zero_fraction == 1.0 and result.output_std == 0.0


def test_evaluate_has_no_zero_share_for_heads_without_a_relu_output() -> None:
    model = build_model(TrainConfig(head="sq", device="cpu"))
    result = evaluate(model, _data())
    assert len(result.probs) == 8 and math.isnan(result.head_zero_fraction)
