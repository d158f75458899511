"""Fixtures for grading through the core pipeline on the local backend (no Prefect)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from gradeflow import GradeResult, Settings
from gradeflow._runtime import launcher_for
from gradeflow.launchers import GradingJob, LaunchHandle, LocalLauncher

Grade = Callable[..., GradeResult]


class CountingLauncher(LocalLauncher):
    """The real local launcher, counting launches (to prove what was not re-run)."""

    launches = 0

    def launch(self, job: GradingJob) -> LaunchHandle:
        type(self).launches += 1
        return super().launch(job)


@pytest.fixture
def make_assignment(tmp_path: Path) -> Callable[..., Path]:
    """Write an assignment whose local grader is a shell script."""
    tmp_path.chmod(0o755)

    def make(
        script: str, *, assignment_id: str = "hw", limits: str = "", fmt: str = "gradescope"
    ) -> Path:
        root = tmp_path / assignment_id
        (root / "grader").mkdir(parents=True)
        (root / "grader" / "grade.sh").write_text(script)
        (root / "assignment.toml").write_text(
            f'id = "{assignment_id}"\ntitle = "test"\nresults_format = "{fmt}"\n'
            '[grader]\nlocal_command = ["/bin/sh", "{grader}/grade.sh"]\n'
            f"[limits]\nkill_grace_s = 0.5\n{limits or 'timeout_s = 5'}\n"
        )
        return root

    return make


@pytest.fixture
def grade_file(settings: Settings, grade_file_with: Callable[..., GradeResult]) -> Grade:
    """Grade a file (given its text or a path) on a counting local launcher."""
    CountingLauncher.launches = 0

    def run(assignment_dir: Path, *args: object, **kwargs: object) -> GradeResult:
        launcher = CountingLauncher(settings.runs_dir)
        return grade_file_with(launcher, assignment_dir, *args, **kwargs)

    assert launcher_for("local", settings).name == "local"
    return run
