"""Regrading an assignment, as plain functions over the store: list, select, plan, diff.

The Prefect flow (``flows/_regrade.py``) owns concurrency, child runs and
artifacts; everything it decides is decided here, so the rules can be tested
without a server:

* **What is stored.** Submissions live at
  ``submissions/{assignment}/{submission}/{sha256}.{ext}`` with a manifest
  beside them; a submission id whose bytes were uploaded twice counts once,
  by its newest upload.
* **What is selected.** The latest submission of each student (the
  ``uploaded_at`` of its manifest), or all of them.
* **What is already done.** A submission is done when one of its stored
  attempts was graded by the same grader (``GradeResult.grader.digest``) and
  the same shim (``shim_sha256``). That check reads the store, so a regrade
  that was cancelled or crashed and is run again grades only what is left.
* **Which attempt.** Everything else is graded as the next free attempt. The
  attempt and the identity make a deterministic idempotency key, so two
  planners racing for one submission create one Prefect run, and the store's
  conditional create keeps one result per attempt.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ._errors import ObjectNotFound
from ._models import GradeResult, GraderIdentity, GradeStatus
from .storage import ObjectStore, latest_result_key, results_prefix, submissions_prefix

__all__ = [
    "RegradeItem",
    "RegradeSummary",
    "ScoreChange",
    "StoredSubmission",
    "TokenBucket",
    "diff_scores",
    "idempotency_key",
    "latest_result",
    "latest_results",
    "list_submissions",
    "plan_regrade",
    "results_csv",
    "score_histogram",
    "select_submissions",
    "stored_results",
    "summary_markdown",
]

Change = Literal["up", "down", "same", "new", "error", "skipped"]


@dataclass(frozen=True, slots=True)
class StoredSubmission:
    """One submission as the store holds it (its newest upload)."""

    assignment: str
    submission: str
    key: str
    sha256: str
    student: str | None
    filename: str | None
    uploaded_at: datetime | None


@dataclass(frozen=True, slots=True)
class RegradeItem:
    """A selected submission and what the plan says about it.

    Attributes:
        previous: its latest result before this regrade (for the score diff).
        done: a stored result by the same grader and shim; None means grade it.
        attempt: the attempt to grade it as (meaningful when ``done`` is None).
    """

    submission: StoredSubmission
    previous: GradeResult | None
    done: GradeResult | None
    attempt: int


class ScoreChange(BaseModel):
    """Old and new score of one submission."""

    model_config = ConfigDict(frozen=True)

    submission: str
    student: str | None = None
    old_score: float | None = None
    new_score: float | None = None
    max_score: float | None = None
    status: str
    change: Change


class RegradeSummary(BaseModel):
    """What a regrade did; the flow's return value."""

    model_config = ConfigDict(frozen=True)

    assignment: str
    grader_digest: str
    shim_sha256: str
    selected: int = Field(description="Submissions selected (latest per student, or all).")
    skipped: int = Field(description="Already graded by this grader and shim.")
    graded: int = Field(description="Sent to grading by this run (errors included).")
    up: int = 0
    down: int = 0
    same: int = 0
    new: int = Field(0, description="Graded for the first time.")
    error: int = Field(0, description="Not `graded`, or the run failed.")
    fanned_out: bool = Field(False, description="Graded as child runs of the deployment.")
    changes: tuple[ScoreChange, ...] = ()


def list_submissions(store: ObjectStore, assignment: str) -> list[StoredSubmission]:
    """Every stored submission of ``assignment``, one per submission id, sorted by id.

    A submission whose manifest is missing or unreadable is still listed (it
    can be graded); it just has no student or upload time.
    """
    uploads: dict[str, list[StoredSubmission]] = {}
    keys = list(store.list_keys(submissions_prefix(assignment)))
    manifests = {key for key in keys if key.endswith(".manifest.json")}
    for key in keys:
        if key in manifests:
            continue
        parts = key.split("/")
        if len(parts) != 4:
            continue
        submission, name = parts[2], parts[3]
        sha256 = name.split(".", 1)[0]
        mkey = f"{submissions_prefix(assignment, submission)}{sha256}.manifest.json"
        manifest = _read_json(store, mkey) if mkey in manifests else {}
        uploads.setdefault(submission, []).append(
            StoredSubmission(
                assignment=assignment,
                submission=submission,
                key=key,
                sha256=sha256,
                student=_str_or_none(manifest.get("student")),
                filename=_str_or_none(manifest.get("filename")),
                uploaded_at=_parse_time(manifest.get("uploaded_at")),
            )
        )
    return [max(found, key=_upload_order) for _, found in sorted(uploads.items())]


