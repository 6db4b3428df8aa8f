"""`siamese-lab ui` in a real browser: a study shows up in the MLflow UI as users should see it.

Runs a tiny tracked search, starts `siamese-lab ui` on a free port and renders in headless
Chromium the page `ui` prints (the experiment's runs, with the study run) and the study run's
page (its report as the description, its trials named with their outcome). The screenshot
is kept at test-artifacts/ui-experiment.png.
Without /usr/bin/chromium the test is skipped locally and fails under CI, which installs it.
"""

from __future__ import annotations

import contextlib
import html
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
    """The study's parent run, and its trials' run names."""

    home: Path
    run_id: str
    run_name: str
    experiment_id: str
    trial_names: tuple[str, ...]


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
        [*_cli(), "search", "--home", str(home), "--trials", "2", *small, "--json"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    run_id = json.loads(result.stdout)["parent_run_id"]
    client = mlflow.MlflowClient(f"sqlite:///{home.resolve() / 'mlflow.db'}")
    run = client.get_run(run_id)
    assert run.info.run_name, f"run {run_id} has no name"
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
    names = tuple(sorted(r.info.run_name for r in children))
    assert len(names) == 2, names
    return TrackedRun(home, run_id, run.info.run_name, run.info.experiment_id, names)


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


def _visible_text(dom: str) -> str:
    """The page's text as a reader sees it: no scripts, styles or tags, single spaces."""
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    text = html.unescape(re.sub(r"<[^>]+>", " ", text))
    return " ".join(text.split())


def _render_until(
    browser: Path, tmp_path: Path, url: str, wanted: list[str], deadline: float
) -> tuple[str, int]:
    """The page's visible text once every `wanted` text is in it (longer budgets while it
    is not), and the budget that rendered it."""
    dom, budget_ms = "", VIRTUAL_TIME_BUDGETS_MS[0]
    for attempt, budget_ms in enumerate(VIRTUAL_TIME_BUDGETS_MS):
        left = deadline - time.monotonic()
        if left <= 5:
            break
        profile = tmp_path / f"profile-{abs(hash(url))}-{attempt}"
        dom = _visible_text(_chromium(browser, profile, url, budget_ms, left, "--dump-dom").stdout)
        if all(text in dom for text in wanted):
            break
    return dom, budget_ms


def test_ui_shows_the_study_its_report_and_its_trials_outcomes(
    chromium: Path, tracked_run: TrackedRun, ui_server: UiServer, tmp_path: Path
) -> None:
    expected = f"http://127.0.0.1:{ui_server.port}/#/experiments/{tracked_run.experiment_id}"
    assert ui_server.printed_url.startswith(expected), ui_server.printed_url
    # MLflow 3.17 opens an experiment on its GenAI overview (traces, no runs) unless the URL
    # or the browser's remembered sidebar switch says "Model training": ui prints that URL.
    assert "workflowType=machine_learning" in ui_server.printed_url, ui_server.printed_url
    deadline = time.monotonic() + BROWSER_TOTAL_S

    # The printed page is the runs table: the study run, its 2 trials nested under it.
    runs_table = ["Run Name", "3 matching runs"]
    url = ui_server.printed_url
    dom, budget_ms = _render_until(chromium, tmp_path, url, runs_table, deadline)
    for text in runs_table:
        assert text in dom, (
            f"{text!r} not in the rendered page {url}\n"
            f"DOM tail: {dom[-1500:]}\nserver log:\n{_tail(ui_server.log)}"
        )

    # The study run's page: the report as its description, the trials by outcome name.
    outcomes = {name.split(" · ")[1] for name in tracked_run.trial_names}
    assert outcomes <= {"COMPLETE", "PRUNED", "FAIL"}, tracked_run.trial_names
    run_page = f"{expected}/runs/{tracked_run.run_id}?workflowType=machine_learning"
    wanted = ["Failure map", "Best trial", *tracked_run.trial_names]
    run_dom, _ = _render_until(chromium, tmp_path, run_page, wanted, deadline + 60)
    missing = [text for text in wanted if text not in run_dom]
    assert not missing, f"{missing} not on the study run's page {run_page}: {run_dom[-1500:]}"

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
