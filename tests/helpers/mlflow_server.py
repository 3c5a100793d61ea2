"""A real `mlflow server` for the tests: on 127.0.0.1, a free port, a SQLite store and an artifacts folder in a test's
own folder; started in its own process group and stopped by that group's id (it runs uvicorn and a job runner as
children), never by name. `stop()` then `start()` again is the same server restarted on the same store."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

START_TIMEOUT_S = 180.0  # liveness only: the first start migrates the SQLite schema, slow on a loaded machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MlflowServer:
    """One tracking server over `folder` (``mlflow.db``, ``artifacts/``, ``server.log``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MlflowServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        mlflow = Path(sys.executable).with_name("mlflow")
        cmd = [
            *(str(mlflow), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"),
            *("--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}"),
            *("--artifacts-destination", str(self.folder / "artifacts")),
        ]
        log = (self.folder / "server.log").open("ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, cwd=self.folder, start_new_session=True)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(self.folder / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"mlflow server did not answer in {START_TIMEOUT_S:.0f} s")

    def stop(self) -> None:
        """Kill the server's process group (the server and its children) and wait for it."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its own group: start_new_session made pgid == pid
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=60)
        self.proc = None
        # A killed server refuses at once; wait until the port is closed so the next request cannot reach it.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) != 0:
                    return
            time.sleep(0.1)
