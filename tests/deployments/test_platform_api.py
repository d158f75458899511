"""The course platform's view: the grade-submission deployment over plain HTTP.

Every call goes through the authenticated API of a real server whose
deployments came from deployments/prefect.yaml; runs execute on a real
process worker, and results are read back from the store it wrote.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from gradeflow import GradeRequest, Settings
from gradeflow._pipeline import prepare_submission
from gradeflow._regrade import latest_result
from gradeflow.storage import LocalStore

if TYPE_CHECKING:
    from conftest import Stack  # the fixture's type, for readers and mypy

FIZZBUZZ = Path(__file__).resolve().parents[2] / "examples" / "py-fizzbuzz"


def _store(stack: Stack) -> LocalStore:
    return LocalStore(Settings(home=stack.home).store_dir)


def _stored_key(stack: Stack, submission: str, tmp_path: Path, source: str = "full.py") -> str:
    """Upload a submission the way the platform would before asking for a grade."""
    request = GradeRequest(assignment="py-fizzbuzz", submission=submission,
                           submission_path=str(FIZZBUZZ / "submissions" / source))  # fmt: skip
    return prepare_submission(request, _store(stack), tmp_path).key


def _create_run(stack: Stack, body: dict[str, object], *, auth: bool = True) -> tuple[int, object]:
    deployment = stack.deployments["grade-submission"]
    return stack.call("POST", f"/deployments/{deployment}/create_flow_run", body, auth=auth)


def test_create_flow_run_grades_through_the_worker(stack: Stack, tmp_path: Path) -> None:
    key = _stored_key(stack, "api-full", tmp_path)
    status, run = _create_run(stack, {
        "idempotency_key": "platform/py-fizzbuzz/api-full/1",
        "parameters": {"request": {"assignment": "py-fizzbuzz", "submission": "api-full",
                                   "submission_key": key}},
    })  # fmt: skip
    assert status == 201 and isinstance(run, dict)
    final = stack.wait_for_run(str(run["id"]))
    assert final["state"]["type"] == "COMPLETED"  # type: ignore[index]
    result = latest_result(_store(stack), "py-fizzbuzz", "api-full")
    assert result is not None and result.status == "graded" and result.score == 10


def test_the_same_idempotency_key_twice_makes_one_run(stack: Stack, tmp_path: Path) -> None:
    key = _stored_key(stack, "api-twice", tmp_path)
    body: dict[str, object] = {
        "idempotency_key": f"platform/api-twice/{uuid.uuid4()}",
        "parameters": {"request": {"assignment": "py-fizzbuzz", "submission": "api-twice",
                                   "submission_key": key}},
    }  # fmt: skip
    first_status, first = _create_run(stack, body)
    second_status, second = _create_run(stack, body)
    assert (first_status, second_status) == (201, 200)
    assert isinstance(first, dict) and isinstance(second, dict)
    assert first["id"] == second["id"]


def test_a_parameter_that_breaks_the_schema_gets_409(stack: Stack) -> None:
    status, body = _create_run(stack, {
        "parameters": {"request": {"assignment": "py-fizzbuzz", "attempt": "many"}},
    })  # fmt: skip
    assert status == 409, body


def test_a_request_without_credentials_gets_401(stack: Stack) -> None:
    status, _ = _create_run(stack, {"parameters": {}}, auth=False)
    assert status == 401


def test_a_submission_created_event_triggers_a_grade(stack: Stack, tmp_path: Path) -> None:
    key = _stored_key(stack, "event-partial", tmp_path, "partial.py")
    status, _ = stack.call("POST", "/events", [{
        "id": str(uuid.uuid4()),
        "occurred": datetime.now(UTC).isoformat(),
        "event": "gradeflow.submission.created",
        "resource": {"prefect.resource.id": "gradeflow.submission.py-fizzbuzz.event-partial"},
        "payload": {"assignment": "py-fizzbuzz", "submission": "event-partial",
                    "student": "ada", "submission_key": key},
    }])  # fmt: skip
    assert status == 204
    deadline = time.monotonic() + 90
    result = None
    while result is None and time.monotonic() < deadline:
        time.sleep(1)
        result = latest_result(_store(stack), "py-fizzbuzz", "event-partial")
    assert result is not None, "no grade appeared for the posted event"
    assert result.student == "ada" and result.status == "graded"
