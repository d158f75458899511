"""The one seam between the grading pipeline and where graders run.

Each backend (``local``, ``docker``, ``ecs``) implements :class:`Launcher`;
the pipeline and its Prefect tasks only ever see this surface, and tests may
add a fake. The steps mirror a grading run:

    launch      start the sandbox with the shim waiting for the ready marker;
                idempotent per ``job.run_key`` (a retry reattaches)
    make_ready  deliver the verified submission, write the marker, wait until
                the shim has started the grader
    wait        until the shim has exited, bounded
    collect     the envelope, the results files and captured output
    stop        ask the sandbox to end now (timeouts, cancellation)
    cleanup     remove everything the run made
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from .._archives import ArchiveLimits, unpack_submission
from .._assignment import Assignment
from .._models import Backend, GraderIdentity, ShimEnvelope
from .._result_files import MAX_RESULT_FILE_BYTES, MAX_RESULT_FILES
from .._shim_build import ShimArtifact

__all__ = [
    "GRADER_ENV_DEFAULTS",
    "MAX_RESULT_FILES",
    "MAX_RESULT_FILE_BYTES",
    "GradingJob",
    "LaunchHandle",
    "Launcher",
    "RunOutput",
]

GRADER_ENV_DEFAULTS = {"LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}


@dataclass(frozen=True, slots=True)
class GradingJob:
    """Everything a backend needs to run one grading attempt."""

    run_key: str
    assignment: Assignment
    submission_id: str
    attempt: int
    submission_file: Path
    submission_filename: str
    submission_sha256: str
    shim: ShimArtifact
    submission_url: str | None = None
    labels: dict[str, str] = field(default_factory=dict)

    def unpack_submission(self, dest: Path) -> None:
        """Unpack the verified submission into ``dest`` under the assignment's limits.

        Raises:
            InvalidSubmission: the archive broke a rule; nothing is left in ``dest``.
        """
        unpack_submission(
            self.submission_file,
            dest,
            filename=self.submission_filename,
            limits=ArchiveLimits.from_limits(self.assignment.limits),
        )

    student: str | None = None
    """The student, for graders that are told who submitted (coursera userId, gradescope users)."""


@dataclass(frozen=True, slots=True)
class LaunchHandle:
    """A started (or reattached) run. Plain data, so tasks can pass it along."""

    backend: Backend
    run_key: str
    run_id: str
    reattached: bool = False
    details: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunOutput:
    """What came back from the sandbox after the grader ended."""

    envelope: ShimEnvelope | None
    results_files: dict[str, bytes]
    stdout_tail: str = ""
    stderr_tail: str = ""
    notes: tuple[str, ...] = ()


class Launcher(abc.ABC):
    """A place to run graders. See the module docstring for the step contract."""

    name: ClassVar[Backend]

    @abc.abstractmethod
    def grader_identity(self, assignment: Assignment) -> GraderIdentity:
        """Which grader this backend will run for ``assignment``."""

    @abc.abstractmethod
    def launch(self, job: GradingJob) -> LaunchHandle:
        """Start the sandbox, or reattach to the one already started for ``job.run_key``."""

    @abc.abstractmethod
    def make_ready(self, handle: LaunchHandle, job: GradingJob, *, timeout_s: float) -> None:
        """Deliver the submission and wait until the grader has started.

        Raises:
            InvalidSubmission: the archive broke a rule (the sandbox is stopped).
            InfraError: not ready within ``timeout_s``.
        """

    @abc.abstractmethod
    def wait(self, handle: LaunchHandle, *, timeout_s: float) -> None:
        """Block until the grader run has ended; stop it and raise InfraError on expiry."""

    @abc.abstractmethod
    def collect(self, handle: LaunchHandle) -> RunOutput:
        """Read the envelope, results files and output tails."""

    @abc.abstractmethod
    def stop(self, handle: LaunchHandle) -> None:
        """End the run now. Safe to call on a finished or missing run."""

    @abc.abstractmethod
    def cleanup(self, handle: LaunchHandle) -> None:
        """Remove everything the run made. Safe to call twice."""
