"""A model whose graph was exported before on this machine is logged from the kept one with
its weights replaced, and loads and scores exactly as an export of it would."""

from __future__ import annotations

import os
import time
import zipfile
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

import tracking.pt2_model as pt2_model
import tracking.pt2_template as pt2_template
from siamese.model import SiameseNet
from siamese.scoring import PairScorer, decision_threshold
from tracking.local_artifacts import local_artifact_dir
from tracking.pt2_archive import PT2_FILE
from tracking.pt2_model import log_pt2_model, pointed_at, without_dropout
from tracking.pt2_template import fingerprint, template_folder

PAIRS = torch.from_numpy(np.random.default_rng(1).random((9, 2, 40, 50), dtype=np.float32))


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SIAMESE_LAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def store(tmp_path: Path) -> tuple[str, str]:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    experiment = MlflowClient(uri).create_experiment("x", (tmp_path / "art").as_uri())
    return uri, experiment


def scorer_of(head: str, seed: int, dropout: float = 0.1, margin: float = 1.0) -> PairScorer:
    torch.manual_seed(seed)
    net = SiameseNet(head, dropout, margin)
    net.set_normalization(0.2 + seed / 100, 0.3)
    net.set_decision_threshold(0.4 + seed / 100)
    return PairScorer(net).eval()


def log(store: tuple[str, str], scorer: PairScorer) -> tuple[str, str]:
    """`scorer` logged under a new run: the run's id and the model's URI."""
    uri, experiment = store
    run_id = MlflowClient(uri).create_run(experiment).info.run_id
    with pointed_at(uri, experiment):
        return run_id, log_pt2_model(run_id, scorer, "model")


def exports_counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    export = pt2_model._export

    def counted(run_id: str, scorer: torch.nn.Module, name: str) -> str:
        calls.append(run_id)
        return export(run_id, scorer, name)

    monkeypatch.setattr(pt2_model, "_export", counted)
    return calls


def loaded_scores(store: tuple[str, str], model_uri: str) -> tuple[torch.Tensor, np.ndarray]:
    """What MLflow's two loaders make of the logged model on PAIRS."""
    with pointed_at(*store):
        model = mlflow.pytorch.load_model(model_uri)
        pyfunc = mlflow.pyfunc.load_model(model_uri)
    with torch.no_grad():
        return model(PAIRS), np.asarray(pyfunc.predict(PAIRS.numpy()))


