"""Fixtures for grading through the core pipeline on the local backend (no Prefect)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from gradeflow import GradeRequest, GradeResult, Settings
from gradeflow._pipeline import grade
from gradeflow._runtime import launcher_for, open_store
from gradeflow._shim_build import ShimArtifact
from gradeflow.launchers import GradingJob, LaunchHandle, LocalLauncher

Grade = Callable[..., GradeResult]


class CountingLauncher(LocalLauncher):
    """The real local launcher, counting launches (to prove what was not re-run)."""

    launches = 0

    def launch(self, job: GradingJob) -> LaunchHandle:
        type(self).launches += 1
        return super().launch(job)


@pytest.fixture
def settings(gradeflow_home: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("GRADEFLOW_HOME", str(gradeflow_home))
    return Settings()


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
def grade_file(settings: Settings, shim_artifact: ShimArtifact, tmp_path: Path) -> Grade:
    """Grade a file (given its text or a path) against an assignment directory."""
    CountingLauncher.launches = 0
    store = open_store(settings)

    def run(
        assignment_dir: Path,
        submission: str | Path = "print('hi')\n",
        *,
        submission_id: str = "s1",
        **request: object,
    ) -> GradeResult:
        if isinstance(submission, str):
            path = tmp_path / "submission.py"
            path.write_text(submission)
        else:
            path = submission
        launcher = CountingLauncher(settings.runs_dir)
        req = GradeRequest(
            assignment=assignment_dir.name,
            submission=submission_id,
            submission_path=str(path),
            assignment_dir=str(assignment_dir),
            **request,  # type: ignore[arg-type]
        )
        return grade(req, settings=settings, store=store, launcher=launcher, shim=shim_artifact)

    assert launcher_for("local", settings).name == "local"
    return run
