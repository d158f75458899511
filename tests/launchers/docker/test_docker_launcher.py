"""The DockerLauncher's own contract: command resolution, idempotency, errors, cleanup."""

from __future__ import annotations

import contextlib
import io
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest

from gradeflow import ConfigurationError, GradeRequest, GraderSpec, Settings
from gradeflow._assignment import load_assignment
from gradeflow._images import BASE_IMAGE
from gradeflow._pipeline import make_job, prepare_submission
from gradeflow._runtime import launcher_for, open_store
from gradeflow._shim_build import ShimArtifact
from gradeflow.launchers import GradingJob
from gradeflow.launchers._docker import (
    CREATED_LABEL,
    MANAGED_LABEL,
    DockerLauncher,
    container_name,
    original_command,
)
from gradeflow.launchers._docker_sweep import sweep

from .conftest import EXAMPLES, HostileAssignment

IMAGE_CONFIG = {"Entrypoint": ["python3", "/grader/run.py"], "Cmd": ["--fast"]}
MakeJob = Callable[..., GradingJob]


# -- the original entrypoint (no engine needed) -------------------------------------------


def test_the_images_entrypoint_and_cmd_run_after_the_shim() -> None:
    program = original_command(IMAGE_CONFIG, GraderSpec(), image="i")
    assert program == ["python3", "/grader/run.py", "--fast"]


def test_a_command_override_replaces_only_the_cmd() -> None:
    program = original_command(IMAGE_CONFIG, GraderSpec(command=("--slow",)), image="i")
    assert program == ["python3", "/grader/run.py", "--slow"]


def test_an_entrypoint_override_drops_the_images_cmd_as_docker_does() -> None:
    program = original_command(IMAGE_CONFIG, GraderSpec(entrypoint=("/bin/grade",)), image="i")
    assert program == ["/bin/grade"]


def test_an_image_with_neither_entrypoint_nor_cmd_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="neither ENTRYPOINT nor CMD"):
        original_command({"Entrypoint": None, "Cmd": None}, GraderSpec(), image="bare:1")


def test_container_names_are_valid_and_distinct_for_awkward_run_keys() -> None:
    assert container_name("hw.s1.a1") == "gradeflow-hw.s1.a1"
    odd = container_name("hw/s1 a1")
    assert odd.startswith("gradeflow-hw-s1-a1-") and odd != container_name("hw-s1-a1")


def test_the_runtime_hands_out_the_docker_launcher(settings: Settings) -> None:
    assert isinstance(launcher_for("docker", settings), DockerLauncher)


# -- against the engine --------------------------------------------------------------------


@pytest.fixture
def make_grading_job(settings: Settings, shim_artifact: ShimArtifact, tmp_path: Path) -> MakeJob:
    """A GradingJob for a file of an assignment, its submission staged like the pipeline does."""

    def make(assignment_dir: Path, submission: Path, *, submission_id: str = "s1") -> GradingJob:
        assignment = load_assignment(assignment_dir)
        request = GradeRequest(
            assignment=assignment.id,
            submission=submission_id,
            submission_path=str(submission),
            assignment_dir=str(assignment_dir),
            backend="docker",
        )
        prepared = prepare_submission(request, open_store(settings), tmp_path / "staging")
        return make_job(request, assignment, prepared, shim_artifact)

    return make


def _ours(client: docker.DockerClient, run_key: str) -> list[str]:
    selector: dict[str, str | list[str] | bool] = {"label": f"org.gradeflow.run-key={run_key}"}
    return [str(c.id) for c in client.containers.list(all=True, filters=selector)]


@pytest.mark.docker
def test_launching_the_same_job_twice_reattaches_to_one_container(
    docker_launcher: DockerLauncher,
    docker_client: docker.DockerClient,
    make_grading_job: MakeJob,
    grader_images: list[str],
) -> None:
    job = make_grading_job(EXAMPLES / "py-fizzbuzz", EXAMPLES / "py-fizzbuzz/submissions/full.py")
    first = docker_launcher.launch(job)
    try:
        second = docker_launcher.launch(job)
        assert (first.reattached, second.reattached) == (False, True)
        assert second.details["container_id"] == first.details["container_id"]
        assert _ours(docker_client, job.run_key) == [first.details["container_id"]]
    finally:
        docker_launcher.cleanup(first)
    assert _ours(docker_client, job.run_key) == []


@pytest.mark.docker
def test_a_missing_image_is_a_configuration_error_saying_how_to_build_it(
    docker_launcher: DockerLauncher, make_grading_job: MakeJob, tmp_path: Path
) -> None:
    root = tmp_path / "unbuilt"
    root.mkdir()
    (root / "assignment.toml").write_text(
        'id = "unbuilt"\ntitle = "t"\n[grader]\nimage = "gradeflow-tests/never-built:1"\n'
    )
    job = make_grading_job(root, EXAMPLES / "py-fizzbuzz/submissions/full.py")
    with pytest.raises(ConfigurationError, match=r"never-built:1.*gradeflow image build"):
        docker_launcher.launch(job)


