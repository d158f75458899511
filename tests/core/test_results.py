"""Interpreting a run: the envelope's verdict first, then each results format."""

from __future__ import annotations

import json
import signal
from typing import Any

import pytest

from gradeflow._models import GradeStatus, ResultsFormat, ShimEnvelope, TestResult
from gradeflow._results import (
    RESULT_FILES,
    ParsedOutcome,
    TextCaps,
    detect_format,
    interpret,
)

EXITED = ShimEnvelope(shim_version="1", status="exited", exit_code=0)

GRADESCOPE: dict[str, Any] = {
    "score": 7.5,
    "max_score": 10,
    "output": "<b>well done</b>",
    "output_format": "html",
    "tests": [
        {"name": "adds", "number": "1.1", "score": 5, "max_score": 5, "output": "ok"},
        {
            "name": "subtracts",
            "score": 2.5,
            "max_score": 5,
            "status": "failed",
            "output": "expected 3, got 4",
            "visibility": "after_due_date",
        },
    ],
}


def envelope(**fields: Any) -> ShimEnvelope:
    return ShimEnvelope(**{"shim_version": "1", "status": "exited", "exit_code": 0, **fields})


def as_json(data: Any) -> bytes:
    return json.dumps(data).encode()


def parse(
    files: dict[str, bytes], fmt: ResultsFormat = "auto", caps: TextCaps | None = None
) -> ParsedOutcome:
    if caps is None:
        return interpret(EXITED, files, fmt=fmt)
    return interpret(EXITED, files, fmt=fmt, caps=caps)


def grader_error(files: dict[str, bytes], fmt: ResultsFormat = "auto") -> str:
    outcome = parse(files, fmt)
    assert outcome.status is GradeStatus.GRADER_ERROR
    assert outcome.score is None
    assert outcome.reason is not None
    return outcome.reason


# -- Gradescope ----------------------------------------------------------------


def test_gradescope_results_are_normalised() -> None:
    outcome = parse({"results.json": as_json(GRADESCOPE)}, "gradescope")
    assert outcome == ParsedOutcome(
        status=GradeStatus.GRADED,
        score=7.5,
        max_score=10.0,
        fraction=0.75,
        feedback="<b>well done</b>",
        feedback_type="html",
        tests=(
            TestResult(name="1.1) adds", score=5, max_score=5, status="passed", output="ok"),
            TestResult(
                name="subtracts",
                score=2.5,
                max_score=5,
                status="failed",
                output="expected 3, got 4",
                visibility="after_due_date",
            ),
        ),
    )


def test_gradescope_score_and_max_default_to_the_sums_of_the_tests() -> None:
    data = {"tests": [{"score": 1, "max_score": 2}, {"score": 2, "max_score": 2}]}
    outcome = parse({"results.json": as_json(data)}, "gradescope")
    assert (outcome.score, outcome.max_score, outcome.fraction) == (3.0, 4.0, 0.75)
    assert [t.name for t in outcome.tests] == ["Test 1", "Test 2"]
    assert [t.status for t in outcome.tests] == ["failed", "passed"]


def test_gradescope_extra_credit_keeps_the_score_but_clamps_the_fraction() -> None:
    outcome = parse({"results.json": as_json({"score": 12, "max_score": 10})}, "gradescope")
    assert (outcome.score, outcome.max_score, outcome.fraction) == (12.0, 10.0, 1.0)


def test_gradescope_top_level_visibility_is_the_default_for_tests() -> None:
    data = {
        "score": 1,
        "visibility": "hidden",
        "tests": [{"name": "a"}, {"name": "b", "visibility": "visible"}],
    }
    outcome = parse({"results.json": as_json(data)}, "gradescope")
    assert [t.visibility for t in outcome.tests] == ["hidden", "visible"]


def test_gradescope_markdown_output_format_is_mapped() -> None:
    data = {"score": 1, "output": "# hi", "output_format": "md"}
    assert parse({"results.json": as_json(data)}, "gradescope").feedback_type == "markdown"


