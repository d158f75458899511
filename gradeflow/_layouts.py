"""Where a grader expects things: gradeflow's, Coursera's or Gradescope's tree.

Existing Coursera and Gradescope graders hard-code their platform's paths, so
to run them unchanged every backend must lay out the tree they expect. A
`Layout` says, as data, what that tree is; each backend (local, docker, ecs)
turns the data into directories, copies and mounts its own way. The shim's
own files (its binary, ready marker, envelope, captured output) and the
grader's scratch ``HOME`` stay in gradeflow's contract tree in every layout::

    gradeflow   submission  /grading/submission
                results     /grading/results/*  (the assignment's results_format)
                writable    /grading/work, /grading/results
                cwd         /grading/work
    coursera    submission  /shared/submission
                results     /shared/feedback.json, htmlFeedback.html, txtFeedback.txt
                writable    /shared (not its submission/), /grading/work
                cwd         the grader directory (the image's WORKDIR in containers)
    gradescope  submission  /autograder/submission (+ /autograder/submission_metadata.json)
                results     /autograder/results/results.json
                writable    /autograder/source, /autograder/results, /grading/work
                cwd         /autograder

Gradescope additionally gets ``/autograder/submission_metadata.json``,
written by the co-process before the ready marker, its autograder files in
``/autograder/source`` (owned by the grader: its graders write there) and
``run_autograder`` copied to ``/autograder/run_autograder``. Coursera graders
get ``partId``, ``filename`` and ``userId`` in their environment.

``run_as_root`` (``[grader] run_as_root = true``) is an explicit opt-in per
assignment: the shim keeps uid 0 (``--keep-root``), still with no
capabilities, no_new_privs and seccomp; the grader-owned directories then
belong to root, because a capability-less root cannot enter another user's
0700 directory.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Literal

from ._models import LayoutName, ResultsFormat
from ._sandbox import GRADER_UID, SandboxPaths, grader_environment

if TYPE_CHECKING:
    from ._assignment import Assignment
    from .launchers import GradingJob

__all__ = [
    "LAYOUTS",
    "Directory",
    "Layout",
    "LayoutPaths",
    "SubmissionInfo",
    "layout_for",
]

Owner = Literal["root", "grader"]


@dataclass(frozen=True, slots=True)
class Directory:
    """One directory a backend creates before the shim starts.

    ``owner`` is ``root`` (uid 0) or ``grader`` (the uid the grader runs as:
    65534, or 0 with ``run_as_root``); see `LayoutPaths.uid_of`.
    """

    path: PurePosixPath
    owner: Owner
    mode: int


@dataclass(frozen=True, slots=True)
class SubmissionInfo:
    """What gradeflow knows about a submission that a platform's grader is told."""

    assignment_id: str
    assignment_title: str
    submission_id: str
    student: str | None
    attempt: int
    filename: str
    part_id: str

    @classmethod
    def for_job(cls, job: GradingJob) -> SubmissionInfo:
        """The info of one grading job (every backend builds it the same way)."""
        assignment = job.assignment
        return cls(
            assignment_id=assignment.id,
            assignment_title=assignment.title,
            submission_id=job.submission_id,
            student=job.student,
            attempt=job.attempt,
            filename=job.submission_filename,
            part_id=assignment.grader.part_id or assignment.id,
        )


@dataclass(frozen=True, slots=True)
class LayoutPaths:
    """A layout resolved against one backend's contract tree: absolute in-sandbox paths.

    Attributes:
        sandbox: the contract tree (shim binary, ready marker, envelope,
            output captures, scratch ``work``); unchanged by the layout.
        submission: where the co-process unpacks the submission (read-only).
        results: the directory the results files are collected from.
        result_files: the names collected from ``results``; None: every
            regular top-level file (the gradeflow layout).
        workdir: the grader's cwd.
        home: the grader's ``HOME`` (scratch it owns, in every layout).
        grader_dir: the grader's own files; ``{grader}`` in ``local_command``.
        grader_writable: the grader owns ``grader_dir`` (gradescope's source);
            otherwise it is read-only for the grader.
        program_copy: (source, destination) a backend that installs the
            grader files itself copies as an executable (gradescope's
            ``run_autograder``); images built the Gradescope way have it.
        metadata: where the co-process writes `Layout.metadata` (0444), or None.
        mounts: fixed top-level directories outside the contract tree; a
            backend that cannot create them (local) bind-mounts them.
        directories: what to create before the shim starts, parents first.
        grader_uid: the uid the grader runs as.
    """

    sandbox: SandboxPaths
    submission: PurePosixPath
    results: PurePosixPath
    result_files: tuple[str, ...] | None
    workdir: PurePosixPath
    home: PurePosixPath
    grader_dir: PurePosixPath
    grader_writable: bool
    program_copy: tuple[PurePosixPath, PurePosixPath] | None
    metadata: PurePosixPath | None
    mounts: tuple[PurePosixPath, ...]
    directories: tuple[Directory, ...]
    grader_uid: int

    def uid_of(self, directory: Directory) -> int:
        """The numeric owner of ``directory`` for this run."""
        return self.grader_uid if directory.owner == "grader" else 0


