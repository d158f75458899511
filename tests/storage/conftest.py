"""Fixtures for the storage tests: a private local store, and S3 over real HTTP.

The S3 side talks to moto's server on 127.0.0.1 through a real boto3 client,
so requests are signed, serialised and parsed exactly as against AWS; only the
server differs (see the notes in test_s3_store.py on what moto does not check).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from moto.server import ThreadedMotoServer

from gradeflow.storage import LocalStore, S3Store

MiB = 1024 * 1024
REGION = "us-east-1"


@pytest.fixture
def local_store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(autouse=True)
def _no_real_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Belt and braces: nothing here may find, or reach with, real AWS credentials."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


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
