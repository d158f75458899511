"""The ``build_shim`` task: cargo once per source hash, then a cache hit."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import anyio.to_thread
from prefect import get_run_logger, task
from prefect.context import TaskRunContext

from gradeflow import ShimArtifact, ShimBuildError
from gradeflow import build_shim as build_shim_core
from gradeflow._shim_build import record_image, shim_source_hash
from gradeflow._shim_image import docker_client_or_none, package_shim_image

__all__ = ["build_shim"]


def _cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Source hash + which cache directory + image flag; a miss if the binary is gone."""
    source_hash = shim_source_hash(Path(parameters["source"]))
    cache_dir = Path(parameters["cache_dir"]).resolve()
    where = hashlib.sha256(str(cache_dir).encode()).hexdigest()[:16]
    key = f"shim-{source_hash}-{where}-{parameters['package_image']}"
    # A cache hit must still point at a binary on this machine.
    binary = cache_dir / source_hash[:32] / "gradeflow-shim"
    return key if binary.is_file() else f"{key}-missing-{context.task_run.id}"


@task(
    name="build_shim",
    cache_key_fn=_cache_key,
    persist_result=True,
    timeout_seconds=900,
    retries=0,
)
async def build_shim(
    source: str, cache_dir: str, cargo: str = "cargo", package_image: bool | None = False
) -> ShimArtifact:
    """Build (or reuse) the static shim and, with a Docker engine, its scratch image.

    ``package_image``: True requires an engine, None packages where one answers.
    """
    logger = get_run_logger()
    artifact, built = await anyio.to_thread.run_sync(
        lambda: build_shim_core(Path(source), Path(cache_dir), cargo=cargo)
    )
    logger.info(
        "shim %s: sha256 %s, %d bytes, %s",
        "built" if built else "reused",
        artifact.sha256[:16],
        artifact.size,
        artifact.target,
    )
    if package_image is not False:
        packaged = await anyio.to_thread.run_sync(_package, artifact, package_image is True)
        if packaged is not None:
            artifact = packaged
            logger.info("shim image %s", artifact.image)
        else:
            logger.info("no Docker engine answers: shim image not packaged")
    return artifact


def _package(artifact: ShimArtifact, required: bool) -> ShimArtifact | None:
    client = docker_client_or_none()
    if client is None:
        if required:
            raise ShimBuildError("no Docker engine answers: cannot package the shim image")
        return None
    return record_image(artifact, package_shim_image(artifact, client))
