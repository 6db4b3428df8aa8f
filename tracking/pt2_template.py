"""A pt2 model logged as a kept model of the same graph with its weight files replaced.

The first model a process exports costs ~2 s on 2 CPU cores: torch.export's machinery
(torch._dynamo among it) imports in 1.7 s, the trace takes 0.3-0.5 s, and MLflow checks the
requirements against the installed packages. A search exports one model at its end,
`promote` one for a best trial that has none. The exported graph depends on the network's
structure and code, never on its weights. So the first model exported on a machine for a
graph is kept under the user's cache folder (tracking.store_template.cache_root), named after
its fingerprint (tracking.pt2_fingerprint), with the list of its files; a later model of that
fingerprint is the kept files with the scorer's weights in place of the kept ones. The result
is checked before MLflow logs it: every file the list names, and every tensor the archive
holds the scorer's, byte for byte, with no constant besides (tracking.pt2_archive). A kept
model that fails is removed, and the model is exported. A cache that cannot be read or
written costs the export, nothing else.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tracking.pt2_archive import PT2_FILE, same_tensors, write_with_weights
from tracking.pt2_fingerprint import fingerprint
from tracking.store_template import cache_root

if TYPE_CHECKING:
    from mlflow.models import Model
    from torch import nn

TEMPLATES_FOLDER = "pt2-models"
KEPT_TEMPLATES = 8  # a few heads and versions; each one is a model's size (8 MB)
MODEL_FOLDER = "model"  # a kept model's MLflow folder, beside MANIFEST
MANIFEST = "files.json"  # each file of MODEL_FOLDER and its size, MLmodel aside
MLMODEL = "MLmodel"
STALE_COPY_S = 3600  # a half-made or half-removed copy this old was left by a dead process
_log = logging.getLogger(__name__)


class Unfit(Exception):
    """A kept model that is not whole, or not what the scorer's export would be."""


def template_folder(key: str) -> Path:
    return cache_root() / TEMPLATES_FOLDER / key


def log_from_template(run_id: str, scorer: nn.Module, name: str) -> str | None:
    """`scorer` logged under `run_id` from the kept model of its fingerprint (MLflow's
    global API pointed at the store: tracking.pt2_model.pointed_at); its model URI, or None
    where there is no usable kept model (nothing is logged then)."""
    template = _find(scorer)
    if template is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            prepared = _prepare(template, Path(tmp) / MODEL_FOLDER, scorer)
        except Unfit as exc:
            _log.debug("the kept model %s does not fit (%s): removed", template, exc)
            _discard(template)
            return None
        except OSError as exc:  # this machine's trouble (a full /tmp), not the kept model's
            _log.debug("could not use the kept model %s: %s", template, exc)
            return None
        try:
            info = _log_prepared(run_id, name, prepared)
        except Exception:
            _discard(template)  # the next model is exported, whatever failed here
            raise
    with contextlib.suppress(OSError):
        os.utime(template)  # recently used: the last one _prune removes
    return str(info.model_uri)


def _find(scorer: nn.Module) -> Path | None:
    key = fingerprint(scorer)
    if key is None:
        return None
    template = template_folder(key)
    try:
        return template if template.is_dir() else None
    except OSError:  # a cache folder this user may not read
        return None


def _log_prepared(run_id: str, name: str, prepared: _Prepared) -> Any:
    from mlflow.models import Model

    return Model.log(
        artifact_path=None,
        name=name,
        flavor=prepared,
        run_id=run_id,
        flavor_name="mlflow.pytorch",  # as mlflow.pytorch.log_model records it
        serialization_format="pt2",
        validate_serving_input=False,
    )


@dataclass(frozen=True)
class _Prepared:
    """What MLflow's Model.log asks of a flavor module: save_model, here the move of a folder
    made and checked before the logged model exists. Model.log creates it first: a failure
    after that would leave the run with a logged model without files."""

    folder: Path
    kept: Model
    size_change: int  # the archive's size against the kept one's

    def save_model(self, path: str, mlflow_model: Model, **_: Any) -> None:
        shutil.move(self.folder, path)  # a rename: both lie in the temporary folder
        mlflow_model.flavors = {k: dict(v) for k, v in self.kept.flavors.items()}
        mlflow_model.signature = self.kept.signature
        if self.kept.saved_input_example_info is not None:  # the example's files are moved
            mlflow_model.saved_input_example_info = self.kept.saved_input_example_info
        if self.kept.model_size_bytes is not None:  # measured by MLflow's rule, as kept
            mlflow_model.model_size_bytes = self.kept.model_size_bytes + self.size_change
        mlflow_model.save(os.path.join(path, MLMODEL))


