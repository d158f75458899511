"""The steps of one grading run, as plain functions over the core.

Prefect tasks (``tasks/``) wrap each step with retries, timeouts, logs and
artifacts; :func:`grade` composes them without Prefect for tests and benches.
Nothing here retries: a step either succeeds, raises a ``GradeflowError`` that
says whether retrying can help, or (for the student's own faults) yields a
result with the right status.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ._archives import detect_kind
from ._assignment import Assignment, load_assignment
from ._errors import ConfigurationError, InvalidSubmission, ObjectConflict
from ._models import GradeRequest, GradeResult, GradeStatus, ResourceUsage, StageTimings
from ._results import interpret
from ._settings import Settings
from ._shim_build import ShimArtifact, file_sha256
from .launchers import GradingJob, Launcher, LaunchHandle, RunOutput
from .storage import ObjectStore
from .storage._keys import (
    latest_result_key,
    manifest_key,
    result_key,
    results_prefix,
    submission_key,
)

__all__ = [
    "PreparedSubmission",
    "find_result",
    "grade",
    "invalid_submission_result",
    "make_job",
    "next_attempt",
    "prepare_submission",
    "publish_result",
    "resolve_assignment",
    "result_from_output",
]

_EXTENSIONS = {"zip": "zip", "tar": "tar", "tar.gz": "tar.gz"}


@dataclass(frozen=True, slots=True)
class PreparedSubmission:
    """A submission safely in the store, with a verified copy on the flow host."""

    key: str
    sha256: str
    size: int
    filename: str
    local_path: Path
    uploaded: bool
    kind: str


def resolve_assignment(request: GradeRequest, settings: Settings) -> Assignment:
    directory = Path(request.assignment_dir or settings.assignments_root / request.assignment)
    assignment = load_assignment(directory)
    if assignment.id != request.assignment:
        raise ConfigurationError(
            f"{directory}: assignment.toml declares id {assignment.id!r}, "
            f"the request names {request.assignment!r}"
        )
    return assignment


def prepare_submission(
    request: GradeRequest, store: ObjectStore, staging: Path
) -> PreparedSubmission:
    """Upload a local submission (content-addressed, conditional), or fetch a stored one.

    Either way the flow host ends with a copy whose SHA-256 was verified
    against the store's record.
    """
    staging.mkdir(parents=True, exist_ok=True)
    if request.submission_path is not None:
        source = Path(request.submission_path)
        if not source.is_file():
            raise ConfigurationError(f"submission file not found: {source}")
        sha256 = file_sha256(source)
        kind = detect_kind(source)
        ext = _EXTENSIONS.get(kind) or _safe_ext(source.name)
        key = submission_key(request.assignment, request.submission, sha256, ext)
        stored = store.put_file(key, source, sha256=sha256)
        manifest = {
            "filename": source.name,
            "student": request.student,
            "sha256": sha256,
            "size": stored.size,
            "kind": kind,
            "uploaded_at": datetime.now(UTC).isoformat(),
        }
        mkey = manifest_key(request.assignment, request.submission, sha256)
        if not store.exists(mkey):
            # A concurrent upload of the same bytes may have written its manifest first.
            with contextlib.suppress(ObjectConflict):
                store.put_bytes(mkey, json.dumps(manifest, indent=2).encode())
        local = staging / f"{sha256}.{ext}"
        store.get_file(key, local, sha256=sha256)
        return PreparedSubmission(
            key, sha256, stored.size, source.name, local, stored.created, kind
        )

    key = str(request.submission_key)
    expected_prefix = f"submissions/{request.assignment}/{request.submission}/"
    if not key.startswith(expected_prefix):
        raise ConfigurationError(f"submission_key {key!r} is not under {expected_prefix}")
    head = store.head(key)
    if head is None:
        raise ConfigurationError(f"no stored submission at {key}")
    filename = _stored_filename(store, request, head.sha256) or Path(key).name
    local = staging / Path(key).name
    store.get_file(key, local, sha256=head.sha256)
    return PreparedSubmission(
        key, head.sha256, head.size, filename, local, False, detect_kind(local)
    )


def _stored_filename(store: ObjectStore, request: GradeRequest, sha256: str) -> str | None:
    try:
        raw = store.get_bytes(manifest_key(request.assignment, request.submission, sha256))
        name = json.loads(raw).get("filename")
    except Exception:
        return None
    return name if isinstance(name, str) else None


def _safe_ext(name: str) -> str:
    suffix = Path(name).suffix.lstrip(".").lower()
    return suffix if suffix.isalnum() and 0 < len(suffix) <= 10 else "bin"


def find_result(store: ObjectStore, request: GradeRequest, attempt: int) -> GradeResult | None:
    key = result_key(request.assignment, request.submission, attempt)
    if not store.exists(key):
        return None
    return GradeResult.model_validate_json(store.get_bytes(key))


def next_attempt(store: ObjectStore, request: GradeRequest) -> int:
    """One past the highest attempt stored for this submission."""
    highest = 0
    for key in store.list_keys(results_prefix(request.assignment, request.submission)):
        part = key.rsplit("/", 2)[-2] if key.count("/") >= 2 else ""
        if part.startswith("attempt-") and part[8:].isdigit():
            highest = max(highest, int(part[8:]))
    return highest + 1


def make_job(
    request: GradeRequest,
    assignment: Assignment,
    prepared: PreparedSubmission,
    shim: ShimArtifact,
    *,
    submission_url: str | None = None,
) -> GradingJob:
    return GradingJob(
        run_key=request.run_key,
        assignment=assignment,
        submission_id=request.submission,
        attempt=request.attempt,
        student=request.student,
        submission_file=prepared.local_path,
        submission_filename=(
            assignment.submission_filename
            if prepared.kind == "file" and assignment.submission_filename
            else prepared.filename
        ),
        submission_sha256=prepared.sha256,
        shim=shim,
        submission_url=submission_url,
        labels={
            "org.gradeflow.assignment": request.assignment,
            "org.gradeflow.submission": request.submission,
            "org.gradeflow.attempt": str(request.attempt),
        },
    )


def result_from_output(
    request: GradeRequest,
    job: GradingJob,
    launcher: Launcher,
    handle: LaunchHandle,
    output: RunOutput,
    timings: StageTimings,
) -> GradeResult:
    """Interpret the sandbox's output into the final GradeResult."""
    started = time.perf_counter()
    outcome = interpret(
        output.envelope,
        output.results_files,
        fmt=job.assignment.results_format,
        memory_limit_mb=job.assignment.limits.memory_mb,
    )
    parse_ms = _ms_since(started)
    envelope = output.envelope
    reason = outcome.reason
    if output.notes and outcome.status is not GradeStatus.GRADED:
        reason = "; ".join(filter(None, [reason, *output.notes]))
    resources = (
        ResourceUsage(
            wall_ms=envelope.wall_ms,
            cpu_user_ms=envelope.cpu_user_ms,
            cpu_sys_ms=envelope.cpu_sys_ms,
            max_rss_kb=envelope.max_rss_kb,
            stdout_bytes=envelope.stdout_bytes,
            stderr_bytes=envelope.stderr_bytes,
            output_truncated=envelope.output_truncated,
            oom_killed=envelope.oom_killed,
        )
        if envelope
        else ResourceUsage()
    )
    return GradeResult(
        assignment=request.assignment,
        submission=request.submission,
        student=request.student,
        attempt=request.attempt,
        status=outcome.status,
        reason=reason,
        score=outcome.score,
        max_score=outcome.max_score,
        fraction=outcome.fraction,
        feedback=outcome.feedback,
        feedback_type=outcome.feedback_type,
        tests=outcome.tests,
        visibility=outcome.visibility,
        stdout_visibility=outcome.stdout_visibility,
        submission_sha256=job.submission_sha256,
        grader=launcher.grader_identity(job.assignment),
        shim_sha256=job.shim.sha256,
        timings=timings.model_copy(update={"parse_ms": parse_ms}),
        resources=resources,
        stdout_tail=output.stdout_tail,
        stderr_tail=output.stderr_tail,
        backend=launcher.name,
        run_id=handle.run_id,
    )


