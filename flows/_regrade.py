"""Regrade an assignment: every stored submission, once per grader and shim.

    build_shim → list + select submissions → plan (skip what this grader and
    shim already graded) → grade the rest, paced and bounded → report

Run it nightly from the ``regrade-assignment`` deployment's schedule, ad hoc
from the UI, or with ``gradeflow regrade ASSIGNMENT``.

**Resumable.** The plan is read from the store each time, so a regrade that
was cancelled or crashed and is started again grades only what is left; every
submission it grades gets the next free attempt number, and the store keeps
one result per attempt, so nothing is graded twice and nothing is lost.

**Two ways to grade.** Small regrades call the grade flow in this process as
subflows (cheap: a few hundred ms of Prefect per submission). Large ones, or
``fan_out=True``, create child runs of the ``grade-submission`` deployment
with an idempotency key per (submission, grader, shim, attempt), so the work
spreads over the work pool's workers and one flow never holds thousands of
task runs (a self-hosted server struggles near 2,000 mapped tasks in one
flow). A child that was cancelled along with an earlier regrade is
rescheduled rather than duplicated.

**Paced.** ``concurrency`` bounds the grades in flight; ``launches_per_second``
paces launches through a token bucket (ECS RunTask is throttled per account).

**Reported.** A progress artifact while it runs; at the end a table of score
changes (old → new) and a markdown summary with a histogram of the scores.
"""

from __future__ import annotations

import asyncio
import contextvars
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import anyio.to_thread
from prefect import flow, get_client, get_run_logger
from prefect.artifacts import (
    acreate_markdown_artifact,
    acreate_progress_artifact,
    acreate_table_artifact,
    aupdate_progress_artifact,
)
from prefect.context import FlowRunContext
from prefect.deployments import arun_deployment
from prefect.exceptions import ObjectNotFound
from prefect.states import Scheduled

from gradeflow import ConfigurationError, GradeRequest, GradeResult, Settings, load_assignment
from gradeflow._models import Backend, Identifier
from gradeflow._regrade import (
    RegradeItem,
    RegradeSummary,
    ScoreChange,
    TokenBucket,
    diff_scores,
    idempotency_key,
    list_submissions,
    plan_regrade,
    select_submissions,
    summary_markdown,
)
from gradeflow._runtime import launcher_for, open_store
from gradeflow.storage import result_key
from tasks import build_shim

from ._grade import grade_submission

__all__ = ["GRADE_DEPLOYMENT", "ProgressHook", "progress_hook", "regrade_assignment"]

GRADE_DEPLOYMENT = "grade-submission/grade-submission"
"""The deployment child runs are created from (flow name / deployment name)."""

ProgressHook = Callable[[int, int, str], None]
progress_hook: contextvars.ContextVar[ProgressHook | None] = contextvars.ContextVar(
    "gradeflow_regrade_progress", default=None
)
"""Set by the CLI to draw a progress bar: called with (done, total, submission id)."""


