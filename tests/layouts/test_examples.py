"""The Coursera- and Gradescope-style examples on the local backend, as expected.toml says."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from gradeflow import GradeStatus

from .conftest import Grade, as_root

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
LAYOUT_EXAMPLES = ("coursera-pyfib", "gradescope-pyprimes")


def cases() -> list[tuple[str, str, dict[str, object]]]:
    found = []
    for name in LAYOUT_EXAMPLES:
        expected = tomllib.loads((EXAMPLES / name / "expected.toml").read_text())
        found += [(name, sub, want) for sub, want in sorted(expected["submissions"].items())]
    return found


@as_root
@pytest.mark.parametrize(
    ("example", "submission", "expected"), cases(), ids=[f"{e}/{s}" for e, s, _ in cases()]
)
def test_an_example_submission_is_graded_as_expected(
    grade_file: Grade, example: str, submission: str, expected: dict[str, object]
) -> None:
    result = grade_file(EXAMPLES / example, EXAMPLES / example / "submissions" / submission)
    assert result.status == expected["status"], result.reason
    assert result.score == pytest.approx(expected["score"])
    assert result.max_score == pytest.approx(expected["max_score"])


@as_root
def test_the_coursera_example_sends_its_report_as_html(grade_file: Grade) -> None:
    example = EXAMPLES / "coursera-pyfib"
    result = grade_file(example, example / "submissions" / "partial.py")
    assert result.feedback_type == "html"
    assert "4 of 5 tests passed" in result.feedback


@as_root
def test_a_student_sees_the_gradescope_examples_visible_tests_only(grade_file: Grade) -> None:
    example = EXAMPLES / "gradescope-pyprimes"
    result = grade_file(example, example / "submissions" / "partial.py")
    view = result.student_view(after_due_date=False, published=False)
    assert result.status is GradeStatus.GRADED
    assert len(result.tests) == 5
    assert [t.name for t in view.tests] == [
        "is_prime on small numbers",
        "is_prime rejects 0, 1 and negatives",
        "primes_up_to(30)",
    ]


@as_root
def test_after_the_due_date_a_student_also_sees_the_after_due_date_test(
    grade_file: Grade,
) -> None:
    example = EXAMPLES / "gradescope-pyprimes"
    result = grade_file(example, example / "submissions" / "partial.py")
    view = result.student_view(after_due_date=True, published=True)
    assert "primes_up_to(1) is empty" in [t.name for t in view.tests]
    assert "is_prime on a large prime" not in [t.name for t in view.tests]
