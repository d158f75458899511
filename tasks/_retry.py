"""When a failed task may be retried: only when another try can help."""

from __future__ import annotations

from typing import Any

from gradeflow import (
    ChecksumMismatch,
    ConfigurationError,
    InfraError,
    InvalidSubmission,
    ObjectConflict,
    StorageError,
)

__all__ = ["retry_if_transient"]

_NEVER = (ConfigurationError, InvalidSubmission, ObjectConflict)


async def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry storage hiccups and retryable infra errors; never the student's or config faults."""
    exc = await state.aresult(raise_on_failure=False)
    if isinstance(exc, _NEVER):
        return False
    if isinstance(exc, InfraError):
        return exc.retryable
    return isinstance(exc, (StorageError, ChecksumMismatch, OSError, TimeoutError))
