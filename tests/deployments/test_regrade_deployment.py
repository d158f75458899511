"""The regrade-assignment deployment and the scheduler, on the session's real stack."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from gradeflow import GradeRequest, Settings
from gradeflow._pipeline import prepare_submission
from gradeflow._regrade import stored_results
from gradeflow.storage import LocalStore

if TYPE_CHECKING:
    from conftest import Stack

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SOURCES = {
    "py-fizzbuzz": ("full.py", "partial.py", "zero.py"),
    "py-wordfreq": ("full.zip", "partial.py", "zero.py"),
}


def _store(stack: Stack) -> LocalStore:
    return LocalStore(Settings(home=stack.home).store_dir)


def _upload(stack: Stack, assignment: str, count: int, tmp_path: Path, prefix: str) -> list[str]:
    """Store ``count`` submissions through the pipeline, as the platform's uploads would."""
    ids = []
    for index in range(count):
        submission = f"{prefix}-{index:02d}"
        source = EXAMPLES / assignment / "submissions" / SOURCES[assignment][index % 3]
        request = GradeRequest(assignment=assignment, submission=submission,
                               student=f"{prefix}-student-{index:02d}",
                               submission_path=str(source))  # fmt: skip
        prepare_submission(request, _store(stack), tmp_path / submission)
        ids.append(submission)
    return ids


def _attempts(stack: Stack, assignment: str, ids: list[str]) -> dict[str, int]:
    return {sub: len(stored_results(_store(stack), assignment, sub)) for sub in ids}


def _run_regrade(stack: Stack, parameters: dict[str, object]) -> str:
    deployment = stack.deployments["regrade-assignment"]
    status, run = stack.call("POST", f"/deployments/{deployment}/create_flow_run",
                             {"parameters": parameters})  # fmt: skip
    assert status == 201 and isinstance(run, dict), run
    return str(run["id"])


def test_a_cancelled_regrade_run_again_grades_each_submission_once(
    stack: Stack, tmp_path: Path
) -> None:
    ids = _upload(stack, "py-fizzbuzz", 30, tmp_path, "bulk")
    first = _run_regrade(stack, {"assignment": "py-fizzbuzz", "all_submissions": True,
                                 "concurrency": 2, "fan_out": False})  # fmt: skip
    deadline = time.monotonic() + 120
    while sum(_attempts(stack, "py-fizzbuzz", ids).values()) < 4:
        assert time.monotonic() < deadline, "the regrade graded nothing"
        time.sleep(0.3)
    status, _ = stack.call("POST", f"/flow_runs/{first}/set_state",
                           {"state": {"type": "CANCELLING"}, "force": True})  # fmt: skip
    assert status in (200, 201)
    cancelled = stack.wait_for_run(first, timeout=90)
    assert cancelled["state"]["type"] == "CANCELLED"  # type: ignore[index]
    midway = _attempts(stack, "py-fizzbuzz", ids)
    assert sum(midway.values()) < len(ids), "cancelled too late to test resuming"

    second = _run_regrade(stack, {"assignment": "py-fizzbuzz", "all_submissions": True,
                                  "concurrency": 4, "fan_out": False})  # fmt: skip
    done = stack.wait_for_run(second, timeout=240)
    assert done["state"]["type"] == "COMPLETED"  # type: ignore[index]
    assert _attempts(stack, "py-fizzbuzz", ids) == dict.fromkeys(ids, 1)


def test_a_fanned_out_regrade_grades_through_child_deployment_runs(
    stack: Stack, tmp_path: Path
) -> None:
    ids = _upload(stack, "py-wordfreq", 3, tmp_path, "fan")
    parent = _run_regrade(stack, {"assignment": "py-wordfreq", "all_submissions": True,
                                  "fan_out": True})  # fmt: skip
    done = stack.wait_for_run(parent, timeout=240)
    assert done["state"]["type"] == "COMPLETED"  # type: ignore[index]
    status, runs = stack.call("POST", "/flow_runs/filter", {"flow_runs": {
        "parent_flow_run_id": {"operator": "and_", "any_": [parent]}}})  # fmt: skip
    assert status == 200 and isinstance(runs, list)
    grade_runs = [r for r in runs if r["deployment_id"] == stack.deployments["grade-submission"]]
    assert len(grade_runs) == 3
    assert _attempts(stack, "py-wordfreq", ids) == dict.fromkeys(ids, 1)


def test_a_schedule_creates_a_run_on_the_scheduler(stack: Stack) -> None:
    deployment = stack.deployments["build-shim"]
    status, created = stack.call("POST", f"/deployments/{deployment}/schedules", [{
        "schedule": {"interval": 5}, "active": True, "max_scheduled_runs": 1,
    }])  # fmt: skip
    assert status == 201 and isinstance(created, list)
    try:
        deadline = time.monotonic() + 30
        runs: list[object] = []
        while not runs and time.monotonic() < deadline:
            time.sleep(0.5)
            _, found = stack.call("POST", "/flow_runs/filter", {"flow_runs": {
                "deployment_id": {"any_": [deployment]}}})  # fmt: skip
            assert isinstance(found, list)
            runs = [run for run in found if run["auto_scheduled"]]
        assert runs, "the scheduler created no run"
    finally:
        stack.call("DELETE", f"/deployments/{deployment}/schedules/{created[0]['id']}")
