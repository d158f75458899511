"""``gradeflow serve``: one command brings up server, deployments and a worker."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

GRADEFLOW = str(Path(sys.executable).parent / "gradeflow")


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _post(url: str) -> object:
    request = urllib.request.Request(url, data=b"{}", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_serve_applies_the_deployments_and_starts_a_worker(tmp_path: Path) -> None:
    port = _port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "GRADEFLOW_"))}
    env.update(PREFECT_HOME=str(tmp_path / "prefect"), GRADEFLOW_HOME=str(tmp_path / "home"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false")  # fmt: skip
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        serve = subprocess.Popen([GRADEFLOW, "serve", "--port", str(port)], env=env,
                                 stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    api = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 150
        while "ready" not in log.read_text():
            assert serve.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.5)
        deployments = _post(f"{api}/deployments/filter")
        assert isinstance(deployments, list)
        assert {d["name"] for d in deployments} == {
            "grade-submission", "regrade-assignment", "build-shim",
        }  # fmt: skip
        workers: object = []
        while not workers and time.monotonic() < deadline:
            time.sleep(0.5)
            workers = _post(f"{api}/work_pools/gradeflow-local/workers/filter")
        assert workers, "no worker registered with the gradeflow-local pool"
    finally:
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=60) is not None