def select_submissions(
    submissions: Iterable[StoredSubmission], *, all_submissions: bool = False
) -> list[StoredSubmission]:
    """The latest submission per student (students unknown count as their own), or all."""
    chosen = list(submissions)
    if all_submissions:
        return sorted(chosen, key=lambda s: s.submission)
    latest: dict[str, StoredSubmission] = {}
    for sub in chosen:
        who = sub.student if sub.student is not None else f"\0{sub.submission}"
        if who not in latest or _upload_order(sub) > _upload_order(latest[who]):
            latest[who] = sub
    return sorted(latest.values(), key=lambda s: s.submission)


def stored_results(store: ObjectStore, assignment: str, submission: str) -> list[GradeResult]:
    """Every stored attempt's result, oldest attempt first."""
    results = []
    for key in store.list_keys(results_prefix(assignment, submission)):
        if key.endswith("/result.json") and "/attempt-" in key:
            results.append(GradeResult.model_validate_json(store.get_bytes(key)))
    return sorted(results, key=lambda r: r.attempt)


def latest_result(store: ObjectStore, assignment: str, submission: str) -> GradeResult | None:
    """The result the ``latest.json`` pointer names, else the highest attempt."""
    pointer = _read_json(store, latest_result_key(assignment, submission))
    key = pointer.get("key")
    if isinstance(key, str):
        try:
            return GradeResult.model_validate_json(store.get_bytes(key))
        except ObjectNotFound:
            pass
    results = stored_results(store, assignment, submission)
    return results[-1] if results else None


def latest_results(store: ObjectStore, assignment: str) -> list[GradeResult]:
    """The latest result of every graded submission of ``assignment``, by submission id."""
    submissions = sorted(
        {
            key.split("/")[2]
            for key in store.list_keys(results_prefix(assignment))
            if key.count("/") >= 3
        }
    )
    found = (latest_result(store, assignment, sub) for sub in submissions)
    return [result for result in found if result is not None]


def plan_regrade(
    store: ObjectStore,
    submissions: Sequence[StoredSubmission],
    *,
    grader: GraderIdentity,
    shim_sha256: str,
    force: bool = False,
    since: datetime | None = None,
) -> list[RegradeItem]:
    """Decide per submission: skip (done by this grader and shim) or grade as which attempt.

    Args:
        force: grade again even when this grader and shim already did;
            results graded at or after ``since`` still count as done, so a
            forced regrade that is resumed does not grade twice.
        since: when the forced regrade began (ignored without ``force``).
    """
    plan = []
    for sub in submissions:
        results = stored_results(store, sub.assignment, sub.submission)
        previous = latest_result(store, sub.assignment, sub.submission) if results else None
        done = next(
            (
                r for r in reversed(results)
                if r.grader.digest == grader.digest and r.shim_sha256 == shim_sha256
                and r.submission_sha256 == sub.sha256
                and (not force or (since is not None and r.graded_at >= since))
            ),
            None,
        )  # fmt: skip
        attempt = max((r.attempt for r in results), default=0) + 1
        plan.append(RegradeItem(sub, previous, done, attempt))
    return plan


def idempotency_key(item: RegradeItem, grader: GraderIdentity, shim_sha256: str) -> str:
    """One Prefect run per (submission, content, grader, shim, attempt), however often planned."""
    sub = item.submission
    return (
        f"gradeflow-regrade/{sub.assignment}/{sub.submission}/{sub.sha256[:16]}"
        f"/{_digest_part(grader.digest)}/{shim_sha256[:16]}/a{item.attempt}"
    )


