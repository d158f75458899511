"""``gradeflow image build --gradescope``: an autograder.zip built the Gradescope way, graded."""

from __future__ import annotations

import shutil
import tomllib
import zipfile
from pathlib import Path

import docker
import pytest
from typer.testing import CliRunner

from flows.cli import app
from gradeflow._images import BASE_IMAGE

from .conftest import EXAMPLES, GradeDocker

EXAMPLE = EXAMPLES / "gradescope-pyprimes"
TAG = "gradeflow-tests/gradescope-pyprimes-zip:1"


def _zip(source: Path, target: Path) -> Path:
    """The directory's files at the top of a zip, as an instructor uploads it to Gradescope."""
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted(source.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                archive.write(path, path.relative_to(source).as_posix())
    return target


def test_gradescope_needs_a_tag(tmp_path: Path) -> None:
    outcome = CliRunner().invoke(app, ["image", "build", "--gradescope", str(tmp_path / "a.zip")])
    assert outcome.exit_code == 2
    assert "--tag" in outcome.output


def test_build_needs_an_assignment_dir_or_a_zip() -> None:
    outcome = CliRunner().invoke(app, ["image", "build"])
    assert outcome.exit_code == 2
    assert "ASSIGNMENT_DIR" in outcome.output


@pytest.mark.docker
def test_a_zip_without_run_autograder_is_a_configuration_error(
    docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    broken = tmp_path / "autograder.zip"
    with zipfile.ZipFile(broken, "w") as archive:
        archive.writestr("setup.sh", "true\n")
    outcome = CliRunner().invoke(
        app, ["image", "build", "--gradescope", str(broken), "--tag", "gradeflow-tests/x:1"]
    )
    assert outcome.exit_code == 2
    assert "run_autograder" in outcome.output


@pytest.mark.docker
def test_an_autograder_zip_built_by_the_cli_grades_every_example_as_expected(
    docker_client: docker.DockerClient,
    grade_docker: GradeDocker,
    test_images: list[str],
    tmp_path: Path,
) -> None:
    tmp_path.chmod(0o755)
    autograder = _zip(EXAMPLE / "autograder", tmp_path / "AUTOGRADER.zip")
    outcome = CliRunner().invoke(
        app,
        ["image", "build", "--gradescope", str(autograder), "--tag", TAG, "--base", BASE_IMAGE],
    )
    test_images.append(TAG)
    assert outcome.exit_code == 0, outcome.output
    assert f"{TAG}: built from AUTOGRADER.zip on {BASE_IMAGE}" in " ".join(outcome.output.split())
    config = docker_client.images.get(TAG).attrs["Config"]
    assert (config["Cmd"], config["WorkingDir"]) == (["/autograder/run_autograder"], "/autograder")

    assignment = tmp_path / "gradescope-pyprimes"
    assignment.mkdir()
    shutil.copy(EXAMPLE / "expected.toml", assignment)
    (assignment / "assignment.toml").write_text(
        'id = "gradescope-pyprimes"\ntitle = "Primes"\nlayout = "gradescope"\n'
        f'submission_filename = "primes.py"\n[grader]\nimage = "{TAG}"\n'
        "[limits]\ntimeout_s = 20\nmemory_mb = 256\nnproc = 64\n"
    )
    expected = tomllib.loads((EXAMPLE / "expected.toml").read_text())["submissions"]
    got = {}
    for name in sorted(expected):
        result = grade_docker(assignment, EXAMPLE / "submissions" / name, submission_id=name)
        got[name] = {"status": str(result.status), "score": result.score,
                     "max_score": result.max_score}  # fmt: skip
    assert got == expected
