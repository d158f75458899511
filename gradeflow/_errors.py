"""The one exception root of gradeflow, and what each branch means for a run.

    GradeflowError
    ├── ConfigurationError        an assignment, setting or parameter is wrong;
    │                             nothing was started, retrying cannot help
    ├── InvalidSubmission         the student's archive broke a rule; graded as
    │                             `invalid_submission`, never retried
    ├── StorageError              the object store failed
    │   ├── ObjectNotFound
    │   ├── ObjectConflict        a different object already holds that key
    │   └── ChecksumMismatch      bytes changed between writer and reader
    ├── ShimBuildError            cargo or the ELF checks failed
    └── InfraError                a launch/ready/wait step failed; `retryable`
                                  says whether another attempt can help

Third-party errors (botocore, docker, OSError) are translated at the edge with
``raise ... from exc`` so callers only ever match on this tree.
"""

from __future__ import annotations

__all__ = [
    "ChecksumMismatch",
    "ConfigurationError",
    "GradeflowError",
    "InfraError",
    "InvalidSubmission",
    "ObjectConflict",
    "ObjectNotFound",
    "ShimBuildError",
    "StorageError",
]


class GradeflowError(Exception):
    """Base of every error gradeflow raises on purpose."""


class ConfigurationError(GradeflowError):
    """Something the operator or instructor configured is wrong."""


class InvalidSubmission(GradeflowError):
    """The submission itself is unacceptable; the message names the rule it broke."""


class StorageError(GradeflowError):
    """The object store could not do what was asked."""


class ObjectNotFound(StorageError):
    """No object is stored under the key."""


class ObjectConflict(StorageError):
    """A different object already exists under a key we never overwrite."""


class ChecksumMismatch(StorageError):
    """The bytes read back do not hash to the digest they were stored with."""


class ShimBuildError(GradeflowError):
    """Building or verifying the static shim failed."""


class InfraError(GradeflowError):
    """Launching or supervising the grader failed for reasons not the student's.

    Args:
        message: what failed, naming the resource.
        retryable: whether a new attempt of the same step may succeed.
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable
