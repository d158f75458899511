"""What people see of a result: a markdown artifact and a Prefect event."""

from __future__ import annotations

import re

from prefect.artifacts import acreate_markdown_artifact
from prefect.events import emit_event

from gradeflow import GradeResult

__all__ = ["announce_result", "result_markdown"]

GRADED_EVENT = "gradeflow.submission.graded"


async def announce_result(result: GradeResult, key: str) -> None:
    """Attach the result to the flow run as an artifact and emit the graded event."""
    await acreate_markdown_artifact(
        markdown=result_markdown(result, key),
        key=_artifact_key(f"grade-{result.assignment}-{result.submission}"),
        description=f"{result.assignment}/{result.submission}: {result.status}",
    )
    emit_event(
        event=GRADED_EVENT,
        resource={
            "prefect.resource.id": f"gradeflow.submission.{result.assignment}.{result.submission}",
            "prefect.resource.name": f"{result.assignment}/{result.submission}",
            "gradeflow.status": str(result.status),
        },
        payload={
            "assignment": result.assignment,
            "submission": result.submission,
            "student": result.student,
            "attempt": result.attempt,
            "status": str(result.status),
            "score": result.score,
            "max_score": result.max_score,
            "result_key": key,
        },
    )


def result_markdown(result: GradeResult, key: str) -> str:
    score = (
        f"{result.score:g} / {result.max_score:g}"
        if result.score is not None and result.max_score is not None
        else "—"
    )
    lines = [
        f"# {result.assignment} / {result.submission} (attempt {result.attempt})",
        "",
        f"**Status:** `{result.status}`  ",
        f"**Score:** {score}  ",
        f"**Backend:** {result.backend} (`{result.run_id}`)  ",
        f"**Stored at:** `{key}`",
    ]
    if result.reason:
        lines += ["", f"**Reason:** {_cell(result.reason)}"]
    if result.tests:
        lines += ["", "## Tests", "", "| test | status | score | visibility |", "|---|---|---|---|"]
        for test in result.tests:
            points = (
                f"{test.score:g} / {test.max_score:g}"
                if test.score is not None and test.max_score is not None
                else "—"
            )
            lines.append(
                f"| {_cell(test.name)} | {test.status or '—'} | {points} | {test.visibility} |"
            )
    timings = result.timings
    lines += [
        "",
        "## Timings (ms)",
        "",
        "| upload | launch | ready | run | parse | total |",
        "|---|---|---|---|---|---|",
        f"| {timings.upload_ms} | {timings.launch_ms} | {timings.ready_ms} | {timings.run_ms} "
        f"| {timings.parse_ms} | {timings.total_ms} |",
    ]
    if result.feedback:
        fence = "~~~~"
        lines += ["", "## Feedback", "", fence, result.feedback[:20000], fence]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:300]


def _artifact_key(raw: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-")[:120]
