"""Package the shim into a ``FROM scratch`` image, the ``shim-init`` image of ECS tasks.

Tagged by the binary's digest, so an image is built once per shim and a tag
can never point at a different binary.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

from ._errors import InfraError
from ._shim_build import ShimArtifact

__all__ = ["SHIM_IMAGE_REPOSITORY", "docker_client_or_none", "package_shim_image", "shim_image_tag"]

SHIM_IMAGE_REPOSITORY = "gradeflow/shim"
_DOCKERFILE = b"""FROM scratch
COPY gradeflow-shim /gradeflow-shim
ENTRYPOINT ["/gradeflow-shim"]
"""


def docker_client_or_none(timeout_s: int = 3) -> Any:
    """A docker SDK client when an engine answers, else None (no engine is not an error here)."""
    try:
        import docker

        client = docker.from_env(timeout=timeout_s)
        client.ping()
    except Exception:
        return None
    return client


def shim_image_tag(artifact: ShimArtifact) -> str:
    return f"{SHIM_IMAGE_REPOSITORY}:{artifact.sha256[:16]}"


def package_shim_image(artifact: ShimArtifact, client: Any) -> str:
    """Build (or find) the scratch image for ``artifact`` with a docker SDK client."""
    import docker.errors

    tag = shim_image_tag(artifact)
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        _add(tar, "Dockerfile", _DOCKERFILE, 0o644)
        _add(tar, "gradeflow-shim", Path(artifact.path).read_bytes(), 0o555)
    context.seek(0)
    try:
        client.images.build(
            fileobj=context,
            custom_context=True,
            tag=tag,
            rm=True,
            labels={"org.gradeflow.shim.sha256": artifact.sha256},
        )
    except docker.errors.DockerException as exc:
        raise InfraError(f"building the shim image {tag} failed: {exc}") from exc
    return tag


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))
