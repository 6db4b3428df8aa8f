"""The key of a kept export follows everything the exported graph depends on, and is None
where it cannot vouch for the network."""

from __future__ import annotations

import os
import time
from pathlib import Path

import mlflow
import pytest
import torch

import siamese
import tracking.pt2_fingerprint as pt2_fingerprint
from tests.tracking.scorers import scorer_of
from tracking.pt2_fingerprint import fingerprint, source_digest
from tracking.pt2_model import without_dropout


def key(head: str = "abs", seed: int = 1, dropout: float = 0.1, margin: float = 1.0) -> str | None:
    return fingerprint(without_dropout(scorer_of(head, seed, dropout, margin)))


def test_the_key_follows_the_graph_not_the_weights_or_the_dropout() -> None:
    base = key()
    assert base is not None
    assert key(seed=7, dropout=0.3) == base
    assert key(head="sq") != base  # a flag (LogitHead.squared), not a layer
    assert key(head="contrastive", margin=1.0) != key(head="contrastive", margin=1.5)


@pytest.mark.parametrize("module", [torch, mlflow, siamese], ids=lambda m: m.__name__)
def test_another_version_is_another_key(module: object, monkeypatch: pytest.MonkeyPatch) -> None:
    base = key()
    monkeypatch.setattr(module, "__version__", "99.0")
    assert key() != base


def test_another_build_tool_is_another_key(monkeypatch: pytest.MonkeyPatch) -> None:
    base = key()
    monkeypatch.setattr(pt2_fingerprint, "_installed", lambda tool: f"{tool}==0.1")
    assert key() != base


def test_a_network_it_cannot_vouch_for_has_no_key() -> None:
    scorer = without_dropout(scorer_of("abs", seed=1))
    head = scorer.get_submodule("net.head")
    head.__dict__["activation"] = torch.tanh  # a setting that is not a plain value
    assert fingerprint(scorer) is None

    hooked = without_dropout(scorer_of("abs", seed=1))
    hooked.get_submodule("net.tower.fc").register_forward_hook(lambda m, args, out: out * 2)
    assert fingerprint(hooked) is None

    handle = torch.nn.modules.module.register_module_forward_pre_hook(lambda m, a: None)
    try:
        assert key() is None
    finally:
        handle.remove()
    assert key() is not None


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in siamese package of one file, imported "now"."""
    folder = tmp_path / "siamese"
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    (folder / "model.py").write_text("def forward(x):\n    return x\n")
    monkeypatch.setattr(siamese, "__file__", str(folder / "__init__.py"))
    monkeypatch.setattr(siamese, "IMPORTED_AT_NS", time.time_ns())
    return folder


def test_an_edit_of_the_network_code_is_another_key(package: Path) -> None:
    before = source_digest()
    assert before is not None
    model = package / "model.py"
    model.write_text("def forward(x):\n    return 2 * x\n")
    os.utime(model, ns=(siamese.IMPORTED_AT_NS - 1, siamese.IMPORTED_AT_NS - 1))
    pt2_fingerprint._digest.cache_clear()  # a new process reads the edited file
    assert source_digest() not in (None, before)


def test_code_edited_after_the_import_has_no_key(package: Path) -> None:
    assert source_digest() is not None
    (package / "model.py").write_text("def forward(x):\n    return 2 * x\n")
    os.utime(package / "model.py", ns=(siamese.IMPORTED_AT_NS + 10**9,) * 2)
    assert source_digest() is None  # the network in memory may be the older code


def test_an_install_without_sources_has_no_key(package: Path) -> None:
    for path in package.glob("*.py"):
        path.unlink()
    assert source_digest() is None