def test_gradescope_without_any_score_is_a_grader_error() -> None:
    reason = grader_error({"results.json": as_json({"tests": [{"name": "a"}]})}, "gradescope")
    assert "score is missing" in reason


def test_gradescope_negative_max_score_is_a_grader_error() -> None:
    data = {"score": 1, "max_score": -5}
    assert "max_score (-5) must be at least 0" in grader_error({"results.json": as_json(data)})


def test_gradescope_unknown_test_status_is_a_grader_error() -> None:
    data = {"score": 1, "tests": [{"name": "a", "status": "ok"}]}
    reason = grader_error({"results.json": as_json(data)})
    assert "tests[0].status must be 'passed' or 'failed'" in reason


def test_gradescope_unknown_visibility_is_a_grader_error() -> None:
    data = {"score": 1, "tests": [{"name": "a", "visibility": "secret"}]}
    assert "tests[0].visibility must be one of" in grader_error({"results.json": as_json(data)})


# -- Coursera ------------------------------------------------------------------


def test_coursera_feedback_is_normalised() -> None:
    data = {"fractionalScore": 0.8, "feedback": "good", "feedbackType": "TXT"}
    outcome = parse({"feedback.json": as_json(data)}, "coursera")
    assert outcome == ParsedOutcome(
        status=GradeStatus.GRADED, score=0.8, max_score=1.0, fraction=0.8, feedback="good"
    )


def test_coursera_html_feedback_type_is_mapped() -> None:
    data = {"fractionalScore": 1, "feedback": "<p>ok</p>", "feedbackType": "HTML"}
    assert parse({"feedback.json": as_json(data)}, "coursera").feedback_type == "html"


def test_coursera_rich_html_feedback_file_replaces_the_feedback() -> None:
    files = {
        "feedback.json": as_json({"fractionalScore": 0.5, "feedback": "short"}),
        "htmlFeedback.html": b"<h1>Details</h1>",
    }
    outcome = parse(files, "coursera")
    assert (outcome.feedback, outcome.feedback_type) == ("<h1>Details</h1>", "html")


def test_coursera_rich_text_feedback_file_replaces_the_feedback() -> None:
    files = {
        "feedback.json": as_json({"fractionalScore": 0.5, "feedback": "short"}),
        "txtFeedback.txt": b"long text",
    }
    outcome = parse(files, "coursera")
    assert (outcome.feedback, outcome.feedback_type) == ("long text", "text")


def test_coursera_fraction_above_one_is_a_grader_error() -> None:
    reason = grader_error({"feedback.json": as_json({"fractionalScore": 1.5})}, "coursera")
    assert "fractionalScore (1.5) must be at most 1" in reason


def test_coursera_missing_fraction_is_a_grader_error() -> None:
    reason = grader_error({"feedback.json": as_json({"feedback": "hi"})}, "coursera")
    assert "fractionalScore is missing" in reason


def test_coursera_non_utf8_rich_feedback_is_a_grader_error() -> None:
    files = {"feedback.json": as_json({"fractionalScore": 1}), "htmlFeedback.html": b"\xff\xfe"}
    assert "htmlFeedback.html: not valid UTF-8" in grader_error(files, "coursera")


# -- PrairieLearn --------------------------------------------------------------


PRAIRIELEARN: dict[str, Any] = {
    "gradable": True,
    "score": 0.25,
    "message": "Some tests failed",
    "output": "log",
    "tests": [
        {"name": "t1", "points": 1, "max_points": 1, "message": "good"},
        {"name": "t2", "description": "edge case", "points": 0, "max_points": 3, "output": "x"},
    ],
}


def test_prairielearn_results_are_normalised() -> None:
    outcome = parse({"results.json": as_json(PRAIRIELEARN)}, "prairielearn")
    assert outcome == ParsedOutcome(
        status=GradeStatus.GRADED,
        score=1.0,
        max_score=4.0,
        fraction=0.25,
        feedback="Some tests failed\n\nlog",
        tests=(
            TestResult(name="t1", score=1, max_score=1, status="passed", output="good"),
            TestResult(name="t2", score=0, max_score=3, status="failed", output="edge case\nx"),
        ),
    )