def test_a_second_model_of_a_head_is_made_from_the_kept_export(
    cache: Path, store: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    exports = exports_counted(monkeypatch)
    first = scorer_of("contrastive", seed=1, dropout=0.1)
    log(store, first)
    assert len(exports) == 1
    kept = template_folder(str(fingerprint(without_dropout(first))))
    assert kept.joinpath(*PT2_FILE).is_file()

    second = scorer_of("contrastive", seed=2, dropout=0.4)  # a search's other draw
    run_id, model_uri = log(store, second)
    assert len(exports) == 1, "the second model was exported, not made from the kept one"
    by_torch, by_pyfunc = loaded_scores(store, model_uri)
    with torch.no_grad():
        expected = second(PAIRS)
    assert torch.equal(by_torch, expected)
    np.testing.assert_array_equal(by_pyfunc, expected.numpy())
    with pointed_at(*store):
        model = mlflow.pytorch.load_model(model_uri)
    assert decision_threshold(model) == pytest.approx(0.42)

    logged = MlflowClient(store[0]).get_logged_model(model_uri.removeprefix("models:/"))
    assert logged.source_run_id == run_id
    info = mlflow.models.Model.load(str(local_artifact_dir(logged.artifact_location)))
    assert set(info.flavors) == {"pytorch", "python_function"}
    assert info.run_id == run_id and info.model_id == logged.model_id
    assert info.signature is not None and (info.model_size_bytes or 0) > 8_000_000


def test_a_kept_export_is_used_only_for_the_same_graph(
    cache: Path, store: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    exports = exports_counted(monkeypatch)
    log(store, scorer_of("contrastive", seed=1))
    log(store, scorer_of("relu2", seed=2))
    _, margin_uri = log(store, scorer_of("contrastive", seed=3, margin=2.0))
    assert len(exports) == 3  # another head, another margin: other graphs, exported
    assert len(list((cache / pt2_template.TEMPLATES_FOLDER).iterdir())) == 3
    with torch.no_grad():
        expected = scorer_of("contrastive", seed=3, margin=2.0)(PAIRS)
    assert torch.equal(loaded_scores(store, margin_uri)[0], expected)


def test_the_fingerprint_follows_the_graph_not_the_weights() -> None:
    def key(scorer: PairScorer) -> str | None:
        return fingerprint(without_dropout(scorer))

    base = key(scorer_of("abs", seed=1, dropout=0.1))
    assert base is not None
    assert key(scorer_of("abs", seed=7, dropout=0.3)) == base
    assert key(scorer_of("sq", seed=1)) != base  # a flag (LogitHead.squared), not a layer
    assert key(scorer_of("contrastive", seed=1, margin=1.0)) != key(
        scorer_of("contrastive", seed=1, margin=1.5)
    )


def test_an_edit_of_the_network_code_is_another_fingerprint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import siamese

    package = tmp_path / "siamese"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "model.py").write_text("def forward(x):\n    return x\n")
    monkeypatch.setattr(siamese, "__file__", str(package / "__init__.py"))
    pt2_template._source_digest.cache_clear()
    try:
        before = pt2_template._source_digest()
        (package / "model.py").write_text("def forward(x):\n    return 2 * x\n")
        pt2_template._source_digest.cache_clear()
        assert pt2_template._source_digest() != before
    finally:
        pt2_template._source_digest.cache_clear()


def test_a_kept_export_that_does_not_fit_is_replaced_by_an_export(
    cache: Path, store: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    exports = exports_counted(monkeypatch)
    first = scorer_of("abs", seed=1)
    log(store, first)
    kept_pt2 = template_folder(str(fingerprint(without_dropout(first)))).joinpath(*PT2_FILE)
    with zipfile.ZipFile(kept_pt2) as archive:
        entries = {info.filename: archive.read(info) for info in archive.infolist()}
    config = next(name for name in entries if name.endswith("model_weights_config.json"))
    entries[config] = entries[config].replace(b'"as_int": 100}', b'"as_int": 99}', 1)
    with zipfile.ZipFile(kept_pt2, "w") as archive:  # a weight of another shape
        for name, data in entries.items():
            archive.writestr(name, data)

    run_id, model_uri = log(store, scorer_of("abs", seed=2))
    assert len(exports) == 2
    client = MlflowClient(store[0])
    run_models = client.search_logged_models(
        experiment_ids=[store[1]], filter_string=f"source_run_id = '{run_id}'"
    )
    assert [m.model_id for m in run_models] == [model_uri.removeprefix("models:/")]
    with torch.no_grad():
        expected = scorer_of("abs", seed=2)(PAIRS)
    assert torch.equal(loaded_scores(store, model_uri)[0], expected)
    with zipfile.ZipFile(kept_pt2) as archive:  # kept again, from the new export
        assert archive.read(config) != entries[config]


def test_without_dropout_scores_as_the_scorer_and_leaves_it_alone() -> None:
    scorer = scorer_of("contrastive", seed=4, dropout=0.3)
    copy = without_dropout(scorer)
    assert not any(isinstance(m, torch.nn.Dropout) for m in copy.modules())
    assert isinstance(scorer.net.tower.dropout, torch.nn.Dropout)
    with torch.no_grad():
        assert torch.equal(copy(PAIRS), scorer(PAIRS))


def test_the_cache_keeps_the_last_used_exports(cache: Path) -> None:
    root = cache / pt2_template.TEMPLATES_FOLDER
    now = time.time()
    for age in range(12):
        (root / f"key{age}").mkdir(parents=True)
        os.utime(root / f"key{age}", (now - age * 60, now - age * 60))
    for name, age in ((".old.copy", 7200), (".new.copy", 10)):
        (root / name).mkdir()
        os.utime(root / name, (now - age, now - age))
    pt2_template._prune(root)
    left = {p.name for p in root.iterdir()}
    assert left == {f"key{age}" for age in range(pt2_template.KEPT_TEMPLATES)} | {".new.copy"}
