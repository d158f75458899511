"""Where things live in the store. Every id is validated before it gets here."""

from __future__ import annotations

import re

__all__ = [
    "latest_result_key",
    "manifest_key",
    "result_key",
    "results_prefix",
    "submission_key",
    "submissions_prefix",
]

_EXT = re.compile(r"^[a-z0-9]{1,10}(\.[a-z0-9]{1,10})?$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _check(sha256: str) -> None:
    if not _HEX64.match(sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")


def submissions_prefix(assignment: str, submission: str | None = None) -> str:
    base = f"submissions/{assignment}/"
    return base if submission is None else f"{base}{submission}/"


def submission_key(assignment: str, submission: str, sha256: str, ext: str) -> str:
    """Content-addressed: ``submissions/{assignment}/{submission}/{sha256}.{ext}``."""
    _check(sha256)
    if not _EXT.match(ext):
        raise ValueError(f"bad file extension: {ext!r}")
    return f"{submissions_prefix(assignment, submission)}{sha256}.{ext}"


def manifest_key(assignment: str, submission: str, sha256: str) -> str:
    """The submission's manifest (original filename, student, size) beside it."""
    _check(sha256)
    return f"{submissions_prefix(assignment, submission)}{sha256}.manifest.json"


def results_prefix(assignment: str, submission: str | None = None) -> str:
    base = f"results/{assignment}/"
    return base if submission is None else f"{base}{submission}/"


def result_key(assignment: str, submission: str, attempt: int, name: str = "result.json") -> str:
    """``results/{assignment}/{submission}/attempt-{NNNN}/{name}``: one folder per attempt."""
    return f"{results_prefix(assignment, submission)}attempt-{attempt:04d}/{name}"


def latest_result_key(assignment: str, submission: str) -> str:
    """A small pointer to the newest attempt's result (the one mutable object)."""
    return f"{results_prefix(assignment, submission)}latest.json"
