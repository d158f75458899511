"""Turn settings into the store and launchers a run uses."""

from __future__ import annotations

from ._errors import ConfigurationError
from ._models import Backend
from ._settings import Settings
from .launchers import Launcher, LocalLauncher
from .storage import LocalStore, ObjectStore, S3Store

__all__ = ["launcher_for", "open_store"]


def open_store(settings: Settings) -> ObjectStore:
    """The configured object store: a local directory by default, or S3."""
    if settings.store == "local":
        return LocalStore(settings.store_dir)
    if settings.s3_block:
        return S3Store.from_blocks(settings.s3_block)
    if not settings.s3_bucket:
        raise ConfigurationError(
            "GRADEFLOW_STORE=s3 needs GRADEFLOW_S3_BUCKET or GRADEFLOW_S3_BLOCK"
        )
    import boto3

    client = boto3.client("s3", endpoint_url=settings.s3_endpoint_url)
    return S3Store(
        settings.s3_bucket,
        prefix=settings.s3_prefix,
        client=client,
        multipart_threshold=settings.multipart_threshold_mb << 20,
    )


def launcher_for(backend: Backend, settings: Settings) -> Launcher:
    """The launcher of ``backend``; backends that are not installed say so."""
    if backend == "local":
        return LocalLauncher(settings.runs_dir, keep_runs=settings.keep_runs)
    if backend == "docker":
        from .launchers._docker import DockerLauncher  # the docker SDK only when asked for

        return DockerLauncher()
    if backend == "ecs":
        from .launchers._ecs import launcher_from_settings  # boto3 ECS clients only when asked for

        return launcher_from_settings(settings, open_store(settings))
    raise ConfigurationError(f"the {backend!r} backend is not available in this build")
