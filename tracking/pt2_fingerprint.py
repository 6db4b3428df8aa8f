"""What the graph torch.export makes of a scorer depends on, hashed (tracking.pt2_template).

Everything that reaches the exported model's files: the versions of torch, MLflow, Python,
siamese-lab and the build tools MLflow records (python_env.yaml); the source of the network
and of the export; each layer's class and its own settings (a convolution's kernel, a head's
margin); each tensor's name, dtype and shape. Anything it cannot vouch for gives None, and
the model is exported: a layer setting that is not a plain value, a forward hook, a source
file changed since siamese-lab was imported (the network in memory is the older code).
"""

from __future__ import annotations

import hashlib
import sys
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

_PLAIN = (bool, int, float, str, type(None))
BUILD_TOOLS = ("pip", "setuptools")  # pinned in the model's python_env.yaml by MLflow


def fingerprint(scorer: nn.Module) -> str | None:
    """`scorer`'s graph key; None where it cannot be vouched for (see the module)."""
    import mlflow
    import torch

    import siamese

    sources = source_digest()
    layers = [_layer(name, module) for name, module in scorer.named_modules()]
    if sources is None or None in layers or _global_hooks():
        return None
    parts = [torch.__version__, mlflow.__version__, sys.version, siamese.__version__, sources]
    parts += [_installed(tool) for tool in BUILD_TOOLS]
    parts += [str(layer) for layer in layers]
    for name, tensor in scorer.state_dict().items():
        parts.append(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def _layer(name: str, module: nn.Module) -> str | None:
    """A layer's class and its own settings, what a trace bakes into the graph as numbers;
    None for a setting that is not a plain value (or a list of them), or a forward hook."""
    import torch
    from torch import nn

    if module._forward_hooks or module._forward_pre_hooks:
        return None
    base = _module_fields()
    own = {k: v for k, v in vars(module).items() if k not in base or k == "training"}
    for value in own.values():
        if not isinstance(value, (nn.Module, torch.Tensor)) and not _plain(value):
            return None
    settings = sorted((k, repr(v)) for k, v in own.items() if _plain(v))
    return f"{name}:{type(module).__module__}.{type(module).__qualname__}:{settings}"


def _plain(value: object) -> bool:
    if isinstance(value, (tuple, list)):
        return all(_plain(item) for item in value)
    return isinstance(value, _PLAIN)


@cache
def _module_fields() -> frozenset[str]:
    """The bookkeeping every torch module has (its parameters, buffers, children, hooks)."""
    from torch import nn

    return frozenset(vars(nn.Module()))


def _global_hooks() -> bool:
    from torch.nn.modules import module

    hooks = ("_global_forward_hooks", "_global_forward_pre_hooks")
    return any(getattr(module, name, None) for name in hooks)


@cache  # a metadata scan, ~25 ms the first time
def _installed(tool: str) -> str:
    try:
        return f"{tool}=={metadata.version(tool)}"
    except metadata.PackageNotFoundError:
        return f"{tool} absent"


def source_digest() -> str | None:
    """siamese-lab's network code and the export's code: an edited forward is a new graph
    even where the version number stays. None where a file cannot be read or was changed
    after siamese-lab was imported (clocks that disagree only cost an export)."""
    import siamese

    files = _source_files()
    try:
        if any(path.stat().st_mtime_ns > siamese.IMPORTED_AT_NS for path in files):
            return None
    except OSError:
        return None
    return _digest(tuple(files))


def _source_files() -> list[Path]:
    """The siamese package's files (none for an install without sources: no key then) and
    the export's own modules."""
    import siamese

    network = sorted(Path(siamese.__file__).parent.rglob("*.py"))
    here = Path(__file__).parent
    export = ("pt2_model.py", "pt2_template.py", "pt2_archive.py", "pt2_fingerprint.py")
    return network + [here / name for name in export] if network else []


@cache
def _digest(files: tuple[Path, ...]) -> str | None:
    digest = hashlib.sha256()
    try:
        for path in files:
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    except OSError:
        return None
    return digest.hexdigest() if files else None
