"""What students may see of a result: Gradescope's visibility rules, for every format.

Staff keep everything in the stored `GradeResult`; the student-facing view is
derived from it on demand, because whether an ``after_due_date`` test may be
shown changes with the clock, not with the grading run. The levels mean what
Gradescope documents:

    visible           always shown
    hidden            never shown to students
    after_due_date    shown once the due date (and any late due date) passed
    after_published   shown once the grades are published

They apply to each test, to the result as a whole (Gradescope's top-level
``visibility``: until it allows, the student sees neither the score nor any
test nor the feedback), and to the grader's stdout (``stdout_visibility``;
when the grader set none, stdout stays with staff -- the conservative
reading, since stdout often prints hidden tests' details).
"""

from __future__ import annotations

from ._models import GradeResult, GradeStatus, StudentFeedback, Visibility

__all__ = ["is_shown", "student_view"]


def is_shown(visibility: Visibility | None, *, after_due_date: bool, published: bool) -> bool:
    """Whether something with ``visibility`` may be shown to the student now.

    ``None`` (nothing declared) is not shown: only the grader can say a thing
    is for students.
    """
    if visibility == "visible":
        return True
    if visibility == "after_due_date":
        return after_due_date
    if visibility == "after_published":
        return published
    return False  # hidden, or undeclared


def student_view(result: GradeResult, *, after_due_date: bool, published: bool) -> StudentFeedback:
    """The student-facing feedback of ``result`` at this moment.

    Args:
        result: the stored result, with every test.
        after_due_date: the assignment's due date (and late due date) has passed.
        published: staff have published the grades.

    Returns:
        The score, feedback and tests the student may see; staff-only detail
        (the reason, stderr, resources, ids) is never part of it.
    """
    when = {"after_due_date": after_due_date, "published": published}
    if result.status is GradeStatus.GRADED and not is_shown(result.visibility, **when):
        return StudentFeedback(status=result.status, results_hidden=True)
    tests = tuple(t for t in result.tests if is_shown(t.visibility, **when))
    stdout = result.stdout_tail if is_shown(result.stdout_visibility, **when) else ""
    return StudentFeedback(
        status=result.status,
        score=result.score,
        max_score=result.max_score,
        fraction=result.fraction,
        feedback=result.feedback,
        feedback_type=result.feedback_type,
        tests=tests,
        stdout=stdout,
    )