@pytest.mark.docker
def test_an_image_without_entrypoint_or_cmd_fails_before_anything_starts(
    docker_launcher: DockerLauncher,
    docker_client: docker.DockerClient,
    make_grading_job: MakeJob,
    grader_images: list[str],
    tmp_path: Path,
    test_images: list[str],
) -> None:
    tag = "gradeflow-tests/bare:1"
    rootfs = io.BytesIO()
    with tarfile.open(fileobj=rootfs, mode="w") as tar:
        tar.addfile(tarfile.TarInfo("empty"), io.BytesIO(b""))
    docker_client.api.import_image_from_data(rootfs.getvalue(), repository="gradeflow-tests/bare",
                                             tag="1")  # fmt: skip
    test_images.append(tag)
    root = tmp_path / "bare"
    root.mkdir()
    (root / "assignment.toml").write_text(f'id = "bare"\ntitle = "t"\n[grader]\nimage = "{tag}"\n')
    job = make_grading_job(root, EXAMPLES / "py-fizzbuzz/submissions/full.py")
    with pytest.raises(ConfigurationError, match="neither ENTRYPOINT nor CMD"):
        docker_launcher.launch(job)
    assert _ours(docker_client, job.run_key) == []


@pytest.mark.docker
def test_a_daemon_the_grader_leaves_behind_is_killed_by_the_shim(
    docker_launcher: DockerLauncher,
    hostile_assignment: HostileAssignment,
    make_grading_job: MakeJob,
    tmp_path: Path,
) -> None:
    script = (
        "import os, time\n"
        "if os.fork() == 0:\n    os.setsid()\n    time.sleep(600)\n"
        "time.sleep(0.2)\n"
    )
    submission = tmp_path / "s.py"
    submission.write_text("pass\n")
    job = make_grading_job(hostile_assignment(script, limits="timeout_s = 120"), submission)
    handle = docker_launcher.launch(job)
    try:
        docker_launcher.make_ready(handle, job, timeout_s=30)
        docker_launcher.wait(handle, timeout_s=30)
        envelope = docker_launcher.collect(handle).envelope
    finally:
        docker_launcher.cleanup(handle)
    assert envelope is not None
    assert (envelope.status, envelope.orphans_killed) == ("exited", 1)


@pytest.fixture
def labelled_volumes(docker_client: docker.DockerClient) -> Iterator[Callable[[str, float], str]]:
    """Make gradeflow-labelled volumes with a given creation time; remove leftovers after."""
    made: list[str] = []

    def make(name: str, created: float) -> str:
        labels = {MANAGED_LABEL: "1", CREATED_LABEL: str(int(created))}
        docker_client.volumes.create(name=name, labels=labels)
        made.append(name)
        return name

    yield make
    for name in made:
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.volumes.get(name).remove()


@pytest.mark.docker
def test_sweep_removes_only_our_resources_older_than_the_bound(
    docker_client: docker.DockerClient, labelled_volumes: Callable[[str, float], str]
) -> None:
    old = labelled_volumes("gradeflow-test-sweep-old", time.time() - 7200)
    new = labelled_volumes("gradeflow-test-sweep-new", time.time())
    container = docker_client.containers.create(
        BASE_IMAGE, command=["true"], name="gradeflow-test-sweep-old-c",
        labels={MANAGED_LABEL: "1", CREATED_LABEL: str(int(time.time() - 7200))},
    )  # fmt: skip
    try:
        report = sweep(docker_client, older_than_s=3600)
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)
    assert report.containers == ["gradeflow-test-sweep-old-c"]
    assert old in report.volumes and new not in report.volumes
    assert docker_client.volumes.get(new).name == new


def _volumes(client: docker.DockerClient, name: str) -> list[str]:
    return sorted(v.name for v in client.volumes.list(filters={"name": name}))


@pytest.mark.docker
def test_a_coursera_run_reattaches_and_leaves_neither_container_nor_volumes(
    docker_launcher: DockerLauncher,
    docker_client: docker.DockerClient,
    make_grading_job: MakeJob,
    grader_images: list[str],
) -> None:
    example = EXAMPLES / "coursera-pyfib"
    job = make_grading_job(example, example / "submissions/correct.py")
    name = container_name(job.run_key)
    first = docker_launcher.launch(job)
    try:
        second = docker_launcher.launch(job)
        assert (first.reattached, second.reattached) == (False, True)
        assert _volumes(docker_client, name) == [name, f"{name}-shared"]
        assert _ours(docker_client, job.run_key) == [first.details["container_id"]]  # no helper
    finally:
        docker_launcher.cleanup(first)
    assert (_ours(docker_client, job.run_key), _volumes(docker_client, name)) == ([], [])
