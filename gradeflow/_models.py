"""The records that cross gradeflow's boundaries, as pydantic models.

They are what the Prefect UI renders as forms, what the course platform posts
and reads back, and what is stored under ``results/``; so every field is
validated here once, and ids are restricted so that no key or path can be
injected through them.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

__all__ = [
    "ID_PATTERN",
    "Backend",
    "FeedbackType",
    "GradeRequest",
    "GradeResult",
    "GradeStatus",
    "GraderIdentity",
    "Identifier",
    "LayoutName",
    "Limits",
    "ResourceUsage",
    "ResultsFormat",
    "ShimEnvelope",
    "StageTimings",
    "StudentFeedback",
    "TestResult",
    "Visibility",
]

ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,127}$"
Identifier = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
"""Assignment, submission and student ids: safe as a path segment and an S3 key part."""

Backend = Literal["local", "docker", "ecs"]
ResultsFormat = Literal["auto", "gradescope", "coursera", "prairielearn"]
FeedbackType = Literal["text", "html", "markdown"]
LayoutName = Literal["gradeflow", "coursera", "gradescope"]
"""Which in-sandbox tree a grader expects (see ``gradeflow._layouts``)."""
Visibility = Literal["visible", "hidden", "after_due_date", "after_published"]
"""Gradescope's visibility levels: when students may see a test, the score or stdout."""


class GradeStatus(enum.StrEnum):
    """How a grading run ended. Only `graded` carries a trustworthy score."""

    GRADED = "graded"
    GRADER_ERROR = "grader_error"
    TIMED_OUT = "timed_out"
    MEMORY_EXCEEDED = "memory_exceeded"
    OUTPUT_EXCEEDED = "output_exceeded"
    INVALID_SUBMISSION = "invalid_submission"
    INFRA_ERROR = "infra_error"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Limits(_Frozen):
    """What one grader run may use. Enforced by the shim and, in containers, the engine."""

    timeout_s: float = Field(60.0, gt=0, le=6 * 3600, description="Wall-clock limit of the grader.")
    kill_grace_s: float = Field(2.0, ge=0, le=120, description="SIGTERM to SIGKILL delay.")
    cpu_s: int | None = Field(None, gt=0, le=6 * 3600, description="RLIMIT_CPU; None: no limit.")
    memory_mb: int = Field(512, ge=16, le=65536, description="Memory limit of the grader.")
    nproc: int = Field(256, ge=1, le=65536, description="Processes/threads (RLIMIT_NPROC, pids).")
    nofile: int = Field(256, ge=16, le=1 << 20, description="Open files (RLIMIT_NOFILE).")
    fsize_mb: int = Field(64, ge=1, le=65536, description="Largest file the grader may write.")
    output_limit_kb: int = Field(
        1024, ge=1, le=1 << 20, description="Captured stdout/stderr kept per stream."
    )
    cpus: float = Field(1.0, gt=0, le=64, description="CPU quota for container backends.")
    submission_max_mb: int = Field(
        50, ge=1, le=4096, description="Largest submission (archive and unpacked)."
    )
    submission_max_files: int = Field(
        2000, ge=1, le=1_000_000, description="Most files an archive may hold."
    )


class GradeRequest(_Frozen):
    """One submission to grade, as the platform, the UI or the CLI gives it.

    The submission arrives either as a file readable by the flow host
    (``submission_path``) or as a key already in the object store
    (``submission_key``), never both.
    """

    assignment: Identifier = Field(description="Assignment id, as in its assignment.toml.")
    submission: Identifier = Field(description="The platform's id of this submission.")
    student: Identifier | None = Field(None, description="The student, for 'latest per student'.")
    submission_path: str | None = Field(None, description="File on the flow host to grade.")
    submission_key: str | None = Field(None, description="Object-store key of a stored submission.")
    assignment_dir: str | None = Field(
        None, description="Assignment directory; default: the configured assignments root / id."
    )
    backend: Backend = Field("local", description="Where the grader runs.")
    attempt: int = Field(1, ge=1, le=1000, description="Grading attempt of this submission.")
    force: bool = Field(False, description="Grade again even if this attempt has a result.")

    @model_validator(mode="after")
    def _one_source(self) -> GradeRequest:
        if (self.submission_path is None) == (self.submission_key is None):
            raise ValueError("give exactly one of submission_path and submission_key")
        return self

    @property
    def run_key(self) -> str:
        """Names this attempt everywhere: containers, tasks, idempotency tokens."""
        return f"{self.assignment}.{self.submission}.a{self.attempt}"


