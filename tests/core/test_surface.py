"""The core's public surface, and its promise not to import Prefect."""

from __future__ import annotations

import subprocess
import sys

import gradeflow


def test_every_exported_name_exists() -> None:
    for name in gradeflow.__all__:
        assert hasattr(gradeflow, name), name


def test_importing_the_core_does_not_import_prefect() -> None:
    code = (
        "import sys, gradeflow, gradeflow._pipeline, gradeflow._runtime, gradeflow.storage;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'prefect', 'prefect_aws'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_errors_form_one_tree() -> None:
    names = (
        "ConfigurationError", "InvalidSubmission", "StorageError", "InfraError",
        "ShimBuildError", "ObjectConflict", "ChecksumMismatch", "ObjectNotFound",
    )  # fmt: skip
    for name in names:
        assert issubclass(getattr(gradeflow, name), gradeflow.GradeflowError)