def _prepare(template: Path, folder: Path, scorer: nn.Module) -> _Prepared:
    """The kept model's files with `scorer`'s weights, in `folder`; raises Unfit for a kept
    model that is not whole or not the scorer's graph, OSError for this machine's errors."""
    from mlflow.models import Model

    kept_folder = template / MODEL_FOLDER
    try:
        kept = Model.load(str(kept_folder / MLMODEL))
        listed = json.loads((template / MANIFEST).read_text())
    except Exception as exc:  # missing, or not MLflow's or ours
        raise Unfit(f"unreadable: {type(exc).__name__}") from exc
    shutil.copytree(kept_folder, folder, ignore=shutil.ignore_patterns(MLMODEL, PT2_FILE[-1]))
    kept_pt2, pt2 = kept_folder.joinpath(*PT2_FILE), folder.joinpath(*PT2_FILE)
    if not write_with_weights(kept_pt2, pt2, scorer):
        raise Unfit("its archive's tensors are not this scorer's")
    made, archive = _listing(folder), "/".join(PT2_FILE)  # the archive's size may differ
    if made.keys() != listed.keys() or any(made[f] != listed[f] for f in made if f != archive):
        raise Unfit("files missing or changed")
    if not same_tensors(pt2, scorer):
        raise Unfit("the made archive does not hold this scorer's tensors")
    return _Prepared(folder, kept, pt2.stat().st_size - kept_pt2.stat().st_size)


def _listing(folder: Path) -> dict[str, int]:
    """Each file under `folder` but MLmodel, with its size."""
    return {
        path.relative_to(folder).as_posix(): path.stat().st_size
        for path in folder.rglob("*")
        if path.is_file() and path.name != MLMODEL
    }


def keep_template(logged: Path, scorer: nn.Module) -> None:
    """Keeps the folder of a model just exported from `scorer`, if none is kept for its
    fingerprint and its archive holds exactly `scorer`'s tensors (all that a later swap
    replaces). A cache that cannot be written costs the next export, nothing else."""
    key = fingerprint(scorer)
    if key is None or not same_tensors(logged.joinpath(*PT2_FILE), scorer):
        return
    dest = template_folder(key)
    partial = dest.with_name(f".{key}.{secrets.token_hex(4)}")
    try:
        if dest.is_dir():
            return
        shutil.copytree(logged, partial / MODEL_FOLDER)
        (partial / MANIFEST).write_text(json.dumps(_listing(partial / MODEL_FOLDER)))
        partial.rename(dest)  # whole or not at all; another process may have kept it first
    except OSError as exc:
        _log.debug("could not keep the exported model %s: %s", logged, exc)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    _prune(dest.parent)


def _discard(folder: Path) -> None:
    """Removes a kept model at once (a rename) and then its files: a process killed while
    removing leaves a dot-named copy, never a kept model with files missing."""
    doomed = folder.with_name(f".{folder.name}.{secrets.token_hex(4)}")
    try:
        folder.rename(doomed)
    except OSError:
        return  # removed by another process already
    shutil.rmtree(doomed, ignore_errors=True)


def _prune(root: Path) -> None:
    """The most recently used KEPT_TEMPLATES kept models stay (each new version or edit of
    the network's code makes new ones), and so do copies under way; an old dot-named copy
    was left by a process that died while copying or removing."""
    try:
        entries = [(p, p.stat().st_mtime) for p in root.iterdir() if p.is_dir()]
    except OSError:
        return
    kept = sorted((e for e in entries if not e[0].name.startswith(".")), key=lambda e: -e[1])
    for old, _ in kept[KEPT_TEMPLATES:]:
        _discard(old)
    for path, when in entries:
        if path.name.startswith(".") and when < time.time() - STALE_COPY_S:
            shutil.rmtree(path, ignore_errors=True)
