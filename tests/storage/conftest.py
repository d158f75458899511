"""Fixtures for the storage tests: a private local store, and S3 over real HTTP.

The S3 side talks to moto's server on 127.0.0.1 through a real boto3 client,
so requests are signed, serialised and parsed exactly as against AWS; only the
server differs (see the notes in test_s3_store.py on what moto does not check).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from gradeflow.storage import LocalStore, S3Store

MiB = 1024 * 1024
REGION = "us-east-1"


@pytest.fixture
def local_store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


@pytest.fixture(autouse=True)
def _no_real_aws(no_real_aws: None) -> None:
    """Every test here runs with dummy AWS credentials (see tests/conftest.py)."""


@pytest.fixture
def s3_client(moto_endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name=REGION,
        config=Config(signature_version="s3v4"),
        aws_access_key_id="testing",  # dummies: moto accepts anything
        aws_secret_access_key="testing",
    )


@pytest.fixture
def bucket(s3_client: Any) -> str:
    name = f"gradeflow-test-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_store(s3_client: Any, bucket: str) -> S3Store:
    return S3Store(
        bucket, prefix="gf", client=s3_client, multipart_threshold=5 * MiB, part_size=5 * MiB
    )


@pytest.fixture
def calls(s3_client: Any) -> list[str]:
    """The S3 operations the client sends, in order, e.g. ``["PutObject", "HeadObject"]``."""
    seen: list[str] = []

    def record(model: Any, **_: Any) -> None:
        seen.append(model.name)

    s3_client.meta.events.register("before-call.s3", record)
    return seen
