"""The local backend through the core pipeline: idempotency, cleanup, and hostile graders."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from gradeflow import GradeStatus, Settings
from gradeflow._runtime import open_store

from .conftest import CountingLauncher, Grade

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GRADESCOPE_OK = (
    'printf \'{"score": 3, "max_score": 4, "tests": [{"name": "t", "score": 3, "max_score": 4}]}\''
    ' > "$GRADEFLOW_RESULTS_DIR/results.json"\n'
)
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="uid drop needs root")


def test_a_graded_run_stores_its_result_and_removes_its_run_directory(
    grade_file: Grade, make_assignment: Callable[..., Path], settings: Settings
) -> None:
    result = grade_file(make_assignment(GRADESCOPE_OK))
    assert (result.status, result.score, result.max_score) == (GradeStatus.GRADED, 3, 4)
    stored = open_store(settings).get_bytes("results/hw/s1/attempt-0001/result.json")
    assert json.loads(stored)["score"] == 3
    leftovers = [p.name for p in settings.runs_dir.iterdir() if p.name != ".index"]
    assert leftovers == []


def test_grading_the_same_attempt_again_returns_the_stored_result(
    grade_file: Grade, make_assignment: Callable[..., Path]
) -> None:
    assignment = make_assignment(GRADESCOPE_OK)
    first = grade_file(assignment)
    second = grade_file(assignment)
    assert second == first
    assert CountingLauncher.launches == 1


def test_force_grades_a_new_attempt_and_keeps_the_old_one(
    grade_file: Grade, make_assignment: Callable[..., Path], settings: Settings
) -> None:
    assignment = make_assignment(GRADESCOPE_OK)
    grade_file(assignment)
    again = grade_file(assignment, force=True)
    assert again.attempt == 2
    store = open_store(settings)
    assert store.exists("results/hw/s1/attempt-0001/result.json")
    assert json.loads(store.get_bytes("results/hw/s1/latest.json"))["attempt"] == 2


def test_an_invalid_archive_is_rejected_before_the_grader_runs(
    grade_file: Grade, make_assignment: Callable[..., Path], tmp_path: Path
) -> None:
    marker = tmp_path / "grader-ran"
    assignment = make_assignment(f"touch {marker}\n" + GRADESCOPE_OK)
    result = grade_file(assignment, EXAMPLES / "py-fizzbuzz" / "submissions" / "malformed.zip")
    assert result.status is GradeStatus.INVALID_SUBMISSION
    assert "'..'" in (result.reason or "")
    assert not marker.exists()
    assert not (tmp_path.parent / "evil.py").exists()


def test_the_grader_sees_only_the_contract_environment(
    grade_file: Grade, make_assignment: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-leak")
    script = (
        'env | sort > "$GRADEFLOW_WORK_DIR/env"\n'
        "python3 -c \"import json,os; json.dump({'score': 1, 'max_score': 1, "
        "'output': open(os.environ['GRADEFLOW_WORK_DIR'] + '/env').read()}, "
        "open(os.environ['GRADEFLOW_RESULTS_DIR'] + '/results.json', 'w'))\"\n"
    )
    result = grade_file(make_assignment(script))
    names = {line.split("=", 1)[0] for line in result.feedback.splitlines() if "=" in line}
    assert names <= {
        "PATH", "HOME", "LANG", "PYTHONDONTWRITEBYTECODE", "PWD", "SHLVL", "_",
        "GRADEFLOW_SUBMISSION_DIR", "GRADEFLOW_RESULTS_DIR", "GRADEFLOW_WORK_DIR",
        "GRADEFLOW_GRADER_DIR",
    }  # fmt: skip
    assert "do-not-leak" not in result.feedback


@as_root
def test_the_grader_runs_unprivileged_and_cannot_read_the_store(
    grade_file: Grade, make_assignment: Callable[..., Path], settings: Settings
) -> None:
    script = (
        f'if ls "{settings.store_dir}" >/dev/null 2>&1; then s=0; else s=1; fi\n'
        'printf \'{"score": %s, "max_score": 1, "output": "uid=%s"}\' "$s" "$(id -u)" '
        '> "$GRADEFLOW_RESULTS_DIR/results.json"\n'
    )
    result = grade_file(make_assignment(script))
    assert result.feedback == "uid=65534"
    assert result.score == 1


def test_a_results_symlink_planted_by_the_grader_is_not_followed(
    grade_file: Grade, make_assignment: Callable[..., Path]
) -> None:
    script = 'ln -s /etc/passwd "$GRADEFLOW_RESULTS_DIR/results.json"\n'
    result = grade_file(make_assignment(script))
    assert result.status is GradeStatus.GRADER_ERROR
    assert "root:" not in result.model_dump_json()


def test_a_grader_past_its_timeout_is_timed_out(
    grade_file: Grade, make_assignment: Callable[..., Path]
) -> None:
    result = grade_file(make_assignment("sleep 30\n", limits="timeout_s = 1"))
    assert result.status is GradeStatus.TIMED_OUT
    assert result.resources.wall_ms < 10_000


def test_an_output_flood_is_capped_as_output_exceeded(
    grade_file: Grade, make_assignment: Callable[..., Path]
) -> None:
    result = grade_file(make_assignment("head -c 50000000 /dev/zero\n" + GRADESCOPE_OK))
    assert result.status is GradeStatus.OUTPUT_EXCEEDED
    assert result.resources.output_truncated
    assert result.resources.stdout_bytes >= 50_000_000


def test_a_daemon_left_behind_by_the_grader_does_not_survive(
    grade_file: Grade, make_assignment: Callable[..., Path], tmp_path: Path
) -> None:
    script = (
        'python3 -c "import os,time\nif os.fork()==0:\n os.setsid()\n'
        " open(os.environ['GRADEFLOW_RESULTS_DIR'] + '/daemon.pid','w').write(str(os.getpid()))\n"
        ' time.sleep(60)" &\n'
        "sleep 0.3\n" + GRADESCOPE_OK
    )
    result = grade_file(make_assignment(script))
    assert result.status is GradeStatus.GRADED
    leftovers = [
        pid for pid in os.listdir("/proc")
        if pid.isdigit() and b"time.sleep(60)" in _cmdline(pid)
    ]  # fmt: skip
    assert leftovers == []


def test_a_grader_that_writes_nothing_is_a_grader_error(
    grade_file: Grade, make_assignment: Callable[..., Path]
) -> None:
    result = grade_file(make_assignment("exit 3\n"))
    assert result.status is GradeStatus.GRADER_ERROR
    assert "code 3" in (result.reason or "")


def test_a_missing_grader_program_is_a_grader_error(
    grade_file: Grade, make_assignment: Callable[..., Path]
) -> None:
    root = make_assignment("")
    toml = root / "assignment.toml"
    toml.write_text(toml.read_text().replace('"/bin/sh"', '"/no/such/program"'))
    result = grade_file(root)
    assert result.status is GradeStatus.GRADER_ERROR


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
