"""What students see: Gradescope's visibility rules over a stored result."""

from __future__ import annotations

import json

from gradeflow import GradeResult, GraderIdentity, GradeStatus, ShimEnvelope, TestResult
from gradeflow._models import Visibility
from gradeflow._results import interpret
from gradeflow._visibility import is_shown

EXITED = ShimEnvelope(shim_version="1", status="exited", exit_code=0)


def result(*tests: TestResult, **fields: object) -> GradeResult:
    base: dict[str, object] = {
        "assignment": "hw", "submission": "s1", "attempt": 1, "status": GradeStatus.GRADED,
        "score": 3.0, "max_score": 4.0, "fraction": 0.75, "feedback": "ok",
        "submission_sha256": "0" * 64, "grader": GraderIdentity(digest="d"),
        "shim_sha256": "0" * 64, "backend": "local", "run_id": "r", "tests": tests,
        "stdout_tail": "grader chatter",
    }  # fmt: skip
    return GradeResult.model_validate({**base, **fields})


def case(name: str, visibility: Visibility) -> TestResult:
    return TestResult(name=name, score=1, max_score=1, visibility=visibility)


BEFORE = {"after_due_date": False, "published": False}


def names(view_tests: tuple[TestResult, ...]) -> list[str]:
    return [t.name for t in view_tests]


def test_hidden_tests_are_kept_for_staff() -> None:
    assert names(result(case("a", "visible"), case("b", "hidden")).tests) == ["a", "b"]


def test_the_student_view_leaves_hidden_tests_out() -> None:
    view = result(case("a", "visible"), case("b", "hidden")).student_view(
        after_due_date=True, published=True
    )
    assert names(view.tests) == ["a"]


def test_after_due_date_tests_are_withheld_before_the_due_date() -> None:
    view = result(case("a", "after_due_date")).student_view(**BEFORE)
    assert view.tests == ()


def test_after_due_date_tests_are_shown_after_the_due_date() -> None:
    view = result(case("a", "after_due_date")).student_view(after_due_date=True, published=False)
    assert names(view.tests) == ["a"]


def test_after_published_tests_wait_for_publication() -> None:
    graded = result(case("a", "after_published"))
    assert graded.student_view(after_due_date=True, published=False).tests == ()
    assert names(graded.student_view(after_due_date=False, published=True).tests) == ["a"]


def test_a_hidden_result_withholds_the_score_and_every_test() -> None:
    view = result(case("a", "visible"), visibility="hidden").student_view(
        after_due_date=True, published=True
    )
    assert (view.results_hidden, view.score, view.tests, view.feedback) == (True, None, (), "")


def test_stdout_stays_with_staff_unless_the_grader_shows_it() -> None:
    assert result().student_view(**BEFORE).stdout == ""
    assert result(stdout_visibility="visible").student_view(**BEFORE).stdout == "grader chatter"


def test_the_student_view_keeps_the_feedback_type() -> None:
    view = result(feedback="<p>hi</p>", feedback_type="html").student_view(**BEFORE)
    assert (view.feedback, view.feedback_type) == ("<p>hi</p>", "html")


def test_nothing_declared_is_not_shown() -> None:
    assert not is_shown(None, after_due_date=True, published=True)


def test_gradescopes_top_level_visibility_and_stdout_visibility_are_parsed() -> None:
    raw = {"score": 1, "visibility": "after_published", "stdout_visibility": "after_due_date"}
    outcome = interpret(EXITED, {"results.json": json.dumps(raw).encode()}, fmt="gradescope")
    assert (outcome.visibility, outcome.stdout_visibility) == ("after_published", "after_due_date")


def test_the_top_level_visibility_is_each_tests_default() -> None:
    raw = {"tests": [{"score": 1, "max_score": 1}], "visibility": "hidden"}
    outcome = interpret(EXITED, {"results.json": json.dumps(raw).encode()}, fmt="gradescope")
    assert outcome.tests[0].visibility == "hidden"
