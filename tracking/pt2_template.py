"""A pt2 model logged as a kept model of the same graph with its weight files replaced.

The first model a process exports costs ~2 s on 2 CPU cores: torch.export's machinery
(torch._dynamo among it) imports in 1.7 s, the trace takes 0.3-0.5 s, and MLflow checks the
requirements against the installed packages. A search exports one model at its end,
`promote` one for a best trial that has none. The exported graph depends on the network's
structure and code, never on its weights. So the first model exported on a machine for a
structure is kept under the user's cache folder (tracking.store_template.cache_root), named
after a fingerprint of everything the graph depends on (torch, MLflow, Python, siamese-lab
and its source files, each layer's class and settings, each tensor's name, dtype and shape),
and a later model of that fingerprint is the kept one's files with the scorer's weights in
place of its own. The result is checked as `predict` checks a model (tracking.pt2_archive:
every tensor the archive holds is the scorer's, byte for byte, and no constant besides)
before MLflow logs it; a kept model that fails is removed, and the model is exported.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tracking.pt2_archive import PT2_FILE, same_tensors, write_with_weights
from tracking.store_template import cache_root

if TYPE_CHECKING:
    from mlflow.models import Model
    from torch import nn

TEMPLATES_FOLDER = "pt2-models"
KEPT_TEMPLATES = 8  # a few heads and versions; each one is a model's size (8 MB)
MLMODEL = "MLmodel"
_SIMPLE = (bool, int, float, str, tuple, type(None))
_log = logging.getLogger(__name__)


def fingerprint(scorer: nn.Module) -> str | None:
    """What the graph torch.export makes of `scorer` depends on, hashed; None where
    siamese-lab's source files cannot be read (nothing is kept or reused then)."""
    import mlflow
    import torch

    import siamese

    sources = _source_digest()
    if sources is None:
        return None
    parts = [torch.__version__, mlflow.__version__, sys.version, siamese.__version__, sources]
    for name, module in scorer.named_modules():
        kind = f"{type(module).__module__}.{type(module).__qualname__}"
        parts.append(f"{name}:{kind}:{_settings(module)}")
    for name, tensor in scorer.state_dict().items():
        parts.append(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def _settings(module: nn.Module) -> str:
    """A layer's own settings (a convolution's kernel and padding, a head's margin): what
    a trace bakes into the graph as numbers."""
    own = {
        k: v for k, v in vars(module).items() if not k.startswith("_") and isinstance(v, _SIMPLE)
    }
    return repr(sorted(own.items(), key=lambda item: item[0]))


@cache
def _source_digest() -> str | None:
    """siamese-lab's network code and this export's code: an edited forward is a new graph
    even where the version number stays the same."""
    import siamese

    files = sorted(Path(siamese.__file__).parent.rglob("*.py"))
    files += [Path(__file__).with_name("pt2_model.py"), Path(__file__)]
    digest = hashlib.sha256()
    try:
        for path in files:
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    except OSError:
        return None
    return digest.hexdigest()


def template_folder(key: str) -> Path:
    return cache_root() / TEMPLATES_FOLDER / key


def log_from_template(run_id: str, scorer: nn.Module, name: str) -> str | None:
    """`scorer` logged under `run_id` from the kept model of its fingerprint (MLflow's
    global API pointed at the store: tracking.pt2_model.pointed_at); its model URI, or None
    where there is no usable kept model (nothing is logged then)."""
    key = fingerprint(scorer)
    template = None if key is None else template_folder(key)
    if template is None or not template.is_dir():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        prepared = _prepare(template, Path(tmp) / "model", scorer)
        if prepared is None:
            _log.debug("the kept model %s does not fit; removed", template)
            shutil.rmtree(template, ignore_errors=True)
            return None
        from mlflow.models import Model

        info = Model.log(
            artifact_path=None,
            name=name,
            flavor=prepared,
            run_id=run_id,
            flavor_name="mlflow.pytorch",  # as mlflow.pytorch.log_model records it
            serialization_format="pt2",
            validate_serving_input=False,
        )
    _touch(template)
    return str(info.model_uri)


@dataclass(frozen=True)
class _Prepared:
    """What MLflow's Model.log asks of a flavor module: save_model, here a copy of a folder
    made and checked before the logged model is created (a failure after it would leave the
    run with a logged model without files)."""

    folder: Path
    kept: Model

    def save_model(self, path: str, mlflow_model: Model, **_: Any) -> None:
        shutil.copytree(self.folder, path)
        mlflow_model.flavors = {k: dict(v) for k, v in self.kept.flavors.items()}
        mlflow_model.signature = self.kept.signature
        if self.kept.saved_input_example_info is not None:  # the example's files are copied
            mlflow_model.saved_input_example_info = self.kept.saved_input_example_info
        mlflow_model.model_size_bytes = _size(Path(path))  # as mlflow.pytorch measures it
        mlflow_model.save(os.path.join(path, MLMODEL))


def _prepare(template: Path, folder: Path, scorer: nn.Module) -> _Prepared | None:
    from mlflow.models import Model

    try:
        kept = Model.load(str(template / MLMODEL))
        shutil.copytree(template, folder, ignore=shutil.ignore_patterns(MLMODEL, PT2_FILE[-1]))
        pt2 = folder.joinpath(*PT2_FILE)
        if not write_with_weights(template.joinpath(*PT2_FILE), pt2, scorer):
            return None
    except Exception as exc:  # a kept folder half removed, an MLmodel that does not parse
        _log.debug("could not use the kept model %s: %s", template, exc)
        return None
    return _Prepared(folder, kept) if same_tensors(pt2, scorer) else None


def keep_template(logged: Path, scorer: nn.Module) -> None:
    """Keeps the folder of a model just exported from `scorer`, if none is kept for its
    fingerprint and its archive holds exactly `scorer`'s tensors (all a later swap
    replaces). A cache that cannot be written costs the next export, nothing else."""
    key = fingerprint(scorer)
    if key is None or not same_tensors(logged.joinpath(*PT2_FILE), scorer):
        return
    dest = template_folder(key)
    if dest.is_dir():
        return
    partial = dest.with_name(f".{key}.{secrets.token_hex(4)}")
    try:
        shutil.copytree(logged, partial)
        partial.rename(dest)  # whole or not at all; another process may have kept it first
    except OSError as exc:
        _log.debug("could not keep the exported model %s: %s", logged, exc)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    _prune(dest.parent)


def _prune(root: Path) -> None:
    """The most recently used KEPT_TEMPLATES kept models stay (each new version or edit of
    the network's code makes new ones), and so do copies under way; a copy an hour old was
    left by a process that died while copying."""
    try:
        entries = [(p, p.stat().st_mtime) for p in root.iterdir() if p.is_dir()]
    except OSError:
        return
    kept = sorted((e for e in entries if not e[0].name.startswith(".")), key=lambda e: -e[1])
    stale = [p for p, when in entries if p.name.startswith(".") and when < time.time() - 3600]
    for old in [p for p, _ in kept[KEPT_TEMPLATES:]] + stale:
        shutil.rmtree(old, ignore_errors=True)


def _touch(template: Path) -> None:
    with contextlib.suppress(OSError):
        os.utime(template)


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
