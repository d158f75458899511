"""The grading steps as Prefect tasks: each gets its logger, calls the core, returns.

Retries are declared where a retry can help (storage and launch hiccups);
waits are bounded by the assignment's limits; nothing here retries a
student's bad submission.
"""

from __future__ import annotations

from pathlib import Path

import anyio.to_thread
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from gradeflow import GradeRequest, GradeResult, Settings, StageTimings
from gradeflow._pipeline import (
    PreparedSubmission,
    prepare_submission,
    result_from_output,
)
from gradeflow._pipeline import (
    publish_result as publish_result_core,
)
from gradeflow._runtime import launcher_for, open_store
from gradeflow.launchers import GradingJob, LaunchHandle, RunOutput

from ._report import announce_result
from ._retry import retry_if_transient

__all__ = [
    "launch_grader",
    "parse_results",
    "publish_result",
    "upload_submission",
    "wait_grader_finished",
    "wait_submission_ready",
]


@task(
    name="upload_submission",
    task_run_name="upload-{request.submission}",
    retries=3,
    retry_delay_seconds=[0.5, 2, 5],
    retry_condition_fn=retry_if_transient,
    timeout_seconds=600,
    cache_policy=NO_CACHE,
    persist_result=False,
)
async def upload_submission(
    request: GradeRequest, settings: Settings, staging: str
) -> PreparedSubmission:
    """Store the submission content-addressed and keep a verified copy for the co-process."""
    prepared = await anyio.to_thread.run_sync(
        lambda: prepare_submission(request, open_store(settings), Path(staging))
    )
    get_run_logger().info(
        "submission %s: %s (%d bytes, sha256 %s)",
        "uploaded" if prepared.uploaded else "already stored",
        prepared.key,
        prepared.size,
        prepared.sha256[:16],
    )
    return prepared


@task(
    name="launch_grader",
    task_run_name="launch-{request.run_key}",
    retries=2,
    retry_delay_seconds=[1, 5],
    retry_condition_fn=retry_if_transient,
    timeout_seconds=300,
    cache_policy=NO_CACHE,
    persist_result=False,
)
async def launch_grader(request: GradeRequest, settings: Settings, job: GradingJob) -> LaunchHandle:
    """Start the sandbox; a retry of the same attempt reattaches to it."""
    launcher = launcher_for(request.backend, settings)
    handle = await anyio.to_thread.run_sync(launcher.launch, job)
    get_run_logger().info(
        "%s %s run %s", "reattached to" if handle.reattached else "launched",
        request.backend, handle.run_id,
    )  # fmt: skip
    return handle


@task(
    name="wait_submission_ready",
    task_run_name="ready-{handle.run_key}",
    retries=1,
    retry_condition_fn=retry_if_transient,
    cache_policy=NO_CACHE,
    persist_result=False,
)
async def wait_submission_ready(handle: LaunchHandle, settings: Settings, job: GradingJob) -> None:
    """Deliver the verified submission and wait until the grader has started.

    A failure here is infrastructure's, except an invalid archive, which the
    flow turns into an ``invalid_submission`` result.
    """
    launcher = launcher_for(handle.backend, settings)
    await anyio.to_thread.run_sync(
        lambda: launcher.make_ready(handle, job, timeout_s=settings.ready_timeout_s)
    )


@task(
    name="wait_grader_finished",
    task_run_name="wait-{handle.run_key}",
    cache_policy=NO_CACHE,
    persist_result=False,
)
async def wait_grader_finished(
    handle: LaunchHandle, settings: Settings, job: GradingJob
) -> RunOutput:
    """Wait for the grader (its timeout plus grace; then it is stopped) and collect its output."""
    limits = job.assignment.limits
    bound = limits.timeout_s + limits.kill_grace_s + settings.finish_grace_s
    launcher = launcher_for(handle.backend, settings)
    await anyio.to_thread.run_sync(lambda: launcher.wait(handle, timeout_s=bound))
    output = await anyio.to_thread.run_sync(launcher.collect, handle)
    envelope = output.envelope
    if envelope is not None:
        get_run_logger().info(
            "grader %s (exit %s, signal %s) in %d ms, max rss %d KiB",
            envelope.status, envelope.exit_code, envelope.signal, envelope.wall_ms,
            envelope.max_rss_kb,
        )  # fmt: skip
    return output


@task(
    name="parse_results",
    task_run_name="parse-{handle.run_key}",
    cache_policy=NO_CACHE,
    persist_result=False,
)
def parse_results(
    request: GradeRequest,
    settings: Settings,
    job: GradingJob,
    handle: LaunchHandle,
    output: RunOutput,
    timings: StageTimings,
) -> GradeResult:
    """The shim's envelope and the grader's results file become one GradeResult."""
    launcher = launcher_for(handle.backend, settings)
    return result_from_output(request, job, launcher, handle, output, timings)


@task(
    name="publish_result",
    task_run_name="publish-{result.assignment}-{result.submission}",
    retries=3,
    retry_delay_seconds=[0.5, 2, 5],
    retry_condition_fn=retry_if_transient,
    cache_policy=NO_CACHE,
    persist_result=False,
)
async def publish_result(result: GradeResult, settings: Settings) -> GradeResult:
    """Store the result (never replacing another), then show it and announce it."""
    stored, key = await anyio.to_thread.run_sync(
        lambda: publish_result_core(open_store(settings), result)
    )
    await announce_result(stored, key)
    return stored
