"""The agent's image: the base Python image plus four stdlib-only modules.

``gradeflow/agent.py`` imports only the standard library, the real safe
unpacker (``_archives.py``, which needs ``_errors.py``) and the results
reader the local backend uses (``_result_files.py``), so the image holds
exactly those and an empty ``gradeflow/__init__.py`` in the interpreter's
dist-packages -- no pip, no pydantic, nothing else from the flow host. The
tag is the sha256 of those files, so a changed agent is a new tag and a task
definition never silently runs an older one.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path
from typing import Any

from ._errors import ConfigurationError, InfraError

__all__ = ["AGENT_IMAGE_REPOSITORY", "AGENT_MODULES", "agent_image_tag", "build_agent_image"]

AGENT_IMAGE_REPOSITORY = "gradeflow/agent"
AGENT_MODULES = ("agent.py", "_archives.py", "_errors.py", "_result_files.py")
_BASE = "gradeflow/base-python:bookworm"
_SITE = "/usr/lib/python3/dist-packages/gradeflow"
_DOCKERFILE = f"""FROM {_BASE}
COPY gradeflow/ {_SITE}/
USER 0
ENTRYPOINT ["python3", "-I", "-m", "gradeflow.agent"]
""".encode()


def _files() -> dict[str, bytes]:
    package = Path(__file__).resolve().parent
    files = {"gradeflow/__init__.py": b""}
    for name in AGENT_MODULES:
        files[f"gradeflow/{name}"] = (package / name).read_bytes()
    return files


def agent_image_tag() -> str:
    """``gradeflow/agent:<16 hex>`` from the modules' bytes and the Dockerfile."""
    digest = hashlib.sha256(_DOCKERFILE)
    for name, data in sorted(_files().items()):
        digest.update(name.encode() + b"\0" + data + b"\0")
    return f"{AGENT_IMAGE_REPOSITORY}:{digest.hexdigest()[:16]}"


def build_agent_image(client: Any, *, rebuild: bool = False) -> tuple[str, bool]:
    """Build (or find) the agent image with a docker SDK client; returns (tag, built)."""
    import docker.errors

    tag = agent_image_tag()
    try:
        client.images.get(_BASE)
    except docker.errors.ImageNotFound:
        raise ConfigurationError(
            f"{_BASE} is missing: build it first with `gradeflow image base`"
        ) from None
    if not rebuild:
        try:
            client.images.get(tag)
            return tag, False
        except docker.errors.ImageNotFound:
            pass
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, data in {"Dockerfile": _DOCKERFILE, **_files()}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    try:
        client.images.build(fileobj=context, custom_context=True, tag=tag, rm=True,
                            labels={"org.gradeflow.role": "agent"})  # fmt: skip
    except docker.errors.DockerException as exc:
        raise InfraError(f"building the agent image {tag} failed: {exc}") from exc
    return tag, True
