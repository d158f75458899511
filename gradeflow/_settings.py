"""Operator settings, read from ``GRADEFLOW_*`` environment variables.

Everything a deployment may need to change lives here with its bounds, so a
wrong value fails at start-up with the variable's name instead of midway
through a regrade.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "default_shim_source"]


def default_shim_source() -> Path:
    """The ``shim/`` crate beside this package (a source checkout or editable install)."""
    return Path(__file__).resolve().parent.parent / "shim"


class Settings(BaseSettings):
    """gradeflow's configuration; see each field's description."""

    model_config = SettingsConfigDict(env_prefix="GRADEFLOW_", extra="ignore", frozen=True)

    home: Path = Field(
        Path("~/.gradeflow").expanduser(),
        description="State directory: the local store, run directories and the shim cache.",
    )
    assignments_root: Path = Field(
        Path("examples"), description="Where assignment directories are found by id."
    )
    store: Literal["local", "s3"] = Field("local", description="Object store backend.")
    s3_bucket: str | None = Field(None, description="Bucket of the s3 store.")
    s3_prefix: str = Field("", description="Key prefix inside the bucket.")
    s3_endpoint_url: str | None = Field(None, description="S3 endpoint override (tests, MinIO).")
    s3_block: str | None = Field(
        None,
        description="Name of a prefect-aws S3Bucket block to take bucket and credentials from.",
    )
    multipart_threshold_mb: int = Field(8, ge=5, le=5120, description="Multipart above this.")
    shim_source: Path = Field(default_factory=default_shim_source, description="The shim crate.")
    cargo: str = Field("cargo", description="The cargo executable.")
    shim_cache: Path | None = Field(
        None, description="Where built shims are cached (default: HOME/shim)."
    )
    ready_timeout_s: float = Field(
        60.0, gt=0, le=3600, description="Bound on delivering the submission into the sandbox."
    )
    finish_grace_s: float = Field(
        15.0, ge=0, le=3600, description="Waited beyond the assignment's timeout before stopping."
    )
    keep_runs: bool = Field(False, description="Keep local run directories for debugging.")
    docker_shim_image: bool = Field(
        True, description="Package the shim into a FROM scratch image when Docker is reachable."
    )
    gradescope_base_image: str = Field(
        "gradeflow/base-python:bookworm",
        description="What `gradeflow image build --gradescope` builds on (production: Ubuntu).",
    )
    # -- ecs backend (GRADEFLOW_ECS_*) --------------------------------------------------
    ecs_cluster: str | None = Field(None, description="ECS cluster name or ARN for grader tasks.")
    ecs_region: str | None = Field(None, description="AWS region (default: the boto3 default).")
    ecs_endpoint_url: str | None = Field(None, description="ECS endpoint override (tests).")
    ecs_aws_credentials_block: str | None = Field(
        None, description="Name of a prefect-aws AwsCredentials block for ECS, ECR and logs."
    )
    ecs_launch_type: Literal["FARGATE", "EC2"] = Field(
        "FARGATE", description="Launch type; decides capabilities and networking of the grader."
    )
    ecs_capacity_provider: str | None = Field(
        None, description="Capacity provider (e.g. FARGATE_SPOT) instead of the launch type."
    )
    ecs_network_mode: Literal["awsvpc", "bridge", "host", "none"] = Field(
        "awsvpc", description="Task network mode (Fargate: awsvpc only)."
    )
    ecs_subnets: list[str] = Field(
        default_factory=list, max_length=16, description="Subnets of awsvpc tasks (JSON list)."
    )
    ecs_security_groups: list[str] = Field(
        default_factory=list,
        max_length=5,
        description="Security groups of awsvpc tasks; on Fargate they ARE the grader's network "
        "isolation: allow egress to the S3 endpoint only.",
    )
    ecs_assign_public_ip: bool = Field(False, description="Give awsvpc tasks a public IP.")
    ecs_platform_version: str | None = Field(None, description="Fargate platform version.")
    ecs_execution_role_arn: str | None = Field(
        None, description="Task execution role: pulls images, writes logs (no data access)."
    )
    ecs_task_role_arn: str | None = Field(
        None, description="Task role; leave unset: nothing in a grading task needs AWS access."
    )
    ecs_log_group: str = Field(
        "/gradeflow/ecs", min_length=1, max_length=512, description="CloudWatch log group."
    )
    ecs_log_stream_prefix: str = Field(
        "gradeflow", min_length=1, max_length=100, description="awslogs stream prefix."
    )
    ecs_agent_image: str | None = Field(None, description="The agent image, as ECS pulls it.")
    ecs_shim_repository: str | None = Field(
        None, description="Repository of the shim image; tagged by the shim's digest."
    )
    ecs_shim_capabilities: list[str] = Field(
        default_factory=lambda: ["SETUID", "SETGID", "SETPCAP", "KILL"],
        max_length=8,
        description="Capabilities the grader container keeps so the shim can drop privileges.",
    )
    ecs_run_task_rate: float = Field(
        10.0, gt=0, le=100, description="RunTask calls per second (Fargate allows 20)."
    )
    ecs_start_timeout_s: float = Field(
        600.0, gt=0, le=3600, description="Bound on a task reaching RUNNING (image pulls)."
    )
    ecs_log_tail_lines: int = Field(
        20, ge=0, le=1000, description="CloudWatch lines per container attached to a failed run."
    )

    @property
    def store_dir(self) -> Path:
        return self.home / "store"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def shim_cache_dir(self) -> Path:
        return self.shim_cache or self.home / "shim"
