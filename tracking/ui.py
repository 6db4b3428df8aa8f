"""The MLflow UI on the embedded store, bound to loopback unless asked otherwise."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from siamese.errors import SiameseInputError
from tracking.store import TrackingTarget


def check_can_listen(host: str, port: int) -> None:
    """Fail before starting the server: MLflow's own error for a taken port is a traceback
    from a child process, easy to miss (another `ui` often already holds 5000)."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            if os.name != "nt":  # on Windows SO_REUSEADDR would let us bind a taken port
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if exc.errno == errno.EADDRINUSE:
            raise SiameseInputError(
                f"--port {port}: already in use on {host} ({reason}); is another server on it? "
                "choose another --port"
            ) from exc
        raise SiameseInputError(
            f"--host {host}: cannot listen there ({reason}); expected an address of this machine "
            "(127.0.0.1 by default, 0.0.0.0 for all)"
        ) from exc


def ui_command(target: TrackingTarget, host: str, port: int) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        target.uri,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    if target.artifact_root:
        command += ["--default-artifact-root", target.artifact_root]
    return command


# MLflow 3's server also starts a job runner and seven huey consumers for its GenAI jobs (LLM
# judges, prompt optimisation), each importing MLflow: on 2 CPU cores they double the time
# before the UI answers, and a SIGTERM to the server left them running. Runs, curves and
# models need none of them.
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
STOP_GRACE_S = 10.0


def start_server(command: list[str]) -> subprocess.Popen[bytes]:
    """The server in a process group of its own, so `stop_server` reaches everything it
    starts (uvicorn, and whatever a later MLflow adds), not the leader alone."""
    return subprocess.Popen(command, env={**os.environ, **SERVER_ENV}, start_new_session=True)


def signal_server(process: subprocess.Popen[bytes], signum: int = signal.SIGTERM) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group has already gone
        os.killpg(process.pid, signum)


def stop_server(process: subprocess.Popen[bytes], grace_s: float = STOP_GRACE_S) -> int:
    """SIGTERM to the server's group, SIGKILL to whatever of it is left after `grace_s`;
    the server's exit status."""
    signal_server(process)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace_s)
    signal_server(process, signal.SIGKILL)
    return process.wait()


def ui_url(host: str, port: int, experiment_id: str | None = None) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    # MLflow 3 opens an experiment in its GenAI view (traces) unless told otherwise; runs,
    # curves and models are in the machine-learning view.
    suffix = f"#/experiments/{experiment_id}?workflowType=machine_learning" if experiment_id else ""
    return f"http://{shown}:{port}/{suffix}"


def wait_until_serving(
    host: str, port: int, process: subprocess.Popen[bytes], timeout_s: float = 180.0
) -> bool:
    """Whether the server answers its health check before it exits or `timeout_s` passes:
    MLflow's server takes tens of seconds to start, and a URL printed before then fails."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"http://{shown}:{port}/health", timeout=2) as answer:
                if answer.status == 200:
                    return True
        except OSError:
            time.sleep(0.5)
    return False
