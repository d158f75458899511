"""A production-shaped stack, once per session: PostgreSQL, an authenticated Prefect
server with a fast scheduler, deployments/prefect.yaml applied by ``prefect deploy``,
and a real ``process`` worker.

PostgreSQL because SQLite locks under concurrent flow runs; the cluster lives in
a temp dir and is started as the ``postgres`` user when the tests run as root
(initdb refuses root). Without PostgreSQL binaries the server falls back to
SQLite, and the reason is printed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
VENV_BIN = Path(sys.executable).parent
PG_BIN = Path("/usr/lib/postgresql/15/bin")
AUTH = "gradeflow:test-secret"
POOL = "gradeflow-local"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Stack:
    """What the tests talk to: the API, its credentials, and the worker's environment."""

    api: str
    auth: str
    env: dict[str, str]
    home: Path
    deployments: dict[str, str]

    @property
    def headers(self) -> dict[str, str]:
        token = b64encode(self.auth.encode()).decode()
        return {"Authorization": f"Basic {token}", "Content-Type": "application/json"}

    def call(
        self, method: str, path: str, body: object = None, *, auth: bool = True
    ) -> tuple[int, object]:
        """One API call; returns (status, decoded JSON or None)."""
        headers = self.headers if auth else {"Content-Type": "application/json"}
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.api}{path}", data=data, headers=headers,
                                         method=method)  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw) if raw else None
            except ValueError:
                return exc.code, raw.decode(errors="replace")

    def wait_for_run(self, run_id: str, *, timeout: float = 120) -> dict[str, object]:
        """Poll a flow run until its state is final; returns the flow run."""
        deadline = time.monotonic() + timeout
        while True:
            status, run = self.call("GET", f"/flow_runs/{run_id}")
            assert status == 200 and isinstance(run, dict)
            state = run.get("state") or {}
            if state.get("type") in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
                return run
            if time.monotonic() > deadline:
                pytest.fail(f"flow run {run_id} still {state.get('type')} after {timeout}s")
            time.sleep(0.5)


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@pytest.fixture(scope="session")
def database_url(session_dir: Path) -> Iterator[str]:
    """A private PostgreSQL cluster on 127.0.0.1 (or SQLite, saying why)."""
    initdb, pg_ctl = PG_BIN / "initdb", PG_BIN / "pg_ctl"
    if not (initdb.exists() and pg_ctl.exists()):
        print(f"\n[deployments] PostgreSQL binaries missing under {PG_BIN}: using SQLite")
        yield f"sqlite+aiosqlite:///{session_dir}/deploy-prefect.db"
        return
    data = session_dir / "pg"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    port = _free_port()
    subprocess.run(_as_postgres([str(initdb), "-D", str(data), "-U", "postgres",
                                 "--auth=trust", "-E", "UTF8"]),
                   check=True, capture_output=True)  # fmt: skip
    options = (
        f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off"
    )
    subprocess.run(_as_postgres([str(pg_ctl), "-D", str(data), "-o", options,
                                 "-l", str(data / "server.log"), "-w", "start"]),
                   check=True, capture_output=True)  # fmt: skip
    try:
        subprocess.run(_as_postgres([str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port),
                                     "-U", "postgres", "prefect"]),
                       check=True, capture_output=True)  # fmt: skip
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/prefect"
    finally:
        subprocess.run(_as_postgres([str(pg_ctl), "-D", str(data), "-m", "fast", "stop"]),
                       check=False, capture_output=True)  # fmt: skip


def _wait_healthy(api: str, process: subprocess.Popen[bytes], log: Path, what: str) -> None:
    token = b64encode(AUTH.encode()).decode()
    deadline = time.monotonic() + 120
    while True:
        try:
            headers = {"Authorization": f"Basic {token}"}
            request = urllib.request.Request(f"{api}/health", headers=headers)
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{what} did not start: {log.read_text()[-3000:]}")
        time.sleep(0.25)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def stack(session_dir: Path, database_url: str, shim_artifact: object) -> Iterator[Stack]:
    """Server (auth, PostgreSQL, 1 s scheduler) + deployments + one process worker."""
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    server_home = session_dir / "deploy-server-home"
    server_home.mkdir()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "GRADEFLOW_"))}
    server_env = {
        **base,
        "PREFECT_HOME": str(server_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_API_DATABASE_CONNECTION_URL": database_url,
        "PREFECT_SERVER_API_AUTH_STRING": AUTH,
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "1",
        "PREFECT_SERVER_SERVICES_CANCELLATION_CLEANUP_LOOP_SECONDS": "2",
    }
    server_log = session_dir / "deploy-server.log"
    with open(server_log, "wb") as log:
        server = subprocess.Popen(
            [str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
             "--port", str(port)],
            env=server_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    _wait_healthy(api, server, server_log, "prefect server")

    home = session_dir / "deploy-home"
    home.mkdir()
    home.chmod(0o755)
    env = {
        **base,
        "PREFECT_API_URL": api,
        "PREFECT_API_AUTH_STRING": AUTH,
        "PREFECT_HOME": str(session_dir / "deploy-client-home"),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "2",
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "GRADEFLOW_HOME": str(home),
        "GRADEFLOW_SHIM_CACHE": str(session_dir / "shim-cache"),
        "GRADEFLOW_ASSIGNMENTS_ROOT": str(EXAMPLES),
        "GRADEFLOW_WORK_POOL": POOL,  # the pool prefect.yaml's deployments name
    }
    prefect = str(VENV_BIN / "prefect")
    worker: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run([prefect, "work-pool", "create", POOL, "--type", "process"],
                       env=env, check=True, capture_output=True, cwd=REPO)  # fmt: skip
        deployed = subprocess.run(
            [prefect, "--no-prompt", "deploy", "--all", "--prefect-file",
             "deployments/prefect.yaml"],
            env=env, capture_output=True, text=True, cwd=REPO,
        )  # fmt: skip
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        with open(session_dir / "deploy-worker.log", "wb") as log:
            worker = subprocess.Popen(
                [prefect, "worker", "start", "--pool", POOL, "--type", "process",
                 "--name", "test-worker"],
                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True,
            )  # fmt: skip
        probe = Stack(api=api, auth=AUTH, env=env, home=home, deployments={})
        status, found = probe.call("POST", "/deployments/filter", {})
        assert status == 200 and isinstance(found, list)
        yield Stack(api=api, auth=AUTH, env=env, home=home,
                    deployments={d["name"]: d["id"] for d in found})  # fmt: skip
    finally:
        if worker is not None:
            _stop(worker)
        _stop(server)
