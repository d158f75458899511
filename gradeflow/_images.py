"""Grader images for the docker backend, built without any registry.

There is no Docker Hub on a grading host, so nothing here pulls:

- :func:`build_base_image` makes ``gradeflow/base-python:bookworm`` from
  scratch: ``debootstrap --variant=minbase --include=python3`` into a
  temporary directory, from the Debian mirror this machine's apt already
  uses, then ``docker import`` of the tarred rootfs. The example graders
  (and throwaway test assignments) are ``FROM`` it.
- :func:`build_assignment_image` builds an assignment's ``Dockerfile`` and
  tags it as its ``[grader] image``, with host networking so ``RUN`` steps
  work on an engine started with ``--bridge=none``.

Both take a docker SDK client, so callers choose the engine; both translate
docker and subprocess failures into gradeflow errors.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._assignment import load_assignment
from ._errors import ConfigurationError, InfraError

__all__ = [
    "BASE_IMAGE",
    "BuiltImage",
    "apt_mirror",
    "build_assignment_image",
    "build_base_image",
    "build_image",
    "image_exists",
]

BASE_IMAGE = "gradeflow/base-python:bookworm"
_SUITE = "bookworm"
_DEFAULT_MIRROR = "http://deb.debian.org/debian"
_BASE_CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["python3"]',
)
_SOURCES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))


@dataclass(frozen=True, slots=True)
class BuiltImage:
    """An image that now exists on the engine; ``built`` is False for a cache hit."""

    tag: str
    image_id: str
    built: bool


def image_exists(client: Any, tag: str) -> bool:
    """Whether the engine has ``tag`` (errors other than "not found" are raised as InfraError)."""
    import docker.errors

    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    except docker.errors.DockerException as exc:
        raise InfraError(f"cannot inspect image {tag}: {exc}") from exc
    return True


def apt_mirror(sources: tuple[Path, ...] = _SOURCES) -> str:
    """The Debian mirror apt on this machine already trusts (deb822 ``URIs:`` or one-line).

    Reusing apt's own mirror keeps the build working behind the same proxy or
    local mirror the machine was set up with.
    """
    for path in sources:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("URIs:"):
                for uri in line.split()[1:]:
                    if not uri.rstrip("/").endswith("-security"):
                        return uri.rstrip("/")
            match = re.match(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+\S+", line)
            if match and not match.group(1).rstrip("/").endswith("-security"):
                return match.group(1).rstrip("/")
    return _DEFAULT_MIRROR


def build_base_image(
    client: Any,
    *,
    tag: str = BASE_IMAGE,
    mirror: str | None = None,
    rebuild: bool = False,
    debootstrap: str = "debootstrap",
) -> BuiltImage:
    """Build the offline Python base image, unless it exists (or ``rebuild``).

    ``python3`` (not ``python3-minimal``): graders expect the full standard
    library (json, unittest, subprocess with its encodings).

    Raises:
        ConfigurationError: debootstrap is missing or we are not root.
        InfraError: debootstrap or the import failed.
    """
    if not rebuild and image_exists(client, tag):
        return BuiltImage(tag, str(client.images.get(tag).id), built=False)
    tool = shutil.which(debootstrap)
    if tool is None:
        raise ConfigurationError(f"{debootstrap} is not installed (apt-get install debootstrap)")
    if os.geteuid() != 0:
        raise ConfigurationError("building the base image needs root (debootstrap chroots)")
    source = mirror or apt_mirror()
    with tempfile.TemporaryDirectory(prefix="gradeflow-base-") as scratch:
        rootfs = Path(scratch) / "rootfs"
        command = [tool, "--variant=minbase", "--include=python3", _SUITE, str(rootfs), source]
        run = subprocess.run(command, capture_output=True, text=True, check=False)
        if run.returncode != 0:
            tail = (run.stdout + run.stderr)[-2000:]
            raise InfraError(f"{' '.join(command)} failed ({run.returncode}): {tail}")
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            shutil.rmtree(rootfs / cache, ignore_errors=True)
        tarball = Path(scratch) / "rootfs.tar"
        # GNU tar keeps numeric owners, device nodes and xattrs exactly as debootstrap made them.
        packed = subprocess.run(
            ["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tarball), "."],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if packed.returncode != 0:
            raise InfraError(f"tar of the base rootfs failed: {packed.stderr[-1000:]}")
        image_id = _import(client, tarball, tag)
    return BuiltImage(tag, image_id, built=True)


def _import(client: Any, tarball: Path, tag: str) -> str:
    import docker.errors

    repository, _, version = tag.rpartition(":")
    try:
        # From the file (Content-Length), not a stream: the SDK's "chunked" stream upload
        # sends a file object unchunked, which the engine rejects.
        client.api.import_image_from_file(
            str(tarball), repository=repository, tag=version, changes=list(_BASE_CHANGES)
        )
        return str(client.images.get(tag).id)
    except docker.errors.DockerException as exc:
        raise InfraError(f"docker import of {tag} failed: {exc}") from exc


def build_assignment_image(
    client: Any, assignment_dir: Path, *, rebuild: bool = False
) -> BuiltImage:
    """Build ``assignment_dir/Dockerfile`` as the assignment's ``[grader] image``.

    Always rebuilt unless unchanged: the engine's layer cache makes an
    unchanged grader a no-op, and a stale tag would grade with an old grader.
    ``rebuild`` disables that cache.

    Raises:
        ConfigurationError: no image declared, no Dockerfile, or its base is missing.
        InfraError: the build failed.
    """
    assignment = load_assignment(assignment_dir)
    tag = assignment.grader.image
    if not tag:
        raise ConfigurationError(f"{assignment.root}: [grader] image is not set")
    if not (assignment.root / "Dockerfile").is_file():
        raise ConfigurationError(f"{assignment.root}: no Dockerfile to build {tag} from")
    return build_image(
        client,
        tag,
        what=tag,
        rebuild=rebuild,
        labels={"org.gradeflow.assignment": assignment.id},
        path=str(assignment.root),
    )


def build_image(
    client: Any,
    tag: str,
    *,
    what: str,
    rebuild: bool,
    labels: dict[str, str],
    base_image: str = BASE_IMAGE,
    **source: Any,
) -> BuiltImage:
    """Build ``tag`` from ``source`` (``path=`` or ``fileobj=`` + ``custom_context=``).

    Host networking, since the engine here has no bridge and a Dockerfile may
    install packages; the engine's layer cache unless ``rebuild``. Build
    failures carry the end of the build log, and a hint when the base image
    is what is missing.

    Raises:
        InfraError: the build failed; ``what`` names it in the message.
    """
    import docker.errors

    try:
        image, _ = client.images.build(
            tag=tag,
            rm=True,
            forcerm=True,
            nocache=rebuild,
            network_mode="host",
            labels=labels,
            **source,
        )
    except docker.errors.BuildError as exc:
        log = "".join(str(part.get("stream", part.get("error", ""))) for part in exc.build_log)
        hint = ""
        if base_image == BASE_IMAGE and (BASE_IMAGE in log or "pull access denied" in log):
            hint = f" (is {BASE_IMAGE} built? run `gradeflow image base`)"
        raise InfraError(f"building {what} failed{hint}: {exc.msg}\n{log[-2000:]}") from exc
    except docker.errors.DockerException as exc:
        raise InfraError(f"building {what} failed: {exc}") from exc
    return BuiltImage(tag, str(image.id), built=True)
