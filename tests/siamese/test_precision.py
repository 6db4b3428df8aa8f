"""Training precision: `auto` picks bf16 autocast where the chip computes bf16 natively and
float32 elsewhere; the step really runs in the chosen format, and the run records it."""

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from torch import Tensor, nn
from torch.nn.modules.module import register_module_forward_hook

from search.cli import cli
from siamese import DataConfig, PairData, TrainConfig, fit
from siamese.train import precision
from siamese.train.precision import cpu_has_native_bf16, resolve_precision

SMALL = DataConfig(train_pairs=384, val_pairs=192)


def cfg(**changes: Any) -> TrainConfig:
    return replace(TrainConfig(epochs=1, device="cpu", data=SMALL), **changes)


@pytest.mark.parametrize(
    "flags,native",
    [
        ("fpu sse avx512f avx512_bf16 avx512_vnni", True),
        ("fpu sse amx_tile amx_bf16", True),
        ("fpu sse avx2 avx512f avx512bw", False),  # bf16 only emulated there
    ],
)
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path: Path, flags: str, native: bool) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: x\nflags\t\t: {flags}\n")
    assert cpu_has_native_bf16(cpuinfo) is native


def test_no_cpuinfo_means_float32(tmp_path: Path) -> None:
    assert cpu_has_native_bf16(tmp_path / "missing") is False


def test_auto_resolves_per_device(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_precision("auto", torch.device("cuda", 0)) == "bf16"
    for native, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda native=native: native)
        assert resolve_precision("auto", torch.device("cpu")) == expected
    assert resolve_precision("fp32", torch.device("cuda")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"


class ConvDtypes:
    """The dtypes the convolutions compute in during training steps (a forward hook), for
    conv1 (one input channel) and for conv2-4."""

    def __init__(self) -> None:
        self.seen: dict[str, set[torch.dtype]] = {"conv1": set(), "conv2-4": set()}

    def hook(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        if torch.is_grad_enabled():  # training steps, not the validation passes
            assert isinstance(module, nn.Conv2d)
            self.seen["conv1" if module.in_channels == 1 else "conv2-4"].add(output.dtype)


def _trained_dtypes(config: TrainConfig, data: PairData) -> dict[str, set[torch.dtype]]:
    dtypes = ConvDtypes()

    def conv_hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            dtypes.hook(module, inputs, output)

    # On every module: fit copies a kept network (siamese.train.initial), it builds none.
    handle = register_module_forward_hook(conv_hook)
    try:
        fit(config, data)
    finally:
        handle.remove()
    return dtypes.seen


@pytest.mark.parametrize("chosen,dtype", [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_the_step_computes_in_the_chosen_format_and_records_it(
    small_data: PairData, chosen: str, dtype: torch.dtype
) -> None:
    # conv1 stays float32 on the CPU (siamese.model.Tower._conv1: faster there).
    expected = {"conv1": {torch.float32}, "conv2-4": {dtype}}
    assert _trained_dtypes(cfg(precision=chosen), small_data) == expected
    assert fit(cfg(precision=chosen), small_data).history.precision == chosen


def test_auto_trains_in_float32_where_the_cpu_lacks_native_bf16(
    small_data: PairData, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    expected = {"conv1": {torch.float32}, "conv2-4": {torch.float32}}
    assert _trained_dtypes(cfg(), small_data) == expected
    assert fit(cfg(), small_data).history.precision == "fp32"


def test_bf16_learns_what_float32_learns(small_data: PairData) -> None:
    """Weights and optimizer state stay float32: the two runs differ by rounding only."""
    runs = [fit(cfg(epochs=2, precision=p), small_data).history for p in ("fp32", "bf16")]
    losses = [h.records[-1].train_loss for h in runs]
    assert losses[0] != losses[1]
    assert losses[1] == pytest.approx(losses[0], rel=0.05)
    assert runs[1].records[-1].val_auc == pytest.approx(runs[0].records[-1].val_auc, abs=0.05)


def test_a_run_resumes_in_another_precision(tmp_path: Path, small_data: PairData) -> None:
    """Like the device, the precision says how, not what: a CPU run resumes a GPU's."""
    fit(cfg(precision="bf16"), small_data, checkpoint_dir=tmp_path)
    resumed = fit(
        cfg(epochs=2, precision="fp32"),
        small_data,
        checkpoint_dir=tmp_path,
        resume_from=tmp_path / "last.pt",
    )
    assert [r.epoch for r in resumed.history.records] == [1, 2]
    assert resumed.history.precision == "fp32"


def test_an_unknown_precision_exits_2_naming_the_flag(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["train", "--precision", "fp16", "--home", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "--precision" in result.output and "Traceback" not in result.output


def test_the_run_and_train_output_say_which_format_auto_chose(
    small_data: PairData, tmp_path: Path
) -> None:
    from tracking import InMemoryTracker, TrackingCallback, tracked_run
    from tracking.callback import PRECISION_TAG

    config = cfg(precision="bf16")
    tracker = InMemoryTracker()
    with tracked_run(tracker, "t", config, "cpu") as run_id:
        fit(config, small_data, [TrackingCallback(tracker, run_id)])
    assert tracker.get_run(run_id).tags[PRECISION_TAG] == "bf16"
    flags = ["--train-pairs", "128", "--val-pairs", "64", "--device", "cpu", "--no-track"]
    args = ["train", "--home", str(tmp_path), *flags, "--epochs", "1", "--precision", "fp32"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "training steps: eager: cpu (fp32)" in result.output
