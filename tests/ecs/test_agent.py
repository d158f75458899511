"""The agent: stdlib only, and what it does against real presigned URLs on moto's S3."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pytest

from gradeflow._ecs_agent_image import AGENT_MODULES
from gradeflow.agent import UPLOAD_NAMES, AgentConfig, run_agent
from gradeflow.storage import S3Store

PACKAGE = Path(__file__).resolve().parents[2] / "gradeflow"


def test_the_agent_runs_on_the_standard_library_alone(tmp_path: Path) -> None:
    """As in its image: exactly its modules and an empty package, no site-packages."""
    package = tmp_path / "gradeflow"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in AGENT_MODULES:
        shutil.copy(PACKAGE / name, package / name)
    done = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            f"import runpy, sys; sys.path.insert(0, {str(tmp_path)!r}); "
            "runpy.run_module('gradeflow.agent', run_name='__main__')",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2, done.stderr  # imported fine, then refused the empty env
    assert "GRADEFLOW_AGENT_SUBMISSION_URL is not set" in done.stderr


@pytest.fixture
def s3(moto_endpoint: str) -> S3Store:
    from .conftest import client

    s3_client = client("s3", moto_endpoint)
    bucket = f"gradeflow-agent-{uuid.uuid4().hex[:10]}"
    s3_client.create_bucket(Bucket=bucket)
    return S3Store(bucket, prefix="gf", client=s3_client)


def agent_env(store: S3Store, data: bytes, root: Path, **extra: str) -> dict[str, str]:
    sha = hashlib.sha256(data).hexdigest()
    key = f"submissions/a/s/{sha}.zip"
    store.put_bytes(key, data)
    env = {
        "GRADEFLOW_AGENT_SUBMISSION_URL": store.presign_get(key),
        "GRADEFLOW_AGENT_SHA256": sha,
        "GRADEFLOW_AGENT_FILENAME": "solution.py",
        "GRADEFLOW_AGENT_MAX_BYTES": str(1 << 20),
        "GRADEFLOW_AGENT_MAX_FILES": "10",
        "GRADEFLOW_AGENT_DEADLINE_S": "10",
        "GRADEFLOW_AGENT_ROOT": str(root),
        "GRADEFLOW_AGENT_UPLOADS": json.dumps(
            {name: store.presign_put(f"runs/a/s/{name}") for name in UPLOAD_NAMES}
        ),
    }
    env.update(extra)
    return env


def zip_of(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return buffer.getvalue()


def fake_shim(root: Path, results: dict[str, str]) -> threading.Thread:
    """Plays the grader container's part: waits for the marker, writes what a shim would."""

    def play() -> None:
        ready = root / "shim" / "ready"
        for _ in range(500):
            if ready.exists():
                break
            threading.Event().wait(0.01)
        (root / "shim" / "stdout").write_text("hello\n")
        for name, text in results.items():
            (root / "results" / name).write_text(text)
        (root / "results" / "link").symlink_to("/etc/passwd")
        envelope = {"shim_version": "t", "status": "exited", "exit_code": 0, "wall_ms": 5}
        (root / "shim" / "envelope.json").write_text(json.dumps(envelope))

    thread = threading.Thread(target=play, daemon=True)
    thread.start()
    return thread


def test_delivers_the_submission_and_uploads_what_the_shim_left(
    s3: S3Store, tmp_path: Path
) -> None:
    root = tmp_path / "grading"
    root.mkdir()
    data = zip_of({"solution.py": "print(1)\n"})
    player = fake_shim(root, {"results.json": '{"score": 1}'})
    assert run_agent(AgentConfig(agent_env(s3, data, root))) == 0
    player.join(5)
    assert (root / "submission" / "solution.py").read_text() == "print(1)\n"
    assert (root / "shim" / "ready").read_text() == hashlib.sha256(data).hexdigest()
    manifest = json.loads(s3.get_bytes("runs/a/s/manifest"))
    assert manifest["outcome"] == "completed"
    assert json.loads(s3.get_bytes("runs/a/s/ready")) == {"started": True}
    results = s3.get_bytes("runs/a/s/results", sha256=manifest["files"]["results"]["sha256"])
    with tarfile.open(fileobj=io.BytesIO(results)) as tar:
        assert tar.getnames() == ["results.json"]  # the symlink was not followed
    assert s3.get_bytes("runs/a/s/stdout") == b"hello\n"


