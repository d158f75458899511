"""From the shim's envelope and the grader's results files to one outcome.

The envelope is read first, and decides before any score is trusted: a grader
that timed out may well have written a plausible ``results.json`` on its way
down, and that score must not count. The order, first match wins:

    no envelope                       infra_error   (the shim wrote nothing)
    ready_timeout / ready_mismatch    infra_error   (never the student's fault)
    timed_out                         timed_out
    oom_killed                        memory_exceeded
    SIGKILL, oom unknown, RSS >= 90%  memory_exceeded
    output_truncated                  output_exceeded
    spawn_failed                      grader_error  (with the shim's error)
    signaled                          grader_error  ("killed by signal 11 (SIGSEGV)")
    exited, no results file           grader_error  (naming the code / the files)
    exited, results file              parsed: graded, invalid_submission, or
                                      grader_error if the file is malformed

Only ``graded`` carries a score. Malformed grader output of any kind -- bad
JSON, wrong types, NaN, out-of-range scores, non-UTF-8 -- becomes a
``grader_error`` whose reason names the file and the field; `interpret`
never raises. Text is capped (`TextCaps`) so a chatty grader cannot bloat
stored results.
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

from ._models import FeedbackType, GradeStatus, ResultsFormat, ShimEnvelope, TestResult, Visibility

__all__ = [
    "RESULT_FILES",
    "ParsedOutcome",
    "TextCaps",
    "detect_format",
    "interpret",
]

RESULT_FILES: dict[ResultsFormat, tuple[str, ...]] = {
    "gradescope": ("results.json",),
    "coursera": ("feedback.json", "htmlFeedback.html", "txtFeedback.txt"),
    "prairielearn": ("results.json",),
    "auto": ("results.json", "feedback.json", "htmlFeedback.html", "txtFeedback.txt"),
}
"""Which files of the results directory each format reads; copy these back."""

_PRIMARY: dict[ResultsFormat, tuple[str, ...]] = {
    "gradescope": ("results.json",),
    "coursera": ("feedback.json",),
    "prairielearn": ("results.json",),
    "auto": ("results.json", "feedback.json"),
}
"""The file whose presence means "the grader wrote results", in order of preference."""

_OOM_RSS_FRACTION = 0.9
_VISIBILITIES = ("visible", "hidden", "after_due_date", "after_published")
_Visibility = Visibility


@dataclass(frozen=True)
class TextCaps:
    """How much grader text is kept. Longer text is cut and marked.

    Args:
        feedback_bytes: overall feedback (Coursera's own limit is 64 KB).
        test_output_bytes: output of one test.
        max_tests: tests kept; the rest are counted in the feedback.
        name_chars: characters of a test name.
        file_bytes: largest results file read at all.
    """

    feedback_bytes: int = 64 * 1024
    test_output_bytes: int = 16 * 1024
    max_tests: int = 1000
    name_chars: int = 256
    file_bytes: int = 16 * 1024 * 1024


@dataclass(frozen=True)
class ParsedOutcome:
    """What a run amounted to, before it is stamped with ids into a `GradeResult`."""

    status: GradeStatus
    reason: str | None = None
    score: float | None = None
    max_score: float | None = None
    fraction: float | None = None
    feedback: str = ""
    feedback_type: FeedbackType = "text"
    tests: tuple[TestResult, ...] = ()
    visibility: Visibility = "visible"
    stdout_visibility: Visibility | None = None


def detect_format(data: Any) -> ResultsFormat:
    """Guess the format of a parsed results file by its shape.

    ``fractionalScore`` means Coursera; ``gradable``, or tests carrying
    ``points``/``max_points``, mean PrairieLearn; anything else is read as
    Gradescope (which then reports what is wrong with it). Never ``auto``.
    """
    if not isinstance(data, dict):
        return "gradescope"
    if "fractionalScore" in data:
        return "coursera"
    if "gradable" in data:
        return "prairielearn"
    tests = data.get("tests")
    if isinstance(tests, list) and any(
        isinstance(t, dict) and ("points" in t or "max_points" in t) for t in tests
    ):
        return "prairielearn"
    return "gradescope"


def interpret(
    envelope: ShimEnvelope | None,
    results_files: Mapping[str, bytes],
    *,
    fmt: ResultsFormat,
    memory_limit_mb: int | None = None,
    caps: TextCaps = TextCaps(),
) -> ParsedOutcome:
    """Decide how a run ended and, if the grader finished, what it scored.

    Args:
        envelope: the shim's envelope, or None if it wrote none.
        results_files: file name -> content of the results directory (at
            least the names in ``RESULT_FILES[fmt]`` that exist).
        fmt: the assignment's results format.
        memory_limit_mb: the run's memory limit, to recognise an OOM kill the
            kernel did not report.
        caps: how much text to keep.

    Returns:
        The outcome; ``score`` is set only when ``status`` is ``graded``.
    """
    verdict = _envelope_verdict(envelope, memory_limit_mb)
    if verdict is not None:
        return verdict
    assert envelope is not None  # _envelope_verdict rejects None
    primary = next((name for name in _PRIMARY[fmt] if name in results_files), None)
    if primary is None:
        looked = ", ".join(_PRIMARY[fmt])
        if envelope.exit_code:
            return _fail(
                GradeStatus.GRADER_ERROR,
                f"grader exited with code {envelope.exit_code} and wrote no results "
                f"(looked for {looked})",
            )
        return _fail(
            GradeStatus.GRADER_ERROR,
            f"grader exited with code 0 but wrote no results file (looked for {looked})",
        )
    try:
        return _parse(primary, results_files, fmt, caps)
    except _Malformed as exc:
        return _fail(GradeStatus.GRADER_ERROR, f"malformed {primary}: {exc}")
    except Exception as exc:  # never raise: any surprise is the grader's output's fault
        return _fail(
            GradeStatus.GRADER_ERROR, f"could not read {primary}: {type(exc).__name__}: {exc}"
        )


# -- the envelope --------------------------------------------------------------


def _envelope_verdict(
    envelope: ShimEnvelope | None, memory_limit_mb: int | None
) -> ParsedOutcome | None:
    """The outcome the envelope alone decides, or None if results are to be read."""
    if envelope is None:
        return _fail(GradeStatus.INFRA_ERROR, "the shim wrote no envelope")
    status = envelope.status
    if status == "ready_timeout":
        return _fail(
            GradeStatus.INFRA_ERROR,
            f"the submission was not ready in time ({envelope.ready_wait_ms} ms)"
            + _detail(envelope),
        )
    if status == "ready_mismatch":
        return _fail(
            GradeStatus.INFRA_ERROR,
            "the submission in the container did not match the uploaded one" + _detail(envelope),
        )
    if status == "timed_out":
        return _fail(
            GradeStatus.TIMED_OUT, f"grader exceeded its time limit (ran {envelope.wall_ms} ms)"
        )
    if envelope.oom_killed:
        return _fail(
            GradeStatus.MEMORY_EXCEEDED, "grader was killed for exceeding its memory limit"
        )
    if (
        status == "signaled"
        and envelope.signal == signal.SIGKILL
        and envelope.oom_killed is None
        and memory_limit_mb is not None
        and envelope.max_rss_kb >= _OOM_RSS_FRACTION * memory_limit_mb * 1024
    ):
        return _fail(
            GradeStatus.MEMORY_EXCEEDED,
            f"grader was killed (SIGKILL) using {envelope.max_rss_kb // 1024} MB of its "
            f"{memory_limit_mb} MB memory limit",
        )
    if envelope.output_truncated:
        return _fail(
            GradeStatus.OUTPUT_EXCEEDED,
            f"grader output exceeded the limit ({envelope.stdout_bytes} bytes on stdout, "
            f"{envelope.stderr_bytes} on stderr)",
        )
    if status == "spawn_failed":
        return _fail(
            GradeStatus.GRADER_ERROR,
            f"grader could not be started: {envelope.error or 'no error reported'}",
        )
    if status == "signaled":
        return _fail(
            GradeStatus.GRADER_ERROR, f"grader killed by signal {_signal_name(envelope.signal)}"
        )
    return None


def _detail(envelope: ShimEnvelope) -> str:
    return f": {envelope.error}" if envelope.error else ""


def _signal_name(number: int | None) -> str:
    if number is None:
        return "(unknown)"
    try:
        return f"{number} ({signal.Signals(number).name})"
    except ValueError:
        return str(number)


def _fail(status: GradeStatus, reason: str) -> ParsedOutcome:
    return ParsedOutcome(status=status, reason=reason)


# -- parsing -------------------------------------------------------------------


class _Malformed(Exception):
    """The grader's output broke the format; the message names the field."""


def _parse(
    primary: str, files: Mapping[str, bytes], fmt: ResultsFormat, caps: TextCaps
) -> ParsedOutcome:
    data = _load_json(files[primary], caps)
    if fmt == "auto":
        fmt = detect_format(data)
    if not isinstance(data, dict):
        raise _Malformed(f"expected a JSON object, got {_type_name(data)}")
    obj = cast(dict[str, Any], data)
    if fmt == "coursera":
        return _parse_coursera(obj, files, caps)
    if fmt == "prairielearn":
        return _parse_prairielearn(obj, caps)
    return _parse_gradescope(obj, caps)


def _load_json(raw: bytes, caps: TextCaps) -> Any:
    if len(raw) > caps.file_bytes:
        raise _Malformed(f"{len(raw)} bytes, over the limit of {caps.file_bytes}")
    text = _decode(raw)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _Malformed(f"invalid JSON: {exc}") from None
    except RecursionError:
        raise _Malformed("invalid JSON: nested too deeply") from None


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _Malformed(f"not valid UTF-8 ({exc.reason} at byte {exc.start})") from None


def _parse_gradescope(data: dict[str, Any], caps: TextCaps) -> ParsedOutcome:
    default_visibility = _visibility(data, "visibility", "visible")
    raw_tests = _list(data, "tests")
    tests: list[TestResult] = []
    test_scores: list[float] = []
    test_maxes: list[float] = []
    for i, item in enumerate(raw_tests):
        where = f"tests[{i}]"
        test = _object(item, where)
        score = _number(test, "score", where)
        max_score = _number(test, "max_score", where, minimum=0)
        status = _string(test, "status", where)
        if status is not None and status not in ("passed", "failed"):
            raise _Malformed(f"{where}.status must be 'passed' or 'failed', not {status!r}")
        if status is None and score is not None and max_score is not None:
            status = "passed" if score >= max_score else "failed"
        name = _string(test, "name", where)
        number = test.get("number")
        if number is not None and not isinstance(number, (str, int, float)):
            raise _Malformed(f"{where}.number must be a string or a number")
        label = name if name is not None else f"Test {i + 1}"
        if number is not None and not isinstance(number, bool):
            label = f"{number}) {label}" if name is not None else str(number)
        if score is not None:
            test_scores.append(score)
        if max_score is not None:
            test_maxes.append(max_score)
        tests.append(
            TestResult(
                name=label,
                score=score,
                max_score=max_score,
                status=cast(Literal["passed", "failed"] | None, status),
                output=_string(test, "output", where) or "",
                visibility=_visibility(test, "visibility", default_visibility, where),
            )
        )
    score = _number(data, "score")
    if score is None:
        if not test_scores:
            raise _Malformed("score is missing and no test carries a score")
        score = math.fsum(test_scores)
    max_score = _number(data, "max_score", minimum=0)
    if max_score is None and test_maxes:
        max_score = math.fsum(test_maxes)
    fraction = None
    if max_score is not None and max_score > 0:
        fraction = min(max(score / max_score, 0.0), 1.0)  # extra credit may exceed max_score
    feedback_type = _gradescope_format(_string(data, "output_format"))
    outcome = _graded(
        score=score,
        max_score=max_score,
        fraction=fraction,
        feedback=_string(data, "output") or "",
        feedback_type=feedback_type,
        tests=tests,
        caps=caps,
    )
    stdout_visibility = (
        _visibility(data, "stdout_visibility", "hidden") if "stdout_visibility" in data else None
    )
    return dataclasses.replace(
        outcome, visibility=default_visibility, stdout_visibility=stdout_visibility
    )


def _parse_coursera(
    data: dict[str, Any], files: Mapping[str, bytes], caps: TextCaps
) -> ParsedOutcome:
    fraction = _number(data, "fractionalScore", minimum=0, maximum=1)
    if fraction is None:
        raise _Malformed("fractionalScore is missing")
    feedback = _string(data, "feedback") or ""
    declared = _string(data, "feedbackType")
    feedback_type: FeedbackType = "html" if (declared or "").upper() == "HTML" else "text"
    for name, rich_type in (("htmlFeedback.html", "html"), ("txtFeedback.txt", "text")):
        if name in files:
            try:
                feedback = _decode(files[name])
            except _Malformed as exc:
                raise _Malformed(f"{name}: {exc}") from None
            feedback_type = cast(FeedbackType, rich_type)
            break
    return _graded(
        score=fraction,
        max_score=1.0,
        fraction=fraction,
        feedback=feedback,
        feedback_type=feedback_type,
        tests=[],
        caps=caps,
    )


def _parse_prairielearn(data: dict[str, Any], caps: TextCaps) -> ParsedOutcome:
    gradable = data.get("gradable", True)
    if not isinstance(gradable, bool):
        raise _Malformed(f"gradable must be true or false, not {_type_name(gradable)}")
    message = _string(data, "message") or ""
    feedback = "\n\n".join(p for p in (message, _string(data, "output") or "") if p)
    if not gradable:
        return ParsedOutcome(
            status=GradeStatus.INVALID_SUBMISSION,
            reason=_cap_text(message, caps.feedback_bytes) or "the grader marked it not gradable",
            feedback=_cap_text(feedback, caps.feedback_bytes),
        )
    fraction = _number(data, "score", minimum=0, maximum=1)
    if fraction is None:
        raise _Malformed("score is missing")
    tests: list[TestResult] = []
    points_total: list[float] = []
    max_total: list[float] = []
    for i, item in enumerate(_list(data, "tests")):
        where = f"tests[{i}]"
        test = _object(item, where)
        points = _number(test, "points", where)
        max_points = _number(test, "max_points", where, minimum=0)
        if points is not None and max_points is not None and points > max_points:
            raise _Malformed(f"{where}.points ({points:g}) exceeds max_points ({max_points:g})")
        status: Literal["passed", "failed"] | None = None
        if points is not None and max_points is not None:
            status = "passed" if points >= max_points else "failed"
        parts = (_string(test, key, where) or "" for key in ("description", "message", "output"))
        tests.append(
            TestResult(
                name=_string(test, "name", where) or f"Test {i + 1}",
                score=points,
                max_score=max_points,
                status=status,
                output="\n".join(p for p in parts if p),
            )
        )
        if max_points is not None:
            points_total.append(points or 0.0)
            max_total.append(max_points)
    score, max_score = fraction, 1.0
    top_points = _number(data, "points")
    top_max = _number(data, "max_points", minimum=0)
    if top_points is not None and top_max is not None:
        score, max_score = top_points, top_max
    elif max_total:
        score, max_score = math.fsum(points_total), math.fsum(max_total)
    if score > max_score:
        raise _Malformed(f"points ({score:g}) exceed max_points ({max_score:g})")
    return _graded(
        score=score,
        max_score=max_score,
        fraction=fraction,
        feedback=feedback,
        feedback_type="text",
        tests=tests,
        caps=caps,
    )


def _graded(
    *,
    score: float,
    max_score: float | None,
    fraction: float | None,
    feedback: str,
    feedback_type: FeedbackType,
    tests: list[TestResult],
    caps: TextCaps,
) -> ParsedOutcome:
    """A `graded` outcome, with every text cut to its cap."""
    kept = [
        t.model_copy(
            update={
                "name": _cap_chars(t.name, caps.name_chars),
                "output": _cap_text(t.output, caps.test_output_bytes),
            }
        )
        for t in tests[: caps.max_tests]
    ]
    dropped = len(tests) - len(kept)
    if dropped:
        feedback = f"{feedback}\n…[{dropped} more tests not shown]".lstrip("\n")
    return ParsedOutcome(
        status=GradeStatus.GRADED,
        score=score,
        max_score=max_score,
        fraction=fraction,
        feedback=_cap_text(feedback, caps.feedback_bytes),
        feedback_type=feedback_type,
        tests=tuple(kept),
    )


# -- typed field access --------------------------------------------------------


def _field(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _number(
    obj: dict[str, Any],
    key: str,
    where: str = "",
    *,
    minimum: float | None = None,
    maximum: float | None = None,
) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    name = _field(where, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Malformed(f"{name} must be a number, not {_type_name(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise _Malformed(f"{name} must be a finite number, not {value}")
    if minimum is not None and number < minimum:
        raise _Malformed(f"{name} ({number:g}) must be at least {minimum:g}")
    if maximum is not None and number > maximum:
        raise _Malformed(f"{name} ({number:g}) must be at most {maximum:g}")
    return number


def _string(obj: dict[str, Any], key: str, where: str = "") -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Malformed(f"{_field(where, key)} must be a string, not {_type_name(value)}")
    return value


def _list(obj: dict[str, Any], key: str) -> list[Any]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Malformed(f"{key} must be an array, not {_type_name(value)}")
    return value


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Malformed(f"{where} must be an object, not {_type_name(value)}")
    return cast(dict[str, Any], value)


def _visibility(
    obj: dict[str, Any], key: str, default: _Visibility, where: str = ""
) -> _Visibility:
    value = _string(obj, key, where)
    if value is None:
        return default
    if value not in _VISIBILITIES:
        raise _Malformed(
            f"{_field(where, key)} must be one of {', '.join(_VISIBILITIES)}, not {value!r}"
        )
    return cast(_Visibility, value)


def _gradescope_format(value: str | None) -> FeedbackType:
    if value == "html":
        return "html"
    if value == "md":
        return "markdown"
    return "text"  # "text", "simple_format", "ansi", or absent


# -- caps ----------------------------------------------------------------------


def _cap_text(text: str, limit: int) -> str:
    """At most ``limit`` UTF-8 bytes of ``text``, then a marker saying how many were cut.

    Lone surrogates (from JSON ``\\ud800`` escapes) become ``?`` so the result
    always encodes.
    """
    raw = text.encode("utf-8", "replace")
    if len(raw) <= limit:
        return raw.decode("utf-8")
    kept = raw[:limit].decode("utf-8", "ignore")
    return f"{kept}\n…[truncated {len(raw) - len(kept.encode('utf-8'))} bytes]"


def _cap_chars(text: str, limit: int) -> str:
    text = text.encode("utf-8", "replace").decode("utf-8")
    return text if len(text) <= limit else text[: limit - 1] + "…"