class ShimEnvelope(BaseModel):
    """What the shim wrote down about the grader process (see shim/README.md)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    shim_version: str
    status: Literal[
        "exited", "signaled", "timed_out", "ready_timeout", "ready_mismatch", "spawn_failed"
    ]
    exit_code: int | None = None
    signal: int | None = None
    wall_ms: int = 0
    cpu_user_ms: int = 0
    cpu_sys_ms: int = 0
    max_rss_kb: int = 0
    ready_wait_ms: int = 0
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    output_truncated: bool = False
    oom_killed: bool | None = None
    orphans_killed: int = 0
    error: str | None = None
    shim_exit_code: int | None = None

    @field_validator(
        "wall_ms", "cpu_user_ms", "cpu_sys_ms", "max_rss_kb", "ready_wait_ms",
        "stdout_bytes", "stderr_bytes", "orphans_killed", mode="before",
    )  # fmt: skip
    @classmethod
    def _unknown_is_zero(cls, value: object) -> object:
        """The shim writes null for counters it never started (e.g. spawn failures)."""
        return 0 if value is None else value


class TestResult(_Frozen):
    """One test of a grader, normalised from whichever format it used."""

    __test__ = False  # not a pytest class

    name: str
    score: float | None = None
    max_score: float | None = None
    status: Literal["passed", "failed"] | None = None
    output: str = ""
    visibility: Visibility = "visible"


class StageTimings(_Frozen):
    """Milliseconds spent in each step of the run."""

    upload_ms: int = 0
    launch_ms: int = 0
    ready_ms: int = 0
    run_ms: int = 0
    parse_ms: int = 0
    total_ms: int = 0


class ResourceUsage(_Frozen):
    """What the grader used, from the shim's envelope."""

    wall_ms: int = 0
    cpu_user_ms: int = 0
    cpu_sys_ms: int = 0
    max_rss_kb: int = 0
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    output_truncated: bool = False
    oom_killed: bool | None = None


class GraderIdentity(_Frozen):
    """Which grader produced a result: regrades compare this to skip unchanged work."""

    image: str | None = None
    digest: str = Field(description="Image id, or sha256 of the grader directory (local).")
    results_format: ResultsFormat = "auto"


class GradeResult(_Frozen):
    """The outcome of grading one submission attempt."""

    assignment: Identifier
    submission: Identifier
    student: Identifier | None = None
    attempt: int
    status: GradeStatus
    reason: str | None = Field(None, description="Why the status is not `graded`.")
    score: float | None = None
    max_score: float | None = None
    fraction: float | None = Field(None, ge=0, le=1)
    feedback: str = ""
    feedback_type: FeedbackType = "text"
    tests: tuple[TestResult, ...] = ()
    visibility: Visibility = Field(
        "visible", description="When students may see the result at all (Gradescope's top level)."
    )
    stdout_visibility: Visibility | None = Field(
        None, description="When students may see the grader's stdout; None: never (staff only)."
    )
    submission_sha256: str
    grader: GraderIdentity
    shim_sha256: str
    timings: StageTimings = StageTimings()
    resources: ResourceUsage = ResourceUsage()
    stdout_tail: str = ""
    stderr_tail: str = ""
    backend: Backend
    run_id: str = Field(description="The backend's id for the run (dir, container, task ARN).")
    graded_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    def student_view(self, *, after_due_date: bool, published: bool) -> StudentFeedback:
        """What a student may see of this result now (see ``gradeflow._visibility``)."""
        from ._visibility import student_view  # the rules live beside their tests' subject

        return student_view(self, after_due_date=after_due_date, published=published)


class StudentFeedback(_Frozen):
    """The student-facing part of a `GradeResult`: hidden tests and staff detail left out.

    ``results_hidden`` is set when the result's own visibility withholds the
    score and every test (Gradescope's top-level ``visibility``); the student
    then sees only that the submission was graded.
    """

    status: GradeStatus
    results_hidden: bool = False
    score: float | None = None
    max_score: float | None = None
    fraction: float | None = Field(None, ge=0, le=1)
    feedback: str = ""
    feedback_type: FeedbackType = "text"
    tests: tuple[TestResult, ...] = ()
    stdout: str = ""
