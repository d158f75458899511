"""Models: ids cannot inject keys or paths; requests name exactly one source."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gradeflow import GradeRequest, Limits


@pytest.mark.parametrize(
    "bad_id", ["", "UPPER", "../x", "a/b", "-lead", ".hidden", "a b", "x" * 129, "é", "a\0b"]
)
def test_ids_reject_anything_that_could_escape_a_key_or_path(bad_id: str) -> None:
    with pytest.raises(ValidationError):
        GradeRequest(assignment=bad_id, submission="s1", submission_path="/tmp/x")


@pytest.mark.parametrize("good_id", ["a", "hw1", "alice.2024-10_01", "0" * 128])
def test_ids_accept_plain_names(good_id: str) -> None:
    request = GradeRequest(assignment=good_id, submission=good_id, submission_path="/tmp/x")
    assert request.assignment == good_id


def test_request_needs_exactly_one_source() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        GradeRequest(assignment="a", submission="s")
    with pytest.raises(ValidationError, match="exactly one"):
        GradeRequest(assignment="a", submission="s", submission_path="/x", submission_key="k")


def test_request_rejects_unknown_backend_and_fields() -> None:
    with pytest.raises(ValidationError):
        GradeRequest.model_validate(
            {"assignment": "a", "submission": "s", "submission_path": "/x", "backend": "k8s"}
        )
    with pytest.raises(ValidationError):
        GradeRequest.model_validate(
            {"assignment": "a", "submission": "s", "submission_path": "/x", "extra": 1}
        )


def test_run_key_names_the_attempt() -> None:
    request = GradeRequest(assignment="hw1", submission="s7", submission_path="/x", attempt=3)
    assert request.run_key == "hw1.s7.a3"


def test_limits_are_bounded() -> None:
    with pytest.raises(ValidationError):
        Limits(timeout_s=0)
    with pytest.raises(ValidationError):
        Limits(memory_mb=1)
    assert Limits().memory_mb == 512
