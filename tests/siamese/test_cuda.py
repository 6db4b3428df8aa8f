"""The CUDA path for real: data resident on the device, bf16 autocast, the step in a CUDA
graph. The checks live in `bench/gpu_checks.py`, which `bench/gpu_check.sh` runs without
pytest on a bare GPU machine; here they run under pytest, skipped where no GPU is present
(see tests/conftest.py). On the CPU the same path is emulated: test_cuda_emulated.py."""

from collections.abc import Callable

import pytest

from bench.gpu_checks import CHECKS, Setup, make_setup

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def gpu_setup() -> Setup:
    return make_setup("cuda")


@pytest.mark.parametrize("check", CHECKS, ids=[check.__name__ for check in CHECKS])
def test_gpu_check(gpu_setup: Setup, check: Callable[[Setup], str]) -> None:
    line = check(gpu_setup)
    assert not line.startswith("skipped"), line
