"""Shared fixtures: the built shim, a private gradeflow home, a real Prefect server.

The Prefect server is started once per session on 127.0.0.1 with its own
PREFECT_HOME and SQLite database, so CLI subprocesses and in-process flows
talk to a long-lived server instead of each starting a temporary one.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gradeflow import GradeRequest, GradeResult, Settings
from gradeflow._shim_build import ShimArtifact
from gradeflow.launchers import Launcher

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def session_dir() -> Iterator[Path]:
    """A 0755 session directory (graders run as uid 65534 and must traverse it)."""
    path = Path(tempfile.mkdtemp(prefix="gradeflow-tests-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def shim_artifact(session_dir: Path) -> ShimArtifact:
    """The shim built by gradeflow's own builder, once per session."""
    from gradeflow import build_shim
    from gradeflow._settings import default_shim_source

    if shutil.which("cargo") is None:
        pytest.skip("cargo is not installed")
    artifact, _ = build_shim(default_shim_source(), session_dir / "shim-cache")
    return artifact


@pytest.fixture
def gradeflow_home(session_dir: Path) -> Path:
    """A fresh GRADEFLOW_HOME that uid 65534 can traverse.

    Under the session's own 0755 directory, not pytest's basetemp: pytest
    resets ``/tmp/pytest-of-<user>`` to 0700 whenever a pytest starts, which
    would lock graders out of their run directories mid-session.
    """
    home = Path(tempfile.mkdtemp(prefix="home-", dir=session_dir))
    home.chmod(0o755)
    return home


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's S3/ECS/ECR/logs server over real HTTP on 127.0.0.1, once per session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def no_real_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Nothing may find, or reach with, real AWS credentials: dummy keys, no profiles."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


@pytest.fixture
def settings(gradeflow_home: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """gradeflow's settings with a fresh, private GRADEFLOW_HOME."""
    monkeypatch.setenv("GRADEFLOW_HOME", str(gradeflow_home))
    return Settings()


@pytest.fixture
def grade_file_with(
    settings: Settings, shim_artifact: ShimArtifact, tmp_path: Path
) -> Callable[..., GradeResult]:
    """``grade_file_with(launcher, assignment_dir, submission, **request)``.

    Grades one submission through the core pipeline (no Prefect) on
    ``launcher``'s backend. ``submission`` is the file's text, written as
    ``filename``, or a path; ``request`` adds GradeRequest fields.
    """
    from gradeflow._pipeline import grade
    from gradeflow._runtime import open_store

    store = open_store(settings)

    def run(
        launcher: Launcher,
        assignment_dir: Path,
        submission: str | Path = "print('hi')\n",
        *,
        submission_id: str = "s1",
        filename: str = "submission.py",
        **request: Any,
    ) -> GradeResult:
        if isinstance(submission, str):
            path = tmp_path / filename
            path.write_text(submission)
        else:
            path = submission
        req = GradeRequest(
            assignment=assignment_dir.name,
            submission=submission_id,
            submission_path=str(path),
            assignment_dir=str(assignment_dir),
            backend=launcher.name,
            **request,
        )
        return grade(req, settings=settings, store=store, launcher=launcher, shim=shim_artifact)

    return run


@pytest.fixture(scope="session")
def prefect_server(session_dir: Path) -> Iterator[str]:
    """A real ``prefect server start`` on 127.0.0.1; yields its API URL."""
    port = free_port()
    home = session_dir / "prefect-home"
    home.mkdir()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/prefect.db",
    }
    env.pop("PREFECT_API_URL", None)
    log = open(session_dir / "prefect-server.log", "wb")  # noqa: SIM115
    server = subprocess.Popen(
        [str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            pytest.fail(
                "prefect server did not start: "
                + (session_dir / "prefect-server.log").read_text()[-2000:]
            )
        time.sleep(0.25)
    try:
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture
def prefect_api(prefect_server: str) -> Iterator[str]:
    """Point this process's Prefect client at the session server."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
        yield prefect_server


@pytest.fixture
def cli_env(prefect_server: str, gradeflow_home: Path, session_dir: Path) -> dict[str, str]:
    """Environment for ``gradeflow`` subprocesses: the session server and a private home."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("GRADEFLOW_", "PREFECT_"))
    }
    env.update(
        PREFECT_API_URL=prefect_server,
        PREFECT_HOME=str(session_dir / "prefect-client-home"),
        GRADEFLOW_HOME=str(gradeflow_home),
        # the shim binary cache is shared across tests so cargo runs once
        GRADEFLOW_SHIM_CACHE=str(session_dir / "shim-cache"),
    )
    return env
