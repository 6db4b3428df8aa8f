"""The CUDA path: data resident on the device, bf16 autocast, the step in a CUDA graph.
Skipped where no GPU is present (see tests/conftest.py)."""

import math

import pytest
import torch

from siamese import DataConfig, PairData, TrainConfig, diagnose, fit, prepare_data
from siamese.train.loop import _Run

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def gpu_data() -> PairData:
    return prepare_data(DataConfig(task="same-class", train_pairs=2048, val_pairs=512))


def test_cuda_run_learns_and_captures_a_graph(gpu_data: PairData) -> None:
    config = TrainConfig(head="abs", epochs=3, device="cuda", data=DataConfig(task="same-class"))
    run = _Run(config, gpu_data, [], None)
    run.measure_initial()
    run.loop()
    assert run.runner.graph is not None, "the train step was not captured in a CUDA graph"
    assert run.train.images.device.type == "cuda"
    records = run.history.records
    assert all(math.isfinite(r.train_loss) for r in records)
    assert max(r.val_auc for r in records) > 0.85
    assert records[-1].update_ratio > 0 and records[-1].grad_norm["conv1"] > 0
    assert diagnose(run.history).verdict == "converged"


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "rmsprop"])
def test_every_optimizer_runs_in_a_graph(gpu_data: PairData, optimizer: str) -> None:
    lr = 1e-2 if optimizer == "sgd" else 1e-3
    config = TrainConfig(optimizer=optimizer, lr=lr, epochs=1, device="cuda")
    result = fit(config, gpu_data)
    assert math.isfinite(result.history.records[0].train_loss)


def test_cuda_seed_preset_still_fails(gpu_data: PairData) -> None:
    from siamese.config import SEED_PRESET

    result = fit(TrainConfig(**SEED_PRESET, epochs=2, device="cuda"), gpu_data)
    assert diagnose(result.history).failed
    torch.cuda.synchronize()
