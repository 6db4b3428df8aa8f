"""A model whose graph was exported before on this machine is logged from the kept export
with its weights replaced, and loads and scores exactly as an export of it would; a kept
export that is not whole or not the scorer's, or a cache that cannot be used, costs an
export and nothing else."""

from __future__ import annotations

import os
import struct
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
from siamese.scoring import PairScorer, decision_threshold
from tests.tracking.scorers import PAIRS, scorer_of
from tracking.local_artifacts import local_artifact_dir
from tracking.pt2_archive import PT2_FILE, SERIALIZATION_ID
from tracking.pt2_fingerprint import fingerprint
from tracking.pt2_model import log_pt2_model, pointed_at, without_dropout
from tracking.pt2_template import MODEL_FOLDER, TEMPLATES_FOLDER, template_folder


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SIAMESE_LAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def store(tmp_path: Path) -> tuple[str, str]:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    experiment = MlflowClient(uri).create_experiment("x", (tmp_path / "art").as_uri())
    return uri, experiment


@pytest.fixture
def exports(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The runs whose model was exported with torch.export, in order."""
    calls: list[str] = []
    export = pt2_model._export

    def counted(run_id: str, scorer: torch.nn.Module, name: str) -> str:
        calls.append(run_id)
        return export(run_id, scorer, name)

    monkeypatch.setattr(pt2_model, "_export", counted)
    return calls


def log(store: tuple[str, str], scorer: PairScorer) -> tuple[str, str]:
    """`scorer` logged under a new run: the run's id and the model's URI."""
    uri, experiment = store
    run_id = MlflowClient(uri).create_run(experiment).info.run_id
    with pointed_at(uri, experiment):
        return run_id, log_pt2_model(run_id, scorer, "model")


def kept(scorer: PairScorer) -> Path:
    return template_folder(str(fingerprint(without_dropout(scorer)))) / MODEL_FOLDER


def model_folder(store: tuple[str, str], model_uri: str) -> Path:
    logged = MlflowClient(store[0]).get_logged_model(model_uri.removeprefix("models:/"))
    folder = local_artifact_dir(logged.artifact_location)
    assert folder is not None
    return folder


def assert_scores_as(store: tuple[str, str], model_uri: str, scorer: PairScorer) -> None:
    """MLflow's two loaders score PAIRS as `scorer` does, bit for bit."""
    with pointed_at(*store):
        model = mlflow.pytorch.load_model(model_uri)
        pyfunc = mlflow.pyfunc.load_model(model_uri)
    with torch.no_grad():
        expected = scorer(PAIRS)
        assert torch.equal(model(PAIRS), expected)
    np.testing.assert_array_equal(np.asarray(pyfunc.predict(PAIRS.numpy())), expected.numpy())
    assert decision_threshold(model) == decision_threshold(scorer)


def data_offsets(pt2: Path) -> dict[str, int]:
    """Where each entry's data starts in the archive (from its local header)."""
    raw = pt2.read_bytes()
    with zipfile.ZipFile(pt2) as archive:
        infos = archive.infolist()
    offsets = {}
    for info in infos:
        name_length, extra_length = struct.unpack_from("<HH", raw, info.header_offset + 26)
        offsets[info.filename] = info.header_offset + 30 + name_length + extra_length
    return offsets


def test_a_second_model_of_a_head_is_made_from_the_kept_export(
    cache: Path, store: tuple[str, str], exports: list[str]
) -> None:
    first = scorer_of("contrastive", seed=1, dropout=0.1)
    log(store, first)
    assert len(exports) == 1 and kept(first).joinpath(*PT2_FILE).is_file()

    second = scorer_of("contrastive", seed=2, dropout=0.4)  # a search's other draw
    run_id, model_uri = log(store, second)
    assert len(exports) == 1, "the second model was exported, not made from the kept one"
    assert_scores_as(store, model_uri, second)

    folder = model_folder(store, model_uri)
    info = mlflow.models.Model.load(str(folder))
    assert info.run_id == run_id and info.model_id == model_uri.removeprefix("models:/")
    assert set(info.flavors) == {"pytorch", "python_function"} and info.signature is not None
    assert (info.model_size_bytes or 0) > 8_000_000
    example = info.load_input_example(str(folder))
    assert isinstance(example, np.ndarray) and example.shape == (2, 2, 40, 50)
    template = kept(first)
    for name in ("requirements.txt", "conda.yaml", "python_env.yaml", "input_example.json"):
        assert (folder / name).read_bytes() == (template / name).read_bytes()


def test_the_made_archive_is_laid_out_as_torch_writes_one(
    cache: Path, store: tuple[str, str], exports: list[str]
) -> None:
    log(store, scorer_of("abs", seed=1))
    _, model_uri = log(store, scorer_of("abs", seed=2))
    made = model_folder(store, model_uri).joinpath(*PT2_FILE)
    template = kept(scorer_of("abs", seed=1)).joinpath(*PT2_FILE)
    with zipfile.ZipFile(made) as archive, zipfile.ZipFile(template) as original:
        assert archive.testzip() is None  # every entry's CRC
        assert archive.namelist() == original.namelist()
        serial = next(n for n in archive.namelist() if n.endswith(SERIALIZATION_ID))
        assert archive.read(serial) != original.read(serial)
    assert all(offset % 64 == 0 for offset in data_offsets(template).values())
    assert all(offset % 64 == 0 for offset in data_offsets(made).values())


def test_a_kept_export_is_used_only_for_the_same_graph(
    cache: Path, store: tuple[str, str], exports: list[str]
) -> None:
    log(store, scorer_of("contrastive", seed=1))
    log(store, scorer_of("relu2", seed=2))
    _, margin_uri = log(store, scorer_of("contrastive", seed=3, margin=2.0))
    assert len(exports) == 3  # another head, another margin: other graphs, exported
    assert len(list((cache / TEMPLATES_FOLDER).iterdir())) == 3
    assert_scores_as(store, margin_uri, scorer_of("contrastive", seed=3, margin=2.0))


def test_a_kept_export_of_other_tensors_is_replaced_by_an_export(
    cache: Path, store: tuple[str, str], exports: list[str]
) -> None:
    log(store, scorer_of("abs", seed=1))
    kept_pt2 = kept(scorer_of("abs", seed=1)).joinpath(*PT2_FILE)
    with zipfile.ZipFile(kept_pt2) as archive:
        entries = {info.filename: archive.read(info) for info in archive.infolist()}
    config = next(name for name in entries if name.endswith("model_weights_config.json"))
    entries[config] = entries[config].replace(b'"as_int": 100}', b'"as_int": 99}', 1)
    with zipfile.ZipFile(kept_pt2, "w") as archive:  # a weight of another shape
        for name, data in entries.items():
            archive.writestr(name, data)

    run_id, model_uri = log(store, scorer_of("abs", seed=2))
    assert len(exports) == 2
    models = MlflowClient(store[0]).search_logged_models(
        experiment_ids=[store[1]], filter_string=f"source_run_id = '{run_id}'"
    )
    assert [m.model_id for m in models] == [model_uri.removeprefix("models:/")]
    assert_scores_as(store, model_uri, scorer_of("abs", seed=2))
    with zipfile.ZipFile(kept_pt2) as archive:  # kept again, from the new export
        assert archive.read(config) != entries[config]


def test_a_kept_export_with_a_file_missing_is_replaced_by_an_export(
    cache: Path, store: tuple[str, str], exports: list[str]
) -> None:
    log(store, scorer_of("abs", seed=1))
    (kept(scorer_of("abs", seed=1)) / "conda.yaml").unlink()  # a half-removed copy
    _, model_uri = log(store, scorer_of("abs", seed=2))
    assert len(exports) == 2
    assert (model_folder(store, model_uri) / "conda.yaml").is_file()
    assert (kept(scorer_of("abs", seed=1)) / "conda.yaml").is_file()  # kept again, whole


def test_a_failure_once_the_logged_model_exists_drops_the_kept_export(
    cache: Path, store: tuple[str, str], exports: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    log(store, scorer_of("abs", seed=1))

    def full_disk(*_: object, **__: object) -> None:
        raise OSError(28, "No space left on device")

    save_model = pt2_template._Prepared.save_model
    monkeypatch.setattr(pt2_template._Prepared, "save_model", full_disk)
    with pytest.raises(OSError, match="No space left"):
        log(store, scorer_of("abs", seed=2))
    assert not kept(scorer_of("abs", seed=1)).exists()
    monkeypatch.setattr(pt2_template._Prepared, "save_model", save_model)
    log(store, scorer_of("abs", seed=3))  # exported, and kept again
    assert len(exports) == 2 and kept(scorer_of("abs", seed=1)).is_dir()


class _Unreadable(type(Path())):  # type: ignore[misc]
    def is_dir(self) -> bool:
        raise PermissionError(13, "Permission denied", str(self))


@pytest.mark.parametrize("cache_is", ["a file", "unreadable"])
def test_a_cache_that_cannot_be_used_costs_an_export_only(
    cache_is: str,
    tmp_path: Path,
    store: tuple[str, str],
    exports: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("SIAMESE_LAB_CACHE", str(blocked))
    if cache_is == "unreadable":
        monkeypatch.setattr(pt2_template, "template_folder", lambda key: _Unreadable(blocked))
    log(store, scorer_of("abs", seed=1))
    _, model_uri = log(store, scorer_of("abs", seed=2))
    assert len(exports) == 2 and blocked.read_text() == "not a folder"
    assert_scores_as(store, model_uri, scorer_of("abs", seed=2))


def test_keeping_an_export_never_fails_its_logging(
    cache: Path, store: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("the cache broke")

    monkeypatch.setattr(pt2_model, "keep_template", broken)
    _, model_uri = log(store, scorer_of("abs", seed=1))
    assert_scores_as(store, model_uri, scorer_of("abs", seed=1))


def test_without_dropout_scores_as_the_scorer_and_leaves_it_alone() -> None:
    scorer = scorer_of("contrastive", seed=4, dropout=0.3)
    copy = without_dropout(scorer)
    assert not any(isinstance(m, torch.nn.Dropout) for m in copy.modules())
    assert isinstance(scorer.net.tower.dropout, torch.nn.Dropout)
    with torch.no_grad():
        assert torch.equal(copy(PAIRS), scorer(PAIRS))


def test_the_cache_keeps_the_last_used_exports(cache: Path) -> None:
    root = cache / TEMPLATES_FOLDER
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
