"""`siamese-lab ui` in a real browser: a tracked run shows up in the MLflow UI's run list.

Trains one tiny tracked run, starts `siamese-lab ui` on a free port and renders the experiment
page in headless Chromium. The screenshot is kept at test-artifacts/ui-experiment.png.
Without /usr/bin/chromium the test is skipped locally and fails under CI, which installs it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# A real MLflow server and headless chromium: CI runs it.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ARTIFACT = ROOT / "test-artifacts" / "ui-experiment.png"
CHROMIUM = Path("/usr/bin/chromium")
SERVER_START_S = 120.0  # mlflow server takes ~20-30 s to answer on 2 busy CPU cores
BROWSER_TOTAL_S = 120.0  # all Chromium runs together
VIRTUAL_TIME_BUDGETS_MS = (10_000, 20_000, 40_000)  # retried until the runs table is there
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--window-size=1400,900",
]


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("siamese-lab")
    return [str(script)] if script.exists() else [sys.executable, "-m", "search.cli"]


def _env() -> dict[str, str]:
    """The embedded store in --home, whatever the developer's shell points MLflow at."""
    env = dict(os.environ)
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"):
        env.pop(name, None)
    return env


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class TrackedRun:
    home: Path
    run_id: str
    run_name: str
    experiment_id: str


@dataclass(frozen=True)
class UiServer:
    port: int
    printed_url: str
    log: Path


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing; install Debian's chromium (apt-get install chromium)"
        if _in_ci():
            pytest.fail(f"{message}: .ci/run installs it, so under CI this is a bug")
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture
def tracked_run(tmp_path: Path) -> TrackedRun:
    import mlflow

    home = tmp_path / "home"
    small = ["--epochs", "1", "--train-pairs", "64", "--val-pairs", "32", "--device", "cpu"]
    result = subprocess.run(
        [*_cli(), "train", "--home", str(home), *small, "--json"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    run_id = json.loads(result.stdout)["run_id"]
    client = mlflow.MlflowClient(f"sqlite:///{home.resolve() / 'mlflow.db'}")
    run = client.get_run(run_id)
    assert run.info.run_name, f"run {run_id} has no name"
    return TrackedRun(home, run_id, run.info.run_name, run.info.experiment_id)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Ends the whole process group: `siamese-lab ui`, mlflow server and its workers."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            break
        process.poll()  # reaps the leader so the group can empty
        time.sleep(0.2)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def _tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


@pytest.fixture
def ui_server(tracked_run: TrackedRun, tmp_path: Path) -> Iterator[UiServer]:
    port = _free_port()
    log = tmp_path / "ui.log"
    command = [*_cli(), "ui", "--home", str(tracked_run.home), "--host", "127.0.0.1"]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [*command, "--port", str(port)],
            cwd=tmp_path,
            env=_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so teardown reaches every worker
        )
    try:
        printed = _printed_url(process, log)
        # Printed only once the server answers: the URL works the moment a user sees it.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as answer:
            assert answer.status == 200
        yield UiServer(port, printed, log)
    finally:
        _stop(process)


def _printed_url(process: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        printed = re.search(r"MLflow UI: (\S+)", log.read_text(errors="replace"))
        if printed:
            return printed.group(1)
        assert process.poll() is None, f"siamese-lab ui exited:\n{_tail(log)}"
        time.sleep(0.5)
    pytest.fail(f"siamese-lab ui did not print its URL in {SERVER_START_S} s:\n{_tail(log)}")


def _chromium(
    browser: Path, profile: Path, url: str, budget_ms: int, timeout_s: float, *extra: str
) -> subprocess.CompletedProcess[str]:
    """One headless Chromium run on a fresh profile; `extra` says what to produce."""
    return subprocess.run(
        [
            str(browser),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={budget_ms}",
            *extra,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def test_ui_lists_the_tracked_run(
    chromium: Path, tracked_run: TrackedRun, ui_server: UiServer, tmp_path: Path
) -> None:
    expected = f"http://127.0.0.1:{ui_server.port}/#/experiments/{tracked_run.experiment_id}"
    assert ui_server.printed_url.startswith(expected), ui_server.printed_url
    # MLflow 3's UI opens a bare experiment URL on its GenAI overview (traces, no runs) in a
    # fresh browser; workflowType=machine_learning is its "Model training" view, the run list.
    url = ui_server.printed_url
    if "workflowType=" not in url:
        url += ("&" if "?" in url else "?") + "workflowType=machine_learning"

    deadline = time.monotonic() + BROWSER_TOTAL_S
    dom = ""
    budget_ms = VIRTUAL_TIME_BUDGETS_MS[0]
    for attempt, budget_ms in enumerate(VIRTUAL_TIME_BUDGETS_MS):
        left = deadline - time.monotonic()
        if left <= 5:
            break
        result = _chromium(
            chromium, tmp_path / f"profile-dom-{attempt}", url, budget_ms, left, "--dump-dom"
        )
        dom = result.stdout
        if tracked_run.run_name in dom:
            break
    assert tracked_run.run_name in dom, (
        f"run name {tracked_run.run_name} not in the rendered page {url}\n"
        f"DOM tail: {dom[-1500:]}\nserver log:\n{_tail(ui_server.log)}"
    )

    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.unlink(missing_ok=True)
    shot = _chromium(
        chromium,
        tmp_path / "profile-shot",
        url,
        budget_ms,
        max(deadline - time.monotonic(), 30.0),
        f"--screenshot={ARTIFACT}",
    )
    assert ARTIFACT.is_file(), f"no screenshot written: {shot.stderr[-2000:]}"
    data = ARTIFACT.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n"), "the screenshot is not a PNG"
    assert len(data) > 20_000, f"screenshot is only {len(data)} bytes; a blank page?"