def diff_scores(item: RegradeItem, new: GradeResult | None) -> ScoreChange:
    """Classify one submission: up, down, same, new (no earlier score) or error."""
    sub = item.submission
    old = item.previous
    old_score = old.score if old is not None and old.status is GradeStatus.GRADED else None
    if new is None:
        return ScoreChange(submission=sub.submission, student=sub.student, old_score=old_score,
                           status="failed", change="error")  # fmt: skip
    change: Change
    if new.status is not GradeStatus.GRADED or new.score is None:
        change = "error"
    elif old_score is None:
        change = "new"
    elif math.isclose(new.score, old_score, abs_tol=1e-9):
        change = "same"
    else:
        change = "up" if new.score > old_score else "down"
    return ScoreChange(
        submission=sub.submission, student=sub.student, old_score=old_score,
        new_score=new.score, max_score=new.max_score, status=str(new.status), change=change,
    )  # fmt: skip


def score_histogram(results: Iterable[GradeResult], bins: int = 10) -> list[int]:
    """Counts of graded results by fraction of the maximum, in ``bins`` equal bins (1.0 last)."""
    counts = [0] * bins
    for result in results:
        fraction = _fraction(result)
        if fraction is not None:
            counts[min(bins - 1, int(fraction * bins))] += 1
    return counts


def summary_markdown(summary: RegradeSummary, results: Sequence[GradeResult]) -> str:
    """The regrade's closing report: counts and a histogram of the new scores."""
    lines = [
        f"# Regrade of `{summary.assignment}`",
        "",
        f"grader `{summary.grader_digest[:19]}` · shim `{summary.shim_sha256[:12]}`"
        + (" · fanned out to the `grade-submission` deployment" if summary.fanned_out else ""),
        "",
        "| selected | skipped | graded | up | down | same | new | error |",
        "|---|---|---|---|---|---|---|---|",
        f"| {summary.selected} | {summary.skipped} | {summary.graded} | {summary.up} "
        f"| {summary.down} | {summary.same} | {summary.new} | {summary.error} |",
        "",
        "## New scores",
        "",
    ]
    counts = score_histogram(results)
    if not any(counts):
        return "\n".join([*lines, "No graded scores in this run."])
    width = max(counts)
    lines += ["```"]
    for index, count in enumerate(counts):
        low, high = index * 10, (index + 1) * 10
        label = f"{low:3d}-{high:3d}%"
        lines.append(f"{label} | {'█' * round(30 * count / width):30} {count}")
    lines += ["```"]
    return "\n".join(lines)


def results_csv(results: Iterable[GradeResult]) -> str:
    """The latest results as CSV for a gradebook import."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["assignment", "submission", "student", "attempt", "status", "score",
                     "max_score", "graded_at", "grader_digest"])  # fmt: skip
    for r in results:
        writer.writerow([r.assignment, r.submission, r.student or "", r.attempt, str(r.status),
                         "" if r.score is None else f"{r.score:g}",
                         "" if r.max_score is None else f"{r.max_score:g}",
                         r.graded_at.isoformat(), r.grader.digest])  # fmt: skip
    return buffer.getvalue()


class TokenBucket:
    """Launch pacing: ``rate`` launches per second on average, bursts up to ``burst``.

    Why here and not Prefect's ``rate_limit``: that needs a named global
    concurrency limit on the server, created and sized out of band, and a
    regrade must work against the ephemeral API too. This bucket paces one
    regrade's ``RunTask``/launch calls; operators who run several regrades at
    once against one AWS account should also set the deployment's
    concurrency limit (see deployments/prefect.yaml).

    The bucket is a pure calculation over the caller's clock: ``reserve``
    takes a token and says how long to wait before using it.
    """

    def __init__(self, rate: float, burst: int = 1) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate must be > 0 and burst >= 1 (got {rate}, {burst})")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp: float | None = None

    def reserve(self, now: float) -> float:
        """Take one token at ``now``; returns the seconds to wait before launching."""
        if self._stamp is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


def _fraction(result: GradeResult) -> float | None:
    if result.status is not GradeStatus.GRADED:
        return None
    if result.fraction is not None:
        return result.fraction
    if result.score is not None and result.max_score:
        return max(0.0, min(1.0, result.score / result.max_score))
    return None


def _digest_part(digest: str) -> str:
    return digest.split(":", 1)[-1][:16]


def _upload_order(sub: StoredSubmission) -> tuple[str, str]:
    return (sub.uploaded_at.isoformat() if sub.uploaded_at else "", sub.key)


def _read_json(store: ObjectStore, key: str) -> dict[str, object]:
    try:
        value = json.loads(store.get_bytes(key))
    except (ObjectNotFound, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