def invalid_submission_result(
    request: GradeRequest,
    job: GradingJob,
    launcher: Launcher,
    handle: LaunchHandle,
    error: InvalidSubmission,
    timings: StageTimings,
) -> GradeResult:
    return GradeResult(
        assignment=request.assignment,
        submission=request.submission,
        student=request.student,
        attempt=request.attempt,
        status=GradeStatus.INVALID_SUBMISSION,
        reason=str(error),
        feedback=f"Your submission could not be accepted: {error}",
        submission_sha256=job.submission_sha256,
        grader=launcher.grader_identity(job.assignment),
        shim_sha256=job.shim.sha256,
        timings=timings,
        backend=launcher.name,
        run_id=handle.run_id,
    )


def publish_result(store: ObjectStore, result: GradeResult) -> tuple[GradeResult, str]:
    """Store the result under its attempt, never replacing a different one.

    Returns:
        The stored result (an earlier identical attempt's, if one won a race)
        and its key.
    """
    key = result_key(result.assignment, result.submission, result.attempt)
    try:
        store.put_bytes(key, result.model_dump_json(indent=2).encode())
    except ObjectConflict:
        return GradeResult.model_validate_json(store.get_bytes(key)), key
    pointer = json.dumps({"attempt": result.attempt, "key": key}).encode()
    store.put_bytes(latest_result_key(result.assignment, result.submission), pointer,
                    overwrite=True)  # fmt: skip
    return result, key


