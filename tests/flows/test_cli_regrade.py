"""``gradeflow regrade`` and ``gradeflow results`` against a real Prefect server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gradeflow import GradeRequest, Settings
from gradeflow._pipeline import prepare_submission
from gradeflow.storage import LocalStore

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GRADEFLOW = str(Path(sys.executable).parent / "gradeflow")


@pytest.fixture
def regrade_env(cli_env: dict[str, str], gradeflow_home: Path, tmp_path: Path) -> dict[str, str]:
    """Two stored fizzbuzz submissions (full and partial) in the CLI's home."""
    store = LocalStore(Settings(home=gradeflow_home).store_dir)
    for submission, source in (("cli-full", "full.py"), ("cli-partial", "partial.py")):
        request = GradeRequest(assignment="py-fizzbuzz", submission=submission,
                               student=submission, submission_path=str(
                                   EXAMPLES / "py-fizzbuzz" / "submissions" / source))  # fmt: skip
        prepare_submission(request, store, tmp_path / submission)
    return {**cli_env, "GRADEFLOW_ASSIGNMENTS_ROOT": str(EXAMPLES)}


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GRADEFLOW, *args], env=env, capture_output=True, text=True,
                          timeout=180)  # fmt: skip


def test_regrade_grades_every_stored_submission(regrade_env: dict[str, str]) -> None:
    done = _cli(["regrade", "py-fizzbuzz", "--all"], regrade_env)
    assert done.returncode == 0, done.stderr
    assert "graded 2: 0 up, 0 down, 0 same, 2 new, 0 error" in done.stdout


def test_a_second_regrade_skips_what_the_same_grader_graded(regrade_env: dict[str, str]) -> None:
    _cli(["regrade", "py-fizzbuzz"], regrade_env)
    again = _cli(["regrade", "py-fizzbuzz"], regrade_env)
    assert again.returncode == 0, again.stderr
    assert "skipped 2, graded 0" in again.stdout


def test_results_csv_lists_the_latest_score_of_each_submission(
    regrade_env: dict[str, str],
) -> None:
    _cli(["regrade", "py-fizzbuzz"], regrade_env)
    done = _cli(["results", "py-fizzbuzz", "--csv"], regrade_env)
    rows = [line.split(",") for line in done.stdout.splitlines()[1:]]
    assert sorted((row[1], row[5]) for row in rows) == [("cli-full", "10"), ("cli-partial", "7")]


def test_an_invalid_assignment_id_exits_2(cli_env: dict[str, str]) -> None:
    assert _cli(["results", "../etc"], cli_env).returncode == 2
