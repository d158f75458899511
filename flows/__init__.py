"""Prefect flows and the ``gradeflow`` CLI: compose tasks, own parameters."""

from ._grade import build_shim_flow, grade_submission

__all__ = ["build_shim_flow", "grade_submission"]