@flow(
    name="regrade-assignment",
    flow_run_name="regrade-{assignment}",
    log_prints=False,
    persist_result=False,
)
async def regrade_assignment(
    assignment: Identifier,
    backend: Backend = "local",
    all_submissions: bool = False,
    force: bool = False,
    concurrency: int = 4,
    launches_per_second: float = 2.0,
    fan_out: bool | None = None,
    fan_out_threshold: int = 50,
    assignment_dir: str | None = None,
) -> RegradeSummary:
    """Regrade ``assignment`` and report what changed (see the module docstring).

    Args:
        assignment: the assignment id.
        backend: where the graders run.
        all_submissions: every submission, not only each student's latest.
        force: grade even what this grader and shim already graded.
        concurrency: grades in flight at once (1-64).
        launches_per_second: average launch rate (bursts up to ``concurrency``).
        fan_out: True: child runs of the grade-submission deployment; False:
            subflows in this process; None: fan out when at least
            ``fan_out_threshold`` submissions are to be graded and the
            deployment exists.
        fan_out_threshold: see ``fan_out``.
        assignment_dir: the assignment directory (default: the configured root / id).
    """
    if not 1 <= concurrency <= 64 or launches_per_second <= 0:
        raise ConfigurationError("concurrency must be 1..64 and launches_per_second > 0")
    logger = get_run_logger()
    settings = Settings()
    spec = load_assignment(Path(assignment_dir or settings.assignments_root / assignment))
    if spec.id != assignment:
        raise ConfigurationError(f"{spec.root}: declares id {spec.id!r}, not {assignment!r}")
    store = open_store(settings)
    shim = await build_shim(
        str(settings.shim_source),
        str(settings.shim_cache_dir),
        settings.cargo,
        backend != "local" and settings.docker_shim_image,
    )
    grader = launcher_for(backend, settings).grader_identity(spec)
    since = _run_started()

    def plan() -> list[RegradeItem]:
        stored = list_submissions(store, assignment)
        chosen = select_submissions(stored, all_submissions=all_submissions)
        return plan_regrade(store, chosen, grader=grader, shim_sha256=shim.sha256,
                            force=force, since=since)  # fmt: skip

    items = await anyio.to_thread.run_sync(plan)
    todo = [item for item in items if item.done is None]
    children = await _should_fan_out(fan_out, len(todo), fan_out_threshold)
    logger.info(
        "%s: %d selected, %d already graded by grader %s and shim %s, %d to grade%s",
        assignment, len(items), len(items) - len(todo), grader.digest[:19], shim.sha256[:12],
        len(todo), " as child runs of " + GRADE_DEPLOYMENT if children else "",
    )  # fmt: skip

    progress = _Progress(len(todo), _artifact_key(f"regrade-{assignment}-progress"))
    await progress.start()
    bucket = TokenBucket(launches_per_second, burst=concurrency)
    gate = asyncio.Semaphore(concurrency)

    async def grade_one(item: RegradeItem) -> GradeResult | None:
        request = GradeRequest(
            assignment=assignment,
            submission=item.submission.submission,
            student=item.submission.student,
            submission_key=item.submission.key,
            assignment_dir=assignment_dir,
            backend=backend,
            attempt=item.attempt,
        )
        async with gate:
            await asyncio.sleep(bucket.reserve(time.monotonic()))
            try:
                if children:
                    key = idempotency_key(item, grader, shim.sha256)
                    return await _grade_as_child(request, key, store_reader(request))
                return await grade_submission(request=request)
            except Exception as exc:  # one submission's failure must not stop the others
                logger.error("%s/%s failed: %s", assignment, request.submission, exc)
                return None
            finally:
                await progress.advance(request.submission)

    def store_reader(request: GradeRequest) -> Callable[[], GradeResult | None]:
        def read() -> GradeResult | None:
            key = result_key(request.assignment, request.submission, request.attempt)
            if not store.exists(key):
                return None
            return GradeResult.model_validate_json(store.get_bytes(key))

        return read

    new_results = await asyncio.gather(*(grade_one(item) for item in todo))
    await progress.finish()

    changes: list[ScoreChange] = []
    current: list[GradeResult] = []
    for item, result in zip(todo, new_results, strict=True):
        changes.append(diff_scores(item, result))
        if result is not None:
            current.append(result)
    for item in items:
        if item.done is not None:
            current.append(item.done)
            changes.append(_skipped(item))
    changes.sort(key=lambda c: c.submission)
    counts = {kind: sum(c.change == kind for c in changes) for kind in
              ("up", "down", "same", "new", "error")}  # fmt: skip
    summary = RegradeSummary(
        assignment=assignment, grader_digest=grader.digest, shim_sha256=shim.sha256,
        selected=len(items), skipped=len(items) - len(todo), graded=len(todo),
        fanned_out=children, changes=tuple(changes), **counts,
    )  # fmt: skip
    await _report(summary, current)
    logger.info(
        "%s regraded: %d up, %d down, %d same, %d new, %d error, %d skipped",
        assignment, summary.up, summary.down, summary.same, summary.new, summary.error,
        summary.skipped,
    )  # fmt: skip
    return summary


