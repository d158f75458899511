"""Object storage: one :class:`ObjectStore` surface, a local and an S3 backend.

    ObjectStore             abstract: conditional create, verified reads, presigned URLs
    ├── LocalStore          a private directory on the flow host (the default)
    └── S3Store             any S3-protocol bucket via boto3 (prefect-aws blocks optional)

Keys come from the helpers here (``submission_key`` ...) and are checked by
``validate_key`` in every store, so an object can move between backends.
"""

from __future__ import annotations

from gradeflow.storage._base import ObjectStore, StoredObject
from gradeflow.storage._keys import (
    latest_result_key,
    manifest_key,
    result_key,
    results_prefix,
    submission_key,
    submissions_prefix,
)
from gradeflow.storage._local import LocalStore, validate_key, validate_prefix
from gradeflow.storage._s3 import S3Store

__all__ = [
    "LocalStore",
    "ObjectStore",
    "S3Store",
    "StoredObject",
    "latest_result_key",
    "manifest_key",
    "result_key",
    "results_prefix",
    "submission_key",
    "submissions_prefix",
    "validate_key",
    "validate_prefix",
]
