"""`siamese-lab ui` stops everything it started: a SIGTERM to it (a `kill PID`, a service
manager) ends the MLflow server and every process the server started, within seconds, and
the server starts none of MLflow's GenAI job workers (seven processes that each import
MLflow on startup, and outlived a stopped server)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.tracking.test_ui_browser import _cli, _env, _free_port, _printed_url, _tail

pytestmark = pytest.mark.slow  # an MLflow server, several seconds to start


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process this user can see."""
    found: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        found[int(entry.name)] = (parent, cmdline)
    return found


def _descendants(root: int) -> dict[int, str]:
    table = _processes()
    found: dict[int, str] = {}
    frontier = [root]
    while frontier:
        pid = frontier.pop()
        for child, (parent, cmdline) in table.items():
            if parent == pid and child not in found:
                found[child] = cmdline
                frontier.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid)


def _state(pid: int) -> str:
    try:
        return (Path(f"/proc/{pid}") / "status").read_text().split("State:")[1].split("\n")[0]
    except (OSError, IndexError):
        return "zombie"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads processes from /proc")
def test_sigterm_to_ui_ends_the_server_and_all_it_started(tmp_path: Path) -> None:
    port, log = _free_port(), tmp_path / "ui.log"
    with open(log, "wb") as out:
        ui = subprocess.Popen(
            [*_cli(), "ui", "--home", str(tmp_path / "home"), "--port", str(port)],
            env=_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the test's cleanup can reach it whatever happens
        )
    started: dict[int, str] = {}
    try:
        _printed_url(ui, log)
        started = _descendants(ui.pid)
        assert any(f"--port {port}" in c for c in started.values()), started
        workers = {p: c for p, c in started.items() if "huey" in c or "_job_runner" in c}
        assert not workers, workers
        ui.send_signal(signal.SIGTERM)  # to `siamese-lab ui` alone, not its group
        ui.wait(timeout=30)
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in started) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = {p: c for p, c in started.items() if _alive(p)}
        assert not left, f"still running after siamese-lab ui ended: {left}\n{_tail(log)}"
    finally:
        for pid in [ui.pid, *_descendants(ui.pid), *started]:  # what outlived it, too
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        ui.wait(timeout=10)
