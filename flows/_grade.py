"""Grade one submission: the flow the platform, the UI and the CLI all run.

    build_shim → upload_submission → launch_grader → wait_submission_ready
               → wait_grader_finished → parse_results → publish_result

The flow is async so its seven tasks cost Prefect a fraction of a second; the
blocking core work runs in worker threads. A request whose attempt already has
a stored result returns that result without grading again, unless ``force``,
which grades a new attempt. Whatever happens after launch, the sandbox is
cleaned up.
"""

from __future__ import annotations

import tempfile
import time

import anyio.to_thread
from prefect import flow, get_run_logger

from gradeflow import GradeRequest, GradeResult, InvalidSubmission, Settings, StageTimings
from gradeflow._pipeline import (
    find_result,
    invalid_submission_result,
    make_job,
    next_attempt,
    resolve_assignment,
)
from gradeflow._runtime import launcher_for, open_store
from gradeflow._shim_build import ShimArtifact
from tasks import (
    build_shim,
    launch_grader,
    parse_results,
    publish_result,
    upload_submission,
    wait_grader_finished,
    wait_submission_ready,
)

__all__ = ["build_shim_flow", "grade_submission"]


@flow(name="build-shim", log_prints=False)
async def build_shim_flow(package_image: bool | None = None) -> ShimArtifact:
    """Build the static shim (cached by its sources) and its ``FROM scratch`` image.

    ``package_image``: None packages the image where a Docker engine answers,
    True requires one, False never packages.
    """
    settings = Settings()
    return await build_shim(
        str(settings.shim_source),
        str(settings.shim_cache_dir),
        settings.cargo,
        package_image,
    )


@flow(
    name="grade-submission",
    flow_run_name="grade-{request.assignment}-{request.submission}",
    log_prints=False,
    persist_result=False,
)
async def grade_submission(request: GradeRequest) -> GradeResult:
    """Grade one submission attempt and return its GradeResult (see module docstring)."""
    logger = get_run_logger()
    settings = Settings()
    assignment = resolve_assignment(request, settings)
    store = open_store(settings)
    existing = await anyio.to_thread.run_sync(find_result, store, request, request.attempt)
    if existing is not None and not request.force:
        logger.info("attempt %d already graded: %s", request.attempt, existing.status)
        return existing
    if existing is not None:
        attempt = await anyio.to_thread.run_sync(next_attempt, store, request)
        request = request.model_copy(update={"attempt": attempt})
        logger.info("force: grading as attempt %d", attempt)

    shim = await build_shim(
        str(settings.shim_source),
        str(settings.shim_cache_dir),
        settings.cargo,
        request.backend != "local" and settings.docker_shim_image,
    )
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gradeflow-staging-") as staging:
        prepared = await upload_submission(request, settings, staging)
        t1 = time.perf_counter()
        job = make_job(request, assignment, prepared, shim)
        handle = await launch_grader(request, settings, job)
        t2 = time.perf_counter()
        launcher = launcher_for(request.backend, settings)
        try:
            try:
                await wait_submission_ready(handle, settings, job)
            except InvalidSubmission as exc:
                logger.warning("invalid submission: %s", exc)
                timings = StageTimings(
                    upload_ms=_ms(t0, t1),
                    launch_ms=_ms(t1, t2),
                    total_ms=_ms(t0, time.perf_counter()),
                )
                rejected = invalid_submission_result(request, job, launcher, handle, exc, timings)
                return await publish_result(rejected, settings)
            t3 = time.perf_counter()
            output = await wait_grader_finished(handle, settings, job)
            t4 = time.perf_counter()
        finally:
            await anyio.to_thread.run_sync(launcher.cleanup, handle)
    timings = StageTimings(
        upload_ms=_ms(t0, t1), launch_ms=_ms(t1, t2), ready_ms=_ms(t2, t3), run_ms=_ms(t3, t4)
    )
    result = parse_results(request, settings, job, handle, output, timings)
    result = result.model_copy(
        update={
            "timings": result.timings.model_copy(update={"total_ms": _ms(t0, time.perf_counter())})
        }
    )
    result = await publish_result(result, settings)
    score = f"{result.score}/{result.max_score}" if result.score is not None else ""
    logger.info("%s/%s: %s %s", request.assignment, request.submission, result.status, score)
    return result


def _ms(start: float, end: float) -> int:
    return max(0, round((end - start) * 1000))