@dataclass(frozen=True, slots=True)
class Layout:
    """One convention of where a grader finds its inputs and leaves its results.

    Attributes:
        name: as in ``assignment.toml``'s ``layout``.
        results_format: the format its results file is parsed as; ``auto``
            for gradeflow (the assignment's own ``results_format`` decides).
        default_command: run when the assignment gives no command of its own.
        run_as_root: keep uid 0 in the sandbox (the assignment's opt-in).
    """

    name: LayoutName
    results_format: ResultsFormat
    default_command: tuple[str, ...] | None = None
    run_as_root: bool = False

    def paths(self, sandbox: SandboxPaths) -> LayoutPaths:
        """This layout's tree, around the backend's contract tree ``sandbox``."""
        uid = 0 if self.run_as_root else GRADER_UID
        contract = (
            Directory(sandbox.shim_dir, "root", 0o700),
            Directory(sandbox.work, "grader", 0o700),
        )
        if self.name == "coursera":
            shared = PurePosixPath("/shared")
            return LayoutPaths(
                sandbox=sandbox,
                submission=shared / "submission",
                results=shared,
                result_files=("feedback.json", "htmlFeedback.html", "txtFeedback.txt"),
                workdir=sandbox.grader_dir,
                home=sandbox.work,
                grader_dir=sandbox.grader_dir,
                grader_writable=False,
                program_copy=None,
                metadata=None,
                mounts=(shared,),
                directories=(*contract, Directory(shared, "grader", 0o755)),
                grader_uid=uid,
            )
        if self.name == "gradescope":
            base = PurePosixPath("/autograder")
            return LayoutPaths(
                sandbox=sandbox,
                submission=base / "submission",
                results=base / "results",
                result_files=("results.json",),
                workdir=base,
                home=sandbox.work,
                grader_dir=base / "source",
                grader_writable=True,
                program_copy=(base / "source" / "run_autograder", base / "run_autograder"),
                metadata=base / "submission_metadata.json",
                mounts=(base,),
                directories=(
                    *contract,
                    Directory(base, "root", 0o755),
                    Directory(base / "source", "grader", 0o755),
                    Directory(base / "results", "grader", 0o755),
                ),
                grader_uid=uid,
            )
        return LayoutPaths(
            sandbox=sandbox,
            submission=sandbox.submission,
            results=sandbox.results,
            result_files=None,
            workdir=sandbox.work,
            home=sandbox.work,
            grader_dir=sandbox.grader_dir,
            grader_writable=False,
            program_copy=None,
            metadata=None,
            mounts=(),
            directories=(*contract, Directory(sandbox.results, "grader", 0o700)),
            grader_uid=uid,
        )

    def environment(self, paths: LayoutPaths, info: SubmissionInfo) -> dict[str, str]:
        """Exactly the variables the grader gets (the shim adds a safe PATH).

        Every layout keeps gradeflow's own variables, pointing at this
        layout's directories, so a grader written to gradeflow's contract
        runs under any layout; Coursera's graders also read their
        parameters from the environment.
        """
        env = grader_environment(paths.sandbox)
        env.update(
            GRADEFLOW_SUBMISSION_DIR=str(paths.submission),
            GRADEFLOW_RESULTS_DIR=str(paths.results),
            GRADEFLOW_GRADER_DIR=str(paths.grader_dir),
            HOME=str(paths.home),
        )
        if self.name == "coursera":
            env.update(partId=info.part_id, filename=info.filename, userId=info.student or "")
        return env

    def metadata(self, info: SubmissionInfo, *, now: datetime | None = None) -> bytes | None:
        """The submission-metadata file's content, or None when the layout has none.

        Gradescope's ``submission_metadata.json``, shaped as Gradescope
        documents it and filled from what gradeflow knows; what it cannot
        know (e-mail addresses, due dates, earlier submissions) is null or
        empty rather than invented. ``gradeflow`` carries the attempt.
        """
        if self.name != "gradescope":
            return None
        created = (now or datetime.now(UTC)).isoformat()
        users = [{"name": info.student, "email": None, "id": info.student}] if info.student else []
        document: Mapping[str, object] = {
            "id": info.submission_id,
            "created_at": created,
            "assignment": {
                "id": info.assignment_id,
                "title": info.assignment_title,
                "due_date": None,
                "late_due_date": None,
                "release_date": None,
                "group_submission": False,
                "group_size": None,
                "total_points": None,
                "course_id": None,
            },
            "submission_method": "upload",
            "users": users,
            "previous_submissions": [],
            "gradeflow": {"attempt": info.attempt, "filename": info.filename},
        }
        return json.dumps(document, indent=2).encode()


LAYOUTS: dict[LayoutName, Layout] = {
    "gradeflow": Layout("gradeflow", "auto"),
    "coursera": Layout("coursera", "coursera"),
    "gradescope": Layout("gradescope", "gradescope", ("/autograder/run_autograder",)),
}
"""The layouts by name, without ``run_as_root`` (see `layout_for`)."""


def layout_for(assignment: Assignment) -> Layout:
    """The layout ``assignment`` asks for, with its ``run_as_root`` opt-in applied."""
    base = LAYOUTS[assignment.layout]
    if not assignment.grader.run_as_root:
        return base
    return Layout(base.name, base.results_format, base.default_command, run_as_root=True)