def test_prairielearn_without_test_points_scores_out_of_one() -> None:
    outcome = parse({"results.json": as_json({"gradable": True, "score": 0.6})}, "prairielearn")
    assert (outcome.score, outcome.max_score, outcome.fraction) == (0.6, 1.0, 0.6)


def test_prairielearn_not_gradable_is_an_invalid_submission() -> None:
    data = {"gradable": False, "message": "did not compile"}
    outcome = parse({"results.json": as_json(data)}, "prairielearn")
    assert outcome.status is GradeStatus.INVALID_SUBMISSION
    assert outcome.reason == "did not compile"
    assert outcome.score is None


def test_prairielearn_points_above_max_points_are_a_grader_error() -> None:
    data = {"score": 1, "tests": [{"name": "t", "points": 3, "max_points": 2}]}
    reason = grader_error({"results.json": as_json(data)}, "prairielearn")
    assert "tests[0].points (3) exceeds max_points (2)" in reason


def test_prairielearn_missing_score_is_a_grader_error() -> None:
    reason = grader_error({"results.json": as_json({"gradable": True})}, "prairielearn")
    assert "score is missing" in reason


def test_prairielearn_non_boolean_gradable_is_a_grader_error() -> None:
    reason = grader_error({"results.json": as_json({"gradable": "yes", "score": 1})})
    assert "gradable must be true or false" in reason


# -- malformed input, any format ----------------------------------------------


def test_invalid_json_is_a_grader_error() -> None:
    assert "malformed results.json: invalid JSON" in grader_error({"results.json": b"{score: 1"})


def test_a_json_array_is_a_grader_error() -> None:
    reason = grader_error({"results.json": b"[1, 2]"})
    assert "expected a JSON object, got an array" in reason


def test_wrong_type_of_score_is_a_grader_error() -> None:
    reason = grader_error({"results.json": as_json({"score": "10"})}, "gradescope")
    assert "score must be a number, not a string" in reason


def test_boolean_score_is_a_grader_error() -> None:
    reason = grader_error({"results.json": as_json({"score": True})}, "gradescope")
    assert "score must be a number, not a boolean" in reason


def test_wrong_type_of_tests_is_a_grader_error() -> None:
    reason = grader_error({"results.json": as_json({"score": 1, "tests": {"a": 1}})})
    assert "tests must be an array, not an object" in reason


def test_wrong_type_of_a_test_field_is_a_grader_error() -> None:
    data = {"score": 1, "tests": [{"name": "a", "output": ["x"]}]}
    assert "tests[0].output must be a string" in grader_error({"results.json": as_json(data)})


def test_nan_score_is_a_grader_error() -> None:
    reason = grader_error({"results.json": b'{"score": NaN, "max_score": 10}'}, "gradescope")
    assert "score must be a finite number" in reason


def test_infinite_max_score_is_a_grader_error() -> None:
    reason = grader_error({"results.json": b'{"score": 1, "max_score": 1e999}'}, "gradescope")
    assert "max_score must be a finite number" in reason


def test_non_utf8_results_are_a_grader_error() -> None:
    reason = grader_error({"results.json": b'{"score": 1, "output": "\xff"}'})
    assert "malformed results.json: not valid UTF-8" in reason


def test_utf8_byte_order_mark_is_accepted() -> None:
    outcome = parse({"results.json": b"\xef\xbb\xbf" + as_json({"score": 1, "max_score": 1})})
    assert outcome.status is GradeStatus.GRADED


def test_deeply_nested_json_is_a_grader_error() -> None:
    reason = grader_error({"results.json": b"[" * 100_000 + b"]" * 100_000})
    assert "malformed results.json" in reason


# -- auto-detection ------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"fractionalScore": 1}, "coursera"),
        ({"gradable": True, "score": 1}, "prairielearn"),
        ({"score": 1, "tests": [{"name": "a", "points": 1, "max_points": 1}]}, "prairielearn"),
        ({"score": 1, "tests": [{"name": "a", "score": 1}]}, "gradescope"),
        ({"score": 1}, "gradescope"),
        ([1, 2], "gradescope"),
    ],
)
def test_detect_format_by_shape(data: Any, expected: str) -> None:
    assert detect_format(data) == expected


