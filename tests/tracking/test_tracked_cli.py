"""`train`, `diagnose`, `promote` and `predict` against a real MLflow SQLite store."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner, Result

from search.cli import cli
from siamese.model import THRESHOLD_KEY as THRESHOLD
from siamese.train import load_checkpoint
from tests.tracking.registered import digit_png
from tracking import embedded_target

if TYPE_CHECKING:
    from tracking.mlflow_tracker import MlflowTracker

SMALL = ["--train-pairs", "384", "--val-pairs", "192", "--device", "cpu", "--epochs", "3"]
PER_EPOCH = (
    "train_loss",
    "val_loss",
    "val_acc",
    "val_auc",
    "update_ratio",
    "output_std",
    "grad_norm_conv1",
)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def train_json(home: Path, *args: str) -> dict[str, Any]:
    result = invoke("train", "--home", str(home), *SMALL, "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def good_run(home: Path) -> dict[str, Any]:
    return train_json(home)


@pytest.fixture(scope="module")
def seed_run(home: Path) -> dict[str, Any]:
    return train_json(home, "--preset", "seed", "--epochs", "2")


@pytest.fixture(scope="module")
def tracker(home: Path) -> MlflowTracker:
    from tracking.mlflow_tracker import MlflowTracker

    return MlflowTracker(embedded_target(home))


def test_every_epoch_of_every_metric_is_logged(
    good_run: dict[str, Any], tracker: MlflowTracker
) -> None:
    run_id = good_run["run_id"]
    for key in PER_EPOCH:
        assert [step for step, _ in tracker.metric_history(run_id, key)] == [1, 2, 3], key
    aucs = [v for _, v in tracker.metric_history(run_id, "val_auc")]
    assert aucs == pytest.approx([r["val_auc"] for r in good_run["history"]["records"]])


def test_params_tags_and_status(good_run: dict[str, Any], tracker: MlflowTracker) -> None:
    run = tracker.get_run(good_run["run_id"])
    assert run.status == "FINISHED"
    assert (
        run.params["lr"] == "0.001"
        and run.params["head"] == "sq"
        and run.params["data.source"] == "digits"
    )
    assert run.params["seed"] == "0" and run.params["device"] == "cpu"
    assert run.tags["diagnosis.verdict"] == "converged" and run.tags["siamese_lab.version"]
    assert run.tags["siamese_lab.device"] == "cpu"


def test_artifacts_are_there_and_the_checkpoint_loads(
    good_run: dict[str, Any], tracker: MlflowTracker, tmp_path: Path
) -> None:
    run_id = good_run["run_id"]
    artifacts = tracker.list_artifacts(run_id)
    for expected in (
        "checkpoints/best.pt",
        "checkpoints/last.pt",
        "curves.png",
        "diagnosis.json",
        "diagnosis.txt",
    ):
        assert expected in artifacts
    assert any(a.startswith("model/") for a in artifacts) or good_run["model_uri"].startswith(
        "models:/m-"
    )
    checkpoint = load_checkpoint(tracker.download_artifact(run_id, "checkpoints/best.pt", tmp_path))
    assert checkpoint["config"]["lr"] == 0.001
    png = tracker.download_artifact(run_id, "curves.png", tmp_path)
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_a_failed_run_has_its_verdict_and_no_model(
    seed_run: dict[str, Any], tracker: MlflowTracker
) -> None:
    run = tracker.get_run(seed_run["run_id"])
    assert run.status == "FINISHED"  # training ended; the verdict is the result
    assert run.tags["diagnosis.verdict"] == "failed" and "collapsed" in run.tags["diagnosis.label"]
    assert seed_run["model_uri"] is None


def test_diagnose_reads_the_verdict_back(seed_run: dict[str, Any], home: Path) -> None:
    result = invoke("diagnose", seed_run["run_id"], "--home", str(home))
    assert result.exit_code == 0, result.output
    assert (
        "FAILED TO CONVERGE" in result.output
        and "evidence:" in result.output
        and "fix:" in result.output
    )
    as_json = json.loads(
        invoke("diagnose", seed_run["run_id"], "--home", str(home), "--json").stdout
    )
    assert "collapsed" in as_json["diagnosis"]["kinds"]


def test_diagnose_unknown_run_is_bad_input(home: Path) -> None:
    result = invoke("diagnose", "0123456789abcdef", "--home", str(home))
    assert result.exit_code == 2 and "0123456789abcdef" in result.output


def test_promoting_a_collapsed_run_is_refused(seed_run: dict[str, Any], home: Path) -> None:
    result = invoke("promote", "--run", seed_run["run_id"], "--home", str(home))
    assert result.exit_code == 2 and "only a converged run" in result.output


def test_diagnose_and_promote_take_the_first_characters_of_a_run_id(
    seed_run: dict[str, Any], home: Path
) -> None:
    prefix = seed_run["run_id"][:8]
    result = invoke("diagnose", prefix, "--home", str(home))
    assert result.exit_code == 0, result.output
    assert f"run {seed_run['run_id']} (" in result.output and "FAILED TO CONVERGE" in result.output
    as_json = json.loads(invoke("diagnose", prefix.upper(), "--home", str(home), "--json").stdout)
    assert as_json["run_id"] == seed_run["run_id"]
    # refused by the diagnosis gate, which reads the run: the prefix found it
    refused = invoke("promote", "--run", prefix, "--home", str(home))
    assert refused.exit_code == 2, refused.output
    assert "only a converged run" in refused.output and seed_run["run_id"] in refused.output


def test_a_run_id_too_short_to_be_a_prefix_is_bad_input(
    seed_run: dict[str, Any], home: Path
) -> None:
    result = invoke("diagnose", seed_run["run_id"][:5], "--home", str(home))
    assert result.exit_code == 2 and "expected a run id" in result.output


def test_promote_alias_and_predict_round_trip(
    good_run: dict[str, Any], home: Path, tmp_path: Path, tracker: MlflowTracker
) -> None:
    result = invoke(
        "promote", "--run", good_run["run_id"], "--name", "digits", "--home", str(home), "--json"
    )
    assert result.exit_code == 0, result.output
    promotion = json.loads(result.stdout)
    assert promotion["promoted"] and promotion["version"] == "1"
    version = tracker.client.get_model_version_by_alias("digits", "champion")
    assert (
        version.tags["source_run_id"] == good_run["run_id"]
        and version.tags["diagnosis"] == "converged"
    )

    left, right = digit_png(tmp_path, 0), digit_png(tmp_path, 1)
    by_alias = invoke(
        "predict",
        "--home",
        str(home),
        "--model",
        "models:/digits@champion",
        str(left),
        str(right),
        "--json",
    )
    assert by_alias.exit_code == 0, by_alias.output
    alias_json = json.loads(by_alias.stdout)
    p_alias = alias_json["pairs"][0]["p_same"]
    by_checkpoint = invoke(
        "predict", "--model", good_run["checkpoints"]["best"], str(left), str(right), "--json"
    )
    checkpoint_json = json.loads(by_checkpoint.stdout)
    p_checkpoint = checkpoint_json["pairs"][0]["p_same"]
    assert 0.0 <= p_alias <= 1.0 and p_alias == pytest.approx(p_checkpoint, abs=1e-4)
    # The pt2 model in the registry decides at the threshold its checkpoint stores.
    stored = float(load_checkpoint(Path(good_run["checkpoints"]["best"]))["model"][THRESHOLD])
    assert alias_json["threshold"] == checkpoint_json["threshold"] == stored
    decision = "same" if p_alias >= stored else "different"
    assert alias_json["pairs"][0]["decision"] == decision

    (tmp_path / "pairs.csv").write_text(
        f"left,right\n{left.name},{right.name}\n{left.name},{left.name}\n"
    )
    batch = invoke(
        "predict",
        "--home",
        str(home),
        "--model",
        "models:/digits@champion",
        "--pairs",
        str(tmp_path / "pairs.csv"),
    )
    assert batch.exit_code == 0 and len(batch.output.strip().splitlines()) == 3
    assert batch.output.strip().splitlines()[-1] == (
        f"decided at the threshold P(same) >= {stored:.4f}"
    )


def test_challenger_must_beat_the_champion(good_run: dict[str, Any], home: Path) -> None:
    invoke("promote", "--run", good_run["run_id"], "--name", "gate", "--home", str(home))
    weaker = train_json(home, "--epochs", "1", "--lr", "3e-4")
    if not weaker["model_uri"]:
        pytest.skip("the 1-epoch challenger did not converge on this machine")
    assert max(r["val_auc"] for r in weaker["history"]["records"]) < max(
        r["val_auc"] for r in good_run["history"]["records"]
    )
    kept = json.loads(
        invoke(
            "promote", "--run", weaker["run_id"], "--name", "gate", "--home", str(home), "--json"
        ).stdout
    )
    assert not kept["promoted"] and kept["holder_version"] == "1"
    forced = json.loads(
        invoke(
            "promote",
            "--run",
            weaker["run_id"],
            "--name",
            "gate",
            "--home",
            str(home),
            "--force",
            "--json",
        ).stdout
    )
    assert forced["promoted"] and forced["version"] == "2"


def test_predict_bad_model_is_bad_input(tmp_path: Path) -> None:
    left = digit_png(tmp_path, 0)
    result = invoke("predict", "--model", "nonsense", str(left), str(left))
    assert result.exit_code == 2 and "--model" in result.output


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_server_fails_fast_with_a_clear_line(tmp_path: Path) -> None:
    started = time.monotonic()
    result = invoke(
        "train",
        "--home",
        str(tmp_path),
        *SMALL,
        "--tracking-uri",
        f"http://127.0.0.1:{_free_port()}",
    )
    assert result.exit_code == 2, result.output
    assert "did not answer" in result.output and "--no-track" in result.output
    assert time.monotonic() - started < 60


@pytest.mark.slow
def test_sigterm_marks_the_run_killed_and_keeps_the_checkpoint(tmp_path: Path) -> None:
    from tracking.mlflow_tracker import MlflowTracker

    home = tmp_path / "home"
    command = [
        sys.executable,
        "-m",
        "search.cli",
        "train",
        "--home",
        str(home),
        "--device",
        "cpu",
        "--epochs",
        "200",
        "--train-pairs",
        "128",
        "--val-pairs",
        "64",
    ]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ},
    )
    try:
        deadline = time.monotonic() + 120
        while not list((home / "checkpoints").glob("*/last.pt")) and time.monotonic() < deadline:
            time.sleep(0.5)
        if not list((home / "checkpoints").glob("*/last.pt")):
            process.kill()
            pytest.fail("training never wrote a checkpoint: " + process.communicate()[0][-3000:])
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, output
    tracker = MlflowTracker(embedded_target(home))
    runs = tracker.client.search_runs([tracker.experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "KILLED"
    assert "checkpoints/last.pt" in tracker.list_artifacts(runs[0].info.run_id)


def test_tracking_does_not_leak_the_store_into_child_processes(
    good_run: dict[str, Any], home: Path
) -> None:
    # MLflow's set_tracking_uri exports MLFLOW_TRACKING_URI; a worker started later would
    # silently log to the wrong store.
    invoke("promote", "--run", good_run["run_id"], "--name", "leak", "--home", str(home))
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert "MLFLOW_EXPERIMENT_ID" not in os.environ


def test_ui_on_a_taken_port_says_so_before_starting_anything(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = invoke("ui", "--home", str(tmp_path), "--port", str(port))
    assert result.exit_code == 2, result.output
    assert f"--port {port}: already in use on 127.0.0.1" in result.output
    assert not (tmp_path / "mlflow.db").exists()  # failed before touching the store


def test_ui_on_a_host_that_is_not_this_machine_names_the_host(tmp_path: Path) -> None:
    result = invoke("ui", "--home", str(tmp_path), "--host", "192.0.2.1", "--port", "5999")
    assert result.exit_code == 2, result.output
    assert "--host 192.0.2.1: cannot listen there" in result.output
