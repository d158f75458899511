"""Reading what a hostile grader left in its results directory, safely.

The grader owns that directory, so a "results.json" may be a symlink to a
root-only file, a FIFO that blocks the reader, a hard link, or a gigabyte.
Only regular, singly-linked, top-level files within the caps are taken, and
links are never followed. Standard library only: the ECS agent image ships
this module beside ``agent.py``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["MAX_RESULT_FILES", "MAX_RESULT_FILE_BYTES", "read_result_files"]

MAX_RESULT_FILES = 32
"""More files than this are not read back from a results directory."""

MAX_RESULT_FILE_BYTES = 4 << 20
"""Larger results files are not read: a hostile grader must not exhaust the flow host."""


def read_result_files(results_dir: Path, wanted: tuple[str, ...] | None = None) -> dict[str, bytes]:
    """Regular files at the top of ``results_dir``, by name.

    ``wanted`` names the only files taken (a results directory shared with
    other files, like Coursera's ``/shared``); None: any.
    """
    files: dict[str, bytes] = {}
    try:
        names = sorted(os.listdir(results_dir))
    except FileNotFoundError:
        return files
    if wanted is not None:
        names = [name for name in names if name in wanted]
    for name in names[:MAX_RESULT_FILES]:
        try:
            fd = os.open(results_dir / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue  # a symlink, a FIFO the grader left, or vanished
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
                continue
            if info.st_size > MAX_RESULT_FILE_BYTES:
                continue
            files[name] = handle.read(MAX_RESULT_FILE_BYTES)
    return files