def test_auto_reads_prairielearn_from_results_json() -> None:
    outcome = parse({"results.json": as_json(PRAIRIELEARN)}, "auto")
    assert (outcome.score, outcome.max_score, outcome.fraction) == (1.0, 4.0, 0.25)


def test_auto_reads_coursera_from_feedback_json() -> None:
    outcome = parse({"feedback.json": as_json({"fractionalScore": 0.4})}, "auto")
    assert (outcome.score, outcome.max_score, outcome.fraction) == (0.4, 1.0, 0.4)


def test_result_files_name_what_each_format_reads() -> None:
    assert RESULT_FILES["gradescope"] == ("results.json",)
    assert RESULT_FILES["prairielearn"] == ("results.json",)
    assert RESULT_FILES["coursera"][0] == "feedback.json"
    assert {"results.json", "feedback.json"} <= set(RESULT_FILES["auto"])


# -- caps ----------------------------------------------------------------------


def test_long_feedback_is_truncated_with_a_marker() -> None:
    caps = TextCaps(feedback_bytes=10)
    outcome = parse({"results.json": as_json({"score": 1, "output": "x" * 25})}, caps=caps)
    assert outcome.feedback == "x" * 10 + "\n…[truncated 15 bytes]"


def test_truncation_never_splits_a_character() -> None:
    caps = TextCaps(feedback_bytes=5)
    outcome = parse({"results.json": as_json({"score": 1, "output": "ééé"})}, caps=caps)
    assert outcome.feedback == "éé\n…[truncated 2 bytes]"


def test_long_test_output_is_truncated() -> None:
    data = {"score": 1, "tests": [{"name": "a", "output": "y" * 100}]}
    outcome = parse({"results.json": as_json(data)}, caps=TextCaps(test_output_bytes=40))
    assert outcome.tests[0].output == "y" * 40 + "\n…[truncated 60 bytes]"


def test_long_test_name_is_cut() -> None:
    data = {"score": 1, "tests": [{"name": "n" * 300}]}
    name = parse({"results.json": as_json(data)}).tests[0].name
    assert len(name) == 256
    assert name.endswith("…")


def test_tests_beyond_the_cap_are_dropped_and_counted() -> None:
    data = {"score": 1, "output": "fb", "tests": [{"name": f"t{i}"} for i in range(5)]}
    outcome = parse({"results.json": as_json(data)}, caps=TextCaps(max_tests=3))
    assert [t.name for t in outcome.tests] == ["t0", "t1", "t2"]
    assert outcome.feedback == "fb\n…[2 more tests not shown]"


def test_default_caps() -> None:
    caps = TextCaps()
    assert (caps.feedback_bytes, caps.test_output_bytes, caps.max_tests, caps.name_chars) == (
        64 * 1024,
        16 * 1024,
        1000,
        256,
    )


def test_lone_surrogates_from_json_escapes_become_encodable() -> None:
    outcome = parse({"results.json": b'{"score": 1, "output": "a\\ud800b"}'})
    assert outcome.feedback == "a?b"


# -- the envelope decides first ------------------------------------------------

GOOD_RESULTS = {"results.json": as_json({"score": 10, "max_score": 10})}


def verdict(env: ShimEnvelope | None, memory_limit_mb: int | None = None) -> ParsedOutcome:
    outcome = interpret(env, GOOD_RESULTS, fmt="gradescope", memory_limit_mb=memory_limit_mb)
    if outcome.status is not GradeStatus.GRADED:
        assert outcome.score is None
        assert outcome.reason
    return outcome


def test_no_envelope_is_an_infra_error() -> None:
    outcome = verdict(None)
    assert (outcome.status, outcome.reason) == (
        GradeStatus.INFRA_ERROR,
        "the shim wrote no envelope",
    )


def test_ready_timeout_is_an_infra_error() -> None:
    assert verdict(envelope(status="ready_timeout")).status is GradeStatus.INFRA_ERROR