async def _should_fan_out(fan_out: bool | None, count: int, threshold: int) -> bool:
    if fan_out is not None:
        return fan_out
    if count < threshold:
        return False
    try:
        async with get_client() as client:
            await client.read_deployment_by_name(GRADE_DEPLOYMENT)
    except ObjectNotFound:
        get_run_logger().warning(
            "%d submissions to grade but no %s deployment: grading in this process",
            count, GRADE_DEPLOYMENT,
        )  # fmt: skip
        return False
    return True


async def _grade_as_child(
    request: GradeRequest, key: str, read_result: Callable[[], GradeResult | None]
) -> GradeResult | None:
    """One child run of the grade deployment, created once per key, run to the end.

    A child found cancelled, crashed or failed (an earlier regrade was
    cancelled with it in flight) is scheduled again: the same run grades the
    same attempt, so the work is neither lost nor duplicated.
    """
    run = await arun_deployment(
        GRADE_DEPLOYMENT,
        parameters={"request": request.model_dump(mode="json", exclude_none=True)},
        idempotency_key=key,
        timeout=0,
    )
    async with get_client() as client:
        rescheduled = False
        while True:
            run = await client.read_flow_run(run.id)
            state = run.state
            if state is not None and state.is_completed():
                break
            if state is not None and state.is_final():
                if rescheduled:
                    break
                get_run_logger().info("child %s was %s: scheduling it again", run.name, state.name)
                await client.set_flow_run_state(run.id, Scheduled(), force=True)
                rescheduled = True
            await asyncio.sleep(1.0)
    return await anyio.to_thread.run_sync(read_result)


def _skipped(item: RegradeItem) -> ScoreChange:
    done = item.done
    assert done is not None
    return ScoreChange(
        submission=item.submission.submission, student=item.submission.student,
        old_score=done.score, new_score=done.score, max_score=done.max_score,
        status=str(done.status), change="skipped",
    )  # fmt: skip


async def _report(summary: RegradeSummary, current: list[GradeResult]) -> None:
    rows: list[dict[str, Any]] = [
        {
            "submission": c.submission,
            "student": c.student or "",
            "old": "" if c.old_score is None else f"{c.old_score:g}",
            "new": "" if c.new_score is None else f"{c.new_score:g}",
            "max": "" if c.max_score is None else f"{c.max_score:g}",
            "status": c.status,
            "change": c.change,
        }
        for c in summary.changes
    ]
    await acreate_table_artifact(
        table=rows,
        key=_artifact_key(f"regrade-{summary.assignment}-changes"),
        description=(
            f"{summary.assignment}: {summary.up} up, {summary.down} down, {summary.same} same, "
            f"{summary.new} new, {summary.error} error"
        ),
    )
    await acreate_markdown_artifact(
        markdown=summary_markdown(summary, current),
        key=_artifact_key(f"regrade-{summary.assignment}-summary"),
        description=f"Regrade of {summary.assignment}",
    )


class _Progress:
    """The progress artifact (updated at most twice a second) and the CLI's hook."""

    def __init__(self, total: int, key: str) -> None:
        self.total = total
        self.key = key
        self.done = 0
        self._artifact: UUID | None = None
        self._last = 0.0
        self._hook = progress_hook.get()

    async def start(self) -> None:
        self._artifact = await acreate_progress_artifact(
            progress=0.0 if self.total else 100.0, key=self.key,
            description=f"{self.total} submissions to grade",
        )  # fmt: skip
        if self._hook:
            self._hook(0, self.total, "")

    async def advance(self, submission: str) -> None:
        self.done += 1
        if self._hook:
            self._hook(self.done, self.total, submission)
        now = time.monotonic()
        if self._artifact is not None and now - self._last >= 0.5:
            self._last = now
            await aupdate_progress_artifact(self._artifact, 100.0 * self.done / self.total)

    async def finish(self) -> None:
        if self._artifact is not None:
            await aupdate_progress_artifact(self._artifact, 100.0)


def _run_started() -> datetime:
    """When this flow run was meant to start: stable across retries of the same run."""
    context = FlowRunContext.get()
    started = context.flow_run.expected_start_time if context and context.flow_run else None
    return started or datetime.now(UTC)


def _artifact_key(raw: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-")[:120]
