"""A study remembers the MLflow store its runs went to: after a search against a real
`mlflow server`, `promote --study` finds the best trial there without being told, and the
search's closing hints point at the server instead of the empty local store."""

import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from search.cli import cli
from tracking.store import TrackingTarget
from tracking.ui import ui_command

# A real MLflow server in its own process: CI runs it.
pytestmark = pytest.mark.slow

SERVER_START_S = 90.0
TINY = ["--epochs", "2", "--train-pairs", "256", "--val-pairs", "64", "--device", "cpu"]
GOOD = ["--head", "abs", "--optimizer", "adam", "--lr", "1e-3", "--dropout", "0"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    store = tmp_path / "server"
    store.mkdir()
    target = TrackingTarget(f"sqlite:///{store / 'mlflow.db'}", (store / "artifacts").as_uri())
    command = ui_command(target, "127.0.0.1", port)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def _wait_until_up(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        assert process.poll() is None, "mlflow server exited"
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"mlflow server at {url} did not answer within {SERVER_START_S} s")


def test_study_scoped_commands_use_the_store_the_study_recorded(
    tmp_path: Path, server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    home = str(tmp_path / "home")
    runner = CliRunner()
    searched = runner.invoke(
        cli,
        [
            "search",
            "--home",
            home,
            "--study",
            "srv",
            "--trials",
            "1",
            "--no-baseline",
            "--tracking-uri",
            server,
            *TINY,
            *GOOD,
        ],
    )
    assert searched.exit_code == 0, searched.output
    assert f"open the UI: {server}" in searched.output
    assert "siamese-lab ui --home" not in searched.output
    promoted = runner.invoke(cli, ["promote", "--study", "srv", "--home", home, "--json"])
    assert promoted.exit_code == 0, promoted.output
    assert '"promoted": true' in promoted.output
    assert not (tmp_path / "home" / "mlflow.db").exists()  # nothing went to the local store
