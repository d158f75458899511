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

    @property
    def store_dir(self) -> Path:
        return self.home / "store"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def shim_cache_dir(self) -> Path:
        return self.shim_cache or self.home / "shim"
