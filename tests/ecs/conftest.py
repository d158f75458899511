"""Fixtures for the ecs backend: real botocore clients, stubbed or on moto's server.

Stubber tests use a real ``ecs`` client (so every request is validated against
botocore's service model) with ``botocore.stub.Stubber`` responses shaped by
that model; they cover what moto cannot show (clientToken idempotency,
``failures[]``, stopCode, MISSING). The moto tests talk HTTP to
``ThreadedMotoServer`` on 127.0.0.1. Nothing here can reach real AWS.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber

from gradeflow import load_assignment
from gradeflow._shim_build import ShimArtifact
from gradeflow.launchers import GradingJob
from gradeflow.launchers._ecs import EcsConfig, EcsLauncher
from gradeflow.storage import LocalStore, S3Store

REGION = "us-east-1"
ACCOUNT = "123456789012"
CLUSTER = "graders"
REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


@pytest.fixture(autouse=True)
def _no_real_aws(no_real_aws: None) -> None:
    """Every test here runs with dummy AWS credentials (see tests/conftest.py)."""


def client(service: str, endpoint: str | None = None) -> Any:
    return boto3.client(
        service,
        region_name=REGION,
        endpoint_url=endpoint,
        config=Config(signature_version="s3v4", retries={"max_attempts": 1}),
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def ecs() -> Any:
    return client("ecs")


@pytest.fixture
def stub(ecs: Any) -> Iterator[Stubber]:
    with Stubber(ecs) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


class FakeClock:
    """Time that passes only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    """Stubber tests read the agent's uploads from a local store (no HTTP needed)."""
    return LocalStore(tmp_path / "store")


def ecs_config(**changes: Any) -> EcsConfig:
    base: dict[str, Any] = {
        "cluster": CLUSTER,
        "agent_image": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/gradeflow/agent:1",
        "shim_repository": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/gradeflow/shim",
        "region": REGION,
        "subnets": ("subnet-0123456789abcdef0",),
        "security_groups": ("sg-0123456789abcdef0",),
        "execution_role_arn": f"arn:aws:iam::{ACCOUNT}:role/gradeflow-execution",
        "log_tail_lines": 5,
    }
    base.update(changes)
    return EcsConfig(**base)


@pytest.fixture
def make_launcher(ecs: Any, store: LocalStore, clock: FakeClock) -> Callable[..., EcsLauncher]:
    def make(**kwargs: Any) -> EcsLauncher:
        options: dict[str, Any] = {
            "store": store,
            "ecs": ecs,
            "sleep": clock.sleep,
            "clock": clock,
        }
        options.update(kwargs)
        config = options.pop("config", None) or ecs_config()
        return EcsLauncher(config, **options)

    return make


@pytest.fixture
def fake_shim(tmp_path: Path) -> ShimArtifact:
    path = tmp_path / "gradeflow-shim"
    path.write_bytes(b"\x7fELF fake")
    return ShimArtifact(
        path=str(path),
        sha256=hashlib.sha256(b"fake").hexdigest(),
        size=9,
        target="x86_64-unknown-linux-gnu",
        source_hash="0" * 64,
    )


def make_job(
    shim: ShimArtifact,
    *,
    assignment: str = "py-fizzbuzz",
    submission: str = "s1",
    attempt: int = 1,
    url: str | None = "https://bucket.s3.amazonaws.com/submissions/x?X-Amz-Signature=abc",
) -> GradingJob:
    spec = load_assignment(EXAMPLES / assignment)
    spec = spec.model_copy(
        update={
            "grader": spec.grader.model_copy(
                update={"entrypoint": ("python3", "/grader/run_tests.py")}
            )
        }
    )
    sha = hashlib.sha256(submission.encode()).hexdigest()
    return GradingJob(
        run_key=f"{spec.id}.{submission}.a{attempt}",
        assignment=spec,
        submission_id=submission,
        attempt=attempt,
        submission_file=Path("/nonexistent"),
        submission_filename="fizzbuzz.py",
        submission_sha256=sha,
        shim=shim,
        submission_url=url,
    )


@pytest.fixture
def job_for(fake_shim: ShimArtifact) -> Callable[..., GradingJob]:
    """``job_for(submission="s2", attempt=2, url=None)``: a job with the fake shim."""

    def make(**kwargs: Any) -> GradingJob:
        return make_job(fake_shim, **kwargs)

    return make


@pytest.fixture
def moto_ecs(moto_endpoint: str) -> Any:
    """A cluster with one EC2 container instance, tasks staying RUNNING until stopped."""
    from moto.moto_api import state_manager

    state_manager.set_transition("ecs::task", {"progression": "manual", "times": 10**9})
    ecs, ec2 = client("ecs", moto_endpoint), client("ec2", moto_endpoint)
    ecs.create_cluster(clusterName=CLUSTER)
    instance = ec2.run_instances(
        ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="m5.4xlarge"
    )["Instances"][0]
    document = {"instanceId": instance["InstanceId"], "region": "us-east-1", "accountId": ACCOUNT}
    ecs.register_container_instance(cluster=CLUSTER, instanceIdentityDocument=json.dumps(document))
    return ecs


@pytest.fixture
def s3_store(moto_endpoint: str) -> S3Store:
    s3 = client("s3", moto_endpoint)
    bucket = f"gradeflow-ecs-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    return S3Store(bucket, prefix="gf", client=s3)
