"""One training run, as `siamese-lab train` does it: data checks, `fit`, the diagnosis
(computed once), and - when a tracker is given - an MLflow run that ends with a status."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch

from siamese import Diagnosis, PairData, diagnose, fit, prepare_data
from siamese.config import PRESETS, TrainConfig, build_config, is_device_spec, with_overrides
from siamese.errors import CheckpointError, ConfigError
from siamese.interrupts import InterruptCheck, interrupts_remembered
from siamese.scoring import CheckedCheckpoint, check_payload
from siamese.train import Callback, FitResult, resolve_device
from siamese.train.checkpoint import load_for_resume
from tracking.base import Tracker

# What a resume may change; every other flag is fixed by the checkpoint.
RESUME_FLAGS = ("--epochs", "--device", "--precision")


@dataclass(frozen=True)
class TrainRequest:
    config: TrainConfig
    checkpoint_dir: Path
    resume: Path | None = None
    run_name: str = ""


@dataclass(frozen=True)
class TrainOutcome:
    result: FitResult
    diagnosis: Diagnosis
    checkpoint_dir: Path
    run_id: str | None = None
    model_uri: str | None = None
    run_url: str | None = None


def new_run_name() -> str:
    return f"train-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def check_device(flag: str, spec: str) -> str:
    """`spec` if this machine has that device: a missing GPU is bad input here, before any
    study, run or folder is made (not an error in a worker, a trial or a run)."""
    if not is_device_spec(spec):
        raise ConfigError(f"{flag} {spec!r}: expected auto, cpu, cuda or cuda:N")
    try:
        resolve_device(spec)
    except ConfigError as exc:
        raise ConfigError(f"{flag} {str(exc).removeprefix('--device ')}") from exc
    return spec


# Local workers per CPU core beyond which `--jobs` is refused: more only share the same
# cores, and each holds its own torch, data and stores (about 0.5 GB).
JOBS_PER_CORE = 4


def check_jobs(jobs: int) -> None:
    """Bad input unless this machine can run `jobs` local workers: a typo such as --jobs 400
    would start 400 processes that exhaust its memory before the first trial."""
    cores = usable_cores()
    if jobs > JOBS_PER_CORE * cores:
        raise ConfigError(
            f"--jobs {jobs}: this machine has {cores} CPU core(s), room for at most "
            f"{JOBS_PER_CORE * cores} local workers (each holds about 0.5 GB and shares the "
            "cores); more machines join with `siamese-lab worker`"
        )


def usable_cores() -> int:
    """The cores this process may run on (a container's or taskset's share, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def gpu_devices(devices: str) -> tuple[str, ...]:
    """`--devices 0,1,2,3` -> ("cuda:0", ..., "cuda:3"), every one present on this machine."""
    indices = [d.strip() for d in devices.split(",") if d.strip()]
    if not indices or not all(d.isascii() and d.isdigit() for d in indices):
        raise ConfigError(f"--devices {devices!r}: expected GPU indices such as 0,1,2,3")
    for index in indices:
        try:
            resolve_device(f"cuda:{index}")
        except ConfigError as exc:
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            raise ConfigError(
                f"--devices {devices}: there is no GPU {index} here ({count} CUDA device(s)); "
                "use --jobs N for worker processes on the CPU"
            ) from exc
    return tuple(f"cuda:{index}" for index in indices)


def resume_request(
    path: Path,
    epochs: int | None,
    device: str | None,
    typed: Mapping[str, Any] | None = None,
    precision: str | None = None,
    flag_names: Mapping[str, str] | None = None,
) -> TrainRequest:
    """Continue from a checkpoint: its config (only --epochs, --device and --precision may
    change: they say how long and how, not what is learned), its folder, a new run.
    `typed` holds the other flags the user gave (config field or "preset": value, named on
    the command line as `flag_names` says): one that would change the checkpoint's config
    cannot be honoured, so it is refused instead of ignored; one that repeats it is fine.
    The checkpoint is read and checked whole here, before any data is loaded, any run is
    created or any epoch is trained."""
    start, checked = _resume_point(path)  # weights that do not fit its config fail here
    changing = _changing(checked.config, typed or {})
    if changing:
        names = flag_names or {}
        raise ConfigError(
            f"--resume {path}: {', '.join(names.get(k, k) for k in changing)} cannot change "
            f"on a resume (the checkpoint fixes them); only {', '.join(RESUME_FLAGS[:-1])} "
            f"and {RESUME_FLAGS[-1]} can"
        )
    config = with_overrides(checked.config, epochs=epochs, device=device, precision=precision)
    done = _epoch_reached(start, checked.payload)
    if config.epochs <= done:
        raise ConfigError(
            f"--resume {path}: the checkpoint already holds epoch {done} of {config.epochs}; "
            f"give --epochs above {done} to train on"
        )
    check_device("--device", config.device)
    # `start`, not `path`: fit then loads the sound file directly, without a second warning.
    return TrainRequest(config, path.parent, start, new_run_name())


def kept_in_home(request: TrainRequest, checkpoints: Path) -> TrainRequest:
    """A resumed run goes on in its checkpoint's folder when that lies in this home's
    `checkpoints` folder. A checkpoint from elsewhere (another home, a copy) is left as it
    was, and the run continues in a new folder of this home: a run writes only inside the
    home it is tracked in (it replaced the other home's last.pt and best.pt)."""
    if request.checkpoint_dir.resolve().is_relative_to(checkpoints.resolve()):
        return request
    return replace(request, checkpoint_dir=checkpoints / request.run_name)


def _changing(config: TrainConfig, typed: Mapping[str, Any]) -> list[str]:
    """The keys of `typed` (config fields, or "preset") that would give the resumed run
    another config than `config`: none when all of them together rebuild it (the command
    that made the checkpoint, `--preset fixed --dropout 0.1` included), else the ones whose
    fields differ, or every one when they cannot build a config at all."""
    preset = typed.get("preset")
    values = {k: v for k, v in typed.items() if k != "preset"}
    # The checkpoint's config as build_config leaves any config (an older version kept a
    # --target beside --task same-class, which build_config drops): only flags may differ.
    stored = build_config(None, {}, defaults=config)
    try:
        rebuilt = build_config(preset, values, defaults=config)
    except ConfigError:
        return list(typed)
    differing = _differing_fields(stored, rebuilt)
    if not differing:
        return []
    named = [k for k in values if k in differing]
    if preset is not None and any(f in differing and f not in values for f in PRESETS[preset]):
        named.insert(0, "preset")
    return named or list(typed)


def _differing_fields(a: TrainConfig, b: TrainConfig) -> set[str]:
    """Names of the fields (a TrainConfig's, or its DataConfig's) that differ."""
    differing = {
        f.name for f in fields(a) if f.name != "data" and getattr(a, f.name) != getattr(b, f.name)
    }
    return differing | {
        f.name for f in fields(a.data) if getattr(a.data, f.name) != getattr(b.data, f.name)
    }


def _resume_point(path: Path) -> tuple[Path, CheckedCheckpoint]:
    """The checkpoint `fit` will resume from, checked whole: the file asked for, or the
    sound best.pt beside it when that file's bytes are damaged (said once, here)."""
    point = load_for_resume(path)
    return point.path, check_payload(point.path, point.payload)


def _epoch_reached(path: Path, payload: dict[str, Any]) -> int:
    try:
        return int(payload["epoch"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: its epoch {payload['epoch']!r} is not a number") from exc


def run_training(
    request: TrainRequest,
    make_tracker: Callable[[], Tracker | None],
    callbacks: list[Callback],
) -> TrainOutcome:
    """`make_tracker` is called once the data are checked: data refused on a new home left
    the MLflow store made for the run behind."""
    config = request.config
    data = prepare_data(config.data)  # every pre-flight check, before any training
    tracker = make_tracker()
    device = str(resolve_device(config.device))
    callbacks = [InterruptCheck(), *callbacks]  # a Ctrl-C dropped in a finalizer still stops
    with interrupts_remembered():
        return _run(request, data, device, tracker, callbacks)


def _run(
    request: TrainRequest,
    data: PairData,
    device: str,
    tracker: Tracker | None,
    callbacks: list[Callback],
) -> TrainOutcome:
    config = request.config
    if tracker is None:
        result = _fit(request, data, callbacks)
        return TrainOutcome(result, diagnose(result.history), request.checkpoint_dir)
    from tracking import TrackingCallback, tracked_run

    with tracked_run(tracker, request.run_name, config, device) as run_id:
        tracking = TrackingCallback(tracker, run_id)
        result = _fit(request, data, [*callbacks, tracking])
    tracker.flush()  # the run's deferred records land before the command returns
    verdict = tracking.verdict or diagnose(result.history)
    url = tracker.run_url(run_id)
    return TrainOutcome(result, verdict, request.checkpoint_dir, run_id, tracking.model_uri, url)


def _fit(request: TrainRequest, data: PairData, callbacks: list[Callback]) -> FitResult:
    return fit(
        request.config,
        data,
        callbacks=callbacks,
        checkpoint_dir=request.checkpoint_dir,
        resume_from=request.resume,
    )