def test_a_digest_mismatch_uploads_a_failure_and_writes_no_marker(
    s3: S3Store, tmp_path: Path
) -> None:
    root = tmp_path / "grading"
    root.mkdir()
    env = agent_env(s3, zip_of({"a.py": "x"}), root, GRADEFLOW_AGENT_SHA256="0" * 64)
    assert run_agent(AgentConfig(env)) == 0
    manifest = json.loads(s3.get_bytes("runs/a/s/manifest"))
    assert manifest["outcome"] == "failed" and "sha256" in manifest["reason"]
    assert not (root / "shim" / "ready").exists()


def test_an_unsafe_archive_is_an_invalid_submission(s3: S3Store, tmp_path: Path) -> None:
    root = tmp_path / "grading"
    root.mkdir()
    assert run_agent(AgentConfig(agent_env(s3, zip_of({"../escape.py": "x"}), root))) == 0
    manifest = json.loads(s3.get_bytes("runs/a/s/manifest"))
    assert manifest["outcome"] == "invalid_submission"
    assert not (root / "submission").exists()


def test_no_envelope_within_the_deadline_still_reports(s3: S3Store, tmp_path: Path) -> None:
    root = tmp_path / "grading"
    root.mkdir()
    env = agent_env(s3, zip_of({"a.py": "x"}), root, GRADEFLOW_AGENT_DEADLINE_S="0.2")
    assert run_agent(AgentConfig(env)) == 0
    manifest: dict[str, Any] = json.loads(s3.get_bytes("runs/a/s/manifest"))
    assert manifest["outcome"] == "failed" and "no envelope" in manifest["reason"]


def test_a_layout_moves_the_submission_metadata_and_results(s3: S3Store, tmp_path: Path) -> None:
    """Gradescope's tree: submission and results under autograder/, metadata before ready."""
    root, tree = tmp_path / "grading", tmp_path / "autograder"
    root.mkdir()
    tree.mkdir()
    layout = {
        "submission": str(tree / "submission"),
        "results": str(tree / "results"),
        "result_files": ["results.json"],
        "metadata": str(tree / "submission_metadata.json"),
        "directories": [
            [str(root / "shim"), 0, 0o700],
            [str(root / "work"), 65534, 0o700],
            [str(tree / "results"), 65534, 0o755],
        ],
    }
    env = agent_env(
        s3, zip_of({"primes.py": "x = 1\n"}), root,
        GRADEFLOW_AGENT_LAYOUT=json.dumps(layout), GRADEFLOW_AGENT_METADATA='{"id": "s"}',
    )  # fmt: skip
    seen: dict[str, Any] = {}

    def play() -> None:
        for _ in range(500):
            if (root / "shim" / "ready").exists():
                break
            threading.Event().wait(0.01)
        metadata = tree / "submission_metadata.json"
        seen["metadata"] = (metadata.read_text(), metadata.stat().st_mode & 0o777)
        (tree / "results" / "results.json").write_text('{"score": 1}')
        (tree / "results" / "other.txt").write_text("not collected")
        envelope = {"shim_version": "t", "status": "exited", "exit_code": 0, "wall_ms": 5}
        (root / "shim" / "envelope.json").write_text(json.dumps(envelope))

    player = threading.Thread(target=play, daemon=True)
    player.start()
    assert run_agent(AgentConfig(env)) == 0
    player.join(5)
    assert seen["metadata"] == ('{"id": "s"}', 0o444)
    assert (tree / "submission" / "primes.py").read_text() == "x = 1\n"
    assert not (root / "submission").exists()
    assert (tree / "results").stat().st_uid == (65534 if os.geteuid() == 0 else os.geteuid())
    manifest = json.loads(s3.get_bytes("runs/a/s/manifest"))
    assert manifest["outcome"] == "completed"
    with tarfile.open(fileobj=io.BytesIO(s3.get_bytes("runs/a/s/results"))) as tar:
        assert tar.getnames() == ["results.json"]


def test_metadata_without_a_metadata_path_is_refused(tmp_path: Path) -> None:
    layout = {"submission": "/s", "results": "/r", "directories": []}
    env = {
        "GRADEFLOW_AGENT_SUBMISSION_URL": "http://x", "GRADEFLOW_AGENT_SHA256": "0" * 64,
        "GRADEFLOW_AGENT_FILENAME": "a.py", "GRADEFLOW_AGENT_MAX_BYTES": "1",
        "GRADEFLOW_AGENT_MAX_FILES": "1", "GRADEFLOW_AGENT_DEADLINE_S": "1",
        "GRADEFLOW_AGENT_UPLOADS": json.dumps({n: "http://x" for n in UPLOAD_NAMES}),
        "GRADEFLOW_AGENT_LAYOUT": json.dumps(layout), "GRADEFLOW_AGENT_METADATA": "{}",
    }  # fmt: skip
    with pytest.raises(ValueError, match="no metadata path"):
        AgentConfig(env)
