"""The `siamese-lab` process ends without the interpreter's teardown, yet with everything
a normal exit would finish: queued background work, atexit callbacks, buffered output, and
sys.exit's status."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from search.cli.fast_exit import exit_code

ROOT = Path(__file__).resolve().parents[2]


def _ended(tmp_path: Path, code: str, ctrl_c: bool = False) -> subprocess.CompletedProcess[str]:
    script = textwrap.dedent(
        f"""
        import atexit, os, signal, sys, threading, time
        from concurrent.futures import ThreadPoolExecutor
        from pathlib import Path
        from search.cli.fast_exit import exit_without_teardown

        out = Path({str(tmp_path)!r})
        def slow_write():
            time.sleep(0.3)  # still queued when the command returns
            (out / "queued.txt").write_text("written")
        pool = ThreadPoolExecutor(max_workers=1)  # never shut down, as the tracker's writer
        pool.submit(slow_write)
        atexit.register(lambda: (out / "atexit.txt").write_text("ran"))
        sys.stdout.write("no newline, still buffered")
        if {ctrl_c}:  # while the queued work is waited for
            threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT)).start()
        exit_without_teardown({code})
        """
    )
    return subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_it_drains_queued_work_runs_atexit_and_flushes_output(tmp_path: Path) -> None:
    done = _ended(tmp_path, "3")
    assert done.returncode == 3, done.stderr
    assert (tmp_path / "queued.txt").read_text() == "written"
    assert (tmp_path / "atexit.txt").read_text() == "ran"
    assert done.stdout == "no newline, still buffered"


def test_ctrl_c_during_the_exit_keeps_its_status_and_the_later_steps(tmp_path: Path) -> None:
    done = _ended(tmp_path, "3", ctrl_c=True)
    assert done.returncode == 3 and "Traceback" not in done.stderr, done.stderr
    assert (tmp_path / "atexit.txt").read_text() == "ran"
    assert done.stdout == "no newline, still buffered"


def test_a_text_exits_1_and_is_printed_as_sys_exit_does(tmp_path: Path) -> None:
    done = _ended(tmp_path, "'error: bad'")
    assert (done.returncode, done.stderr) == (1, "error: bad\n")


@pytest.mark.parametrize(("code", "status"), [(None, 0), (0, 0), (2, 2), (130, 130)])
def test_exit_codes_are_sys_exits(code: int | None, status: int) -> None:
    assert exit_code(code) == status


def test_the_command_line_still_exits_with_its_codes(tmp_path: Path) -> None:
    """Bad input is 2 with one line; the help is 0 (both through the script's main)."""
    run = [sys.executable, "-m", "search.cli", "--home", str(tmp_path)]
    bad = subprocess.run([*run, "report", "--study", "../x"], cwd=ROOT, capture_output=True)
    assert bad.returncode == 2 and len(bad.stderr.decode().strip().splitlines()) == 1
    ok = subprocess.run([*run, "--help"], cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0 and "Commands" in ok.stdout
