"""Every example submission graded on the docker backend exactly as expected.toml says."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from .conftest import EXAMPLES, GradeDocker


def _case(path: Path) -> object:
    assignment_dir = path.parent.parent
    return pytest.param(assignment_dir, path, id=f"{assignment_dir.name}/{path.name}")


CASES = [_case(path) for path in sorted(EXAMPLES.glob("*/submissions/*")) if path.is_file()]


def _expected(assignment_dir: Path, name: str) -> dict[str, object]:
    expected = tomllib.loads((assignment_dir / "expected.toml").read_text())
    return dict(expected["submissions"][name])


@pytest.mark.docker
@pytest.mark.parametrize(("assignment_dir", "submission"), CASES)
def test_an_example_submission_gets_its_expected_status_and_score(
    grade_docker: GradeDocker, assignment_dir: Path, submission: Path
) -> None:
    want = _expected(assignment_dir, submission.name)
    result = grade_docker(assignment_dir, submission, submission_id="example")
    got = {"status": str(result.status)}
    if "score" in want:
        got |= {"score": result.score, "max_score": result.max_score}
    assert got == want
    assert result.backend == "docker"


@pytest.mark.docker
@pytest.mark.prefect
def test_the_cli_grades_on_the_docker_backend(
    cli_env: dict[str, str], grader_images: list[str]
) -> None:
    assignment = EXAMPLES / "py-fizzbuzz"
    command = [
        str(Path(sys.executable).parent / "gradeflow"), "grade", str(assignment),
        str(assignment / "submissions" / "partial.py"), "--backend", "docker", "--json",
    ]  # fmt: skip
    done = subprocess.run(command, env=cli_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert (result["status"], result["score"], result["backend"]) == ("graded", 7.0, "docker")
