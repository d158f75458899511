"""Assignments as instructors write them: a directory with an ``assignment.toml``.

    assignment.toml       id, title, results format, limits, how to run the grader
    grader/               what the local backend runs (and the image is built from)
    Dockerfile            the grader image for the docker and ecs backends

Example::

    id = "py-fizzbuzz"
    title = "FizzBuzz in Python"
    results_format = "gradescope"
    layout = "gradeflow"          # or "coursera" (/shared) or "gradescope" (/autograder)

    [grader]
    image = "gradeflow-examples/py-fizzbuzz:latest"
    local_command = ["python3", "{grader}/run_tests.py"]

    [limits]
    timeout_s = 10
    memory_mb = 256
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ._errors import ConfigurationError
from ._models import Identifier, LayoutName, Limits, ResultsFormat

__all__ = ["Assignment", "GraderSpec", "load_assignment"]

ASSIGNMENT_FILE = "assignment.toml"


class GraderSpec(BaseModel):
    """How the grader is started on each backend."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    image: str | None = Field(None, description="Grader image for docker/ecs.")
    entrypoint: tuple[str, ...] | None = Field(
        None, description="Overrides the image's ENTRYPOINT (docker/ecs)."
    )
    command: tuple[str, ...] | None = Field(
        None, description="Overrides the image's CMD (docker/ecs)."
    )
    local_command: tuple[str, ...] | None = Field(
        None,
        description="Command of the local backend; '{grader}' is the grader directory.",
    )
    directory: str = Field("grader", description="Grader directory, relative to the assignment.")
    run_as_root: bool = Field(
        False,
        description="Keep uid 0 in the sandbox (no capabilities still); for graders that "
        "insist on root, e.g. some Gradescope autograders. Never for untrusted code locally.",
    )
    part_id: str | None = Field(
        None,
        max_length=128,
        description="Coursera partId handed to a coursera-layout grader (default: the id).",
    )


class Assignment(BaseModel):
    """One assignment: what to run, with which limits, and how to read its results."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Identifier
    title: str = Field(max_length=300)
    results_format: ResultsFormat = "auto"
    layout: LayoutName = Field(
        "gradeflow",
        description="The tree the grader expects: gradeflow's /grading, Coursera's /shared "
        "or Gradescope's /autograder.",
    )
    submission_filename: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
        description="Name a single-file submission is saved under (default: as uploaded).",
    )
    grader: GraderSpec = GraderSpec()
    limits: Limits = Limits()
    root: Path = Field(description="The assignment directory (set by the loader).")

    @model_validator(mode="before")
    @classmethod
    def _format_follows_layout(cls, data: Any) -> Any:
        """A coursera or gradescope layout reads its own results file, so it fixes the format."""
        if not isinstance(data, dict):
            return data
        layout = data.get("layout", "gradeflow")
        if layout in ("coursera", "gradescope"):
            fmt = data.get("results_format", "auto")
            if fmt == "auto":
                return {**data, "results_format": layout}
            if fmt != layout:
                raise ValueError(
                    f"layout {layout!r} reads {layout} results; results_format {fmt!r} "
                    "cannot apply (leave it out or set it to the layout's)"
                )
        return data

    @property
    def grader_dir(self) -> Path:
        return self.root / self.grader.directory

    def grader_digest(self) -> str:
        """sha256 over the grader directory's paths, modes and contents.

        The local backend's grader identity: a regrade skips submissions already
        graded by a byte-identical grader.
        """
        digest = hashlib.sha256()
        base = self.grader_dir
        if not base.is_dir():
            return digest.hexdigest()
        for path in sorted(base.rglob("*")):
            if "__pycache__" in path.parts:
                continue
            rel = path.relative_to(base).as_posix()
            mode = path.lstat().st_mode
            digest.update(f"{rel}\0{mode & 0o7777:o}\0".encode())
            if path.is_file() and not path.is_symlink():
                digest.update(path.read_bytes())
            digest.update(b"\0")
        return digest.hexdigest()


def load_assignment(directory: str | os.PathLike[str]) -> Assignment:
    """Read and validate ``directory/assignment.toml``.

    Raises:
        ConfigurationError: the file is missing, not TOML, or breaks the schema;
            the message names the file and the offending fields.
    """
    root = Path(directory).resolve()
    path = root / ASSIGNMENT_FILE
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(f"{path}: no assignment.toml in {root}") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"{path}: cannot read: {exc}") from exc
    try:
        assignment = Assignment.model_validate({**raw, "root": root})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigurationError(f"{path}: {problems}") from exc
    if assignment.grader.image is None and assignment.grader.local_command is None:
        raise ConfigurationError(f"{path}: [grader] needs an image or a local_command")
    return assignment