def test_ready_mismatch_is_an_infra_error() -> None:
    outcome = verdict(envelope(status="ready_mismatch", error="sha256 differs"))
    assert outcome.status is GradeStatus.INFRA_ERROR
    assert outcome.reason is not None and "sha256 differs" in outcome.reason


def test_timed_out_with_results_present_is_timed_out() -> None:
    outcome = verdict(envelope(status="timed_out", signal=9, wall_ms=10_000))
    assert outcome.status is GradeStatus.TIMED_OUT


def test_timed_out_wins_over_oom() -> None:
    assert verdict(envelope(status="timed_out", oom_killed=True)).status is GradeStatus.TIMED_OUT


def test_oom_killed_is_memory_exceeded() -> None:
    outcome = verdict(envelope(status="signaled", signal=9, oom_killed=True))
    assert outcome.status is GradeStatus.MEMORY_EXCEEDED


def test_sigkill_near_the_memory_limit_is_memory_exceeded() -> None:
    env = envelope(status="signaled", signal=9, max_rss_kb=250 * 1024)
    assert verdict(env, memory_limit_mb=256).status is GradeStatus.MEMORY_EXCEEDED


def test_sigkill_far_below_the_memory_limit_is_a_grader_error() -> None:
    env = envelope(status="signaled", signal=9, max_rss_kb=10 * 1024)
    outcome = verdict(env, memory_limit_mb=256)
    assert outcome.status is GradeStatus.GRADER_ERROR
    assert outcome.reason == "grader killed by signal 9 (SIGKILL)"


def test_sigkill_with_oom_known_false_is_not_memory_exceeded() -> None:
    env = envelope(status="signaled", signal=9, oom_killed=False, max_rss_kb=256 * 1024)
    assert verdict(env, memory_limit_mb=256).status is GradeStatus.GRADER_ERROR


def test_output_truncated_is_output_exceeded() -> None:
    outcome = verdict(envelope(output_truncated=True, stdout_bytes=2_000_000))
    assert outcome.status is GradeStatus.OUTPUT_EXCEEDED


def test_spawn_failed_is_a_grader_error_naming_the_shims_error() -> None:
    outcome = verdict(envelope(status="spawn_failed", error="execve(/grader/run): ENOENT"))
    assert outcome.status is GradeStatus.GRADER_ERROR
    assert outcome.reason is not None and "execve(/grader/run): ENOENT" in outcome.reason


def test_killed_by_a_signal_is_a_grader_error_naming_it() -> None:
    outcome = verdict(envelope(status="signaled", signal=int(signal.SIGSEGV)))
    assert outcome.status is GradeStatus.GRADER_ERROR
    assert outcome.reason == "grader killed by signal 11 (SIGSEGV)"


def test_exited_with_results_is_graded() -> None:
    outcome = verdict(envelope(exit_code=0))
    assert (outcome.status, outcome.score, outcome.fraction) == (GradeStatus.GRADED, 10.0, 1.0)


def test_exited_non_zero_with_results_is_still_graded() -> None:
    assert verdict(envelope(exit_code=1)).status is GradeStatus.GRADED


def test_exited_non_zero_without_results_is_a_grader_error() -> None:
    outcome = interpret(envelope(exit_code=2), {}, fmt="gradescope")
    assert outcome.status is GradeStatus.GRADER_ERROR
    assert outcome.reason is not None
    assert outcome.reason.startswith("grader exited with code 2 and wrote no results")


def test_exited_zero_without_results_names_the_files_looked_for() -> None:
    outcome = interpret(envelope(exit_code=0), {"other.txt": b"x"}, fmt="auto")
    assert outcome.status is GradeStatus.GRADER_ERROR
    assert outcome.reason == (
        "grader exited with code 0 but wrote no results file "
        "(looked for results.json, feedback.json)"
    )


def test_the_wrong_formats_file_counts_as_no_results() -> None:
    outcome = interpret(EXITED, {"results.json": as_json({"score": 1})}, fmt="coursera")
    assert outcome.status is GradeStatus.GRADER_ERROR
    assert outcome.reason is not None and "looked for feedback.json" in outcome.reason
