"""Prefect tasks: retries, caching, timeouts, logs and artifacts around the core."""

from ._grading import (
    launch_grader,
    parse_results,
    publish_result,
    upload_submission,
    wait_grader_finished,
    wait_submission_ready,
)
from ._report import GRADED_EVENT, result_markdown
from ._shim import build_shim

__all__ = [
    "GRADED_EVENT",
    "build_shim",
    "launch_grader",
    "parse_results",
    "publish_result",
    "result_markdown",
    "upload_submission",
    "wait_grader_finished",
    "wait_submission_ready",
]
