"""Fixtures for the docker backend against a real engine.

Tests here are skipped, with the reason, only when no engine answers. When one
does, the session builds what is missing: the offline base image (debootstrap,
about a minute on first use) and the example grader images, so ``pytest``
alone works on a fresh dev machine. Every test ends with nothing of ours left
on the engine: a session-scoped check lists gradeflow-labelled containers and
volumes at the end.
"""

from __future__ import annotations

import contextlib
import hashlib
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from gradeflow import GradeResult
from gradeflow._images import BASE_IMAGE, build_assignment_image, build_base_image
from gradeflow.launchers._docker import MANAGED_LABEL, DockerLauncher

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
GradeDocker = Callable[..., GradeResult]
HostileAssignment = Callable[..., Path]


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    """The engine, or a skip naming why there is none."""
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.skip(f"no Docker engine answers ({exc}); start one with `bash .ci/start-docker`")
    return client


@pytest.fixture(scope="session")
def grader_images(docker_client: docker.DockerClient) -> list[str]:
    """The base image (built if missing) and every example's grader image."""
    build_base_image(docker_client)
    return [
        build_assignment_image(docker_client, path.parent).tag
        for path in sorted(EXAMPLES.glob("*/assignment.toml"))
    ]


def _ours(client: docker.DockerClient) -> set[str]:
    selector: dict[str, str | list[str] | bool] = {"label": MANAGED_LABEL}
    containers = {f"container {c.name}" for c in client.containers.list(all=True, filters=selector)}
    return containers | {f"volume {v.name}" for v in client.volumes.list(filters=selector)}


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind() -> Iterator[None]:
    """After the whole session: no container or volume of ours remains on the engine.

    What existed before the session is not ours to judge; a concurrent run on
    the same engine (a bench) gets a few seconds to finish its own cleanup.
    Without an engine there is nothing to check (and the pure tests still run).
    """
    try:
        docker_client = docker.from_env()
        before = _ours(docker_client)
    except docker.errors.DockerException:
        yield
        return
    yield
    deadline = time.monotonic() + 15
    while (left := _ours(docker_client) - before) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert left == set()


@pytest.fixture(scope="session")
def test_images(docker_client: docker.DockerClient) -> Iterator[list[str]]:
    """Tags of throwaway grader images built by tests; removed after the session."""
    tags: list[str] = []
    yield tags
    for tag in tags:
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.images.remove(tag, force=True)


@pytest.fixture
def hostile_assignment(
    tmp_path: Path,
    docker_client: docker.DockerClient,
    grader_images: list[str],
    test_images: list[str],
) -> HostileAssignment:
    """An assignment whose grader image is FROM the base image and runs ``script`` (Python)."""
    tmp_path.chmod(0o755)

    def make(
        script: str, *, assignment_id: str = "hostile", limits: str = "timeout_s = 10"
    ) -> Path:
        body = textwrap.dedent(script)
        digest = hashlib.sha256(body.encode()).hexdigest()[:12]
        tag = f"gradeflow-tests/{assignment_id}:{digest}"
        root = tmp_path / assignment_id
        (root / "grader").mkdir(parents=True)
        (root / "grader" / "grade.py").write_text(body)
        (root / "Dockerfile").write_text(
            f'FROM {BASE_IMAGE}\nCOPY grader /grader\nENTRYPOINT ["python3", "/grader/grade.py"]\n'
        )
        (root / "assignment.toml").write_text(
            f'id = "{assignment_id}"\ntitle = "hostile"\nresults_format = "gradescope"\n'
            f'[grader]\nimage = "{tag}"\n'
            f"[limits]\nkill_grace_s = 1\n{limits}\n"
        )
        build_assignment_image(docker_client, root)
        test_images.append(tag)
        return root

    return make


@pytest.fixture
def docker_launcher(docker_client: docker.DockerClient) -> DockerLauncher:
    return DockerLauncher(docker_client)


@pytest.fixture
def grade_docker(
    grade_file_with: Callable[..., GradeResult],
    docker_launcher: DockerLauncher,
    grader_images: list[str],
) -> GradeDocker:
    """Grade a file (its text or a path) through the core pipeline on the docker backend."""

    def run(
        assignment_dir: Path, submission: str | Path = "print('hi')\n", *, submission_id: str = "s1"
    ) -> GradeResult:
        return grade_file_with(
            docker_launcher, assignment_dir, submission, submission_id=submission_id
        )

    return run
