"""Fixtures for grading under each layout on the local backend (no Prefect).

Assignments here are small shell-script graders, like tests/launchers', but
written to a layout's paths: they report what they saw in their results file
so each test can assert one thing about the tree the grader was given.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from gradeflow import GradeResult, Settings
from gradeflow.launchers import LocalLauncher

Grade = Callable[..., GradeResult]
MakeAssignment = Callable[..., Path]

as_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="the coursera/gradescope layouts and the uid drop need root"
)


@pytest.fixture
def make_assignment(tmp_path: Path) -> MakeAssignment:
    """Write an assignment whose grader is one shell script, under a given layout.

    The script is ``grader/run_autograder`` (executable): the gradescope layout
    runs it as /autograder/run_autograder, the others through /bin/sh.
    """
    tmp_path.chmod(0o755)

    def make(
        script: str,
        *,
        layout: str = "gradeflow",
        assignment_id: str = "hw",
        grader: str = "",
        extra: str = "",
    ) -> Path:
        root = tmp_path / assignment_id
        (root / "grader").mkdir(parents=True)
        program = root / "grader" / "run_autograder"
        program.write_text("#!/bin/sh\n" + script)
        program.chmod(0o755)
        command = (
            '["/autograder/run_autograder"]'
            if layout == "gradescope"
            else '["/bin/sh", "{grader}/run_autograder"]'
        )
        fmt = 'results_format = "gradescope"\n' if layout == "gradeflow" else ""
        (root / "assignment.toml").write_text(
            f'id = "{assignment_id}"\ntitle = "Layout test"\nlayout = "{layout}"\n{fmt}'
            f'submission_filename = "answer.py"\n{extra}'
            f"[grader]\nlocal_command = {command}\n{grader}"
            "[limits]\ntimeout_s = 10\nkill_grace_s = 0.5\n"
        )
        return root

    return make


@pytest.fixture
def grade_file(settings: Settings, grade_file_with: Callable[..., GradeResult]) -> Grade:
    """Grade a submission (its text, or a path) as student ``alice``."""

    def run(
        assignment_dir: Path,
        submission: str | Path = "print('hi')\n",
        *,
        submission_id: str = "s1",
        student: str | None = "alice",
    ) -> GradeResult:
        launcher = LocalLauncher(settings.runs_dir)
        return grade_file_with(
            launcher, assignment_dir, submission,
            submission_id=submission_id, student=student, filename="submitted.py",
        )  # fmt: skip

    return run