def grade(
    request: GradeRequest,
    *,
    settings: Settings,
    store: ObjectStore,
    launcher: Launcher,
    shim: ShimArtifact,
    clock: Callable[[], float] = time.perf_counter,
) -> GradeResult:
    """Run every step in sequence without Prefect (tests, benches, the agent's peer)."""
    assignment = resolve_assignment(request, settings)
    existing = find_result(store, request, request.attempt)
    if existing is not None and not request.force:
        return existing
    if existing is not None:
        request = request.model_copy(update={"attempt": next_attempt(store, request)})
    t0 = clock()
    with tempfile.TemporaryDirectory(prefix="gradeflow-staging-") as staging:
        prepared = prepare_submission(request, store, Path(staging))
        t1 = clock()
        job = make_job(request, assignment, prepared, shim)
        handle = launcher.launch(job)
        t2 = clock()
        try:
            try:
                launcher.make_ready(handle, job, timeout_s=settings.ready_timeout_s)
            except InvalidSubmission as exc:
                timings = StageTimings(upload_ms=_ms(t0, t1), launch_ms=_ms(t1, t2),
                                       total_ms=_ms(t0, clock()))  # fmt: skip
                result = invalid_submission_result(request, job, launcher, handle, exc, timings)
                return publish_result(store, result)[0]
            t3 = clock()
            limits = assignment.limits
            launcher.wait(
                handle, timeout_s=limits.timeout_s + limits.kill_grace_s + settings.finish_grace_s
            )
            t4 = clock()
            output = launcher.collect(handle)
        finally:
            launcher.cleanup(handle)
    timings = StageTimings(
        upload_ms=_ms(t0, t1), launch_ms=_ms(t1, t2), ready_ms=_ms(t2, t3), run_ms=_ms(t3, t4)
    )
    result = result_from_output(request, job, launcher, handle, output, timings)
    result = result.model_copy(
        update={"timings": result.timings.model_copy(update={"total_ms": _ms(t0, clock())})}
    )
    return publish_result(store, result)[0]


def _ms(start: float, end: float) -> int:
    return max(0, round((end - start) * 1000))


def _ms_since(start: float) -> int:
    return _ms(start, time.perf_counter())
