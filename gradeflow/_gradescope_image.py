"""A Docker build context that turns a Gradescope ``autograder.zip`` into a grader image.

Gradescope builds one image per assignment from the instructor's zip: the
zip's files go to ``/autograder/source``, ``setup.sh`` runs there once as
root (installing what the tests need), and ``run_autograder`` is copied to
``/autograder/run_autograder``, which then runs once per submission. Building
the same way lets an existing autograder run unchanged under the
``gradescope`` layout (see ``gradeflow._layouts``): the image's CMD is
``/autograder/run_autograder``, and uid 65534 -- the user the shim runs
graders as -- owns ``/autograder/source`` and ``/autograder/results``,
because Gradescope's autograders run as root there and often write both.

The zip is checked with the submission unpacker's rules first (no ``..``,
absolute paths, links, special files, setuid bits, bombs): an autograder
from a colleague or a course archive is input too, and its paths end up in a
build context.
"""

from __future__ import annotations

import io
import re
import stat
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from ._archives import ArchiveLimits, unpack_submission
from ._errors import ConfigurationError, InvalidSubmission
from ._images import BuiltImage, build_image

__all__ = [
    "AUTOGRADER_LIMITS",
    "build_gradescope_image",
    "dockerfile",
    "gradescope_build_context",
]

AUTOGRADER_LIMITS = ArchiveLimits(max_total_bytes=512 << 20, max_files=20_000)
"""Autograders may carry data sets and libraries: more room than a submission."""

REQUIRED_FILES = ("setup.sh", "run_autograder")
_IMAGE_REFERENCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$")


def dockerfile(base_image: str) -> str:
    """The Dockerfile of a Gradescope-style image on ``base_image``.

    ``ENTRYPOINT []`` clears any entrypoint the base image has, so the CMD is
    the whole grader command, as on Gradescope (and what the shim execs).
    """
    if not _IMAGE_REFERENCE.match(base_image):
        raise ConfigurationError(f"not an image reference: {base_image!r}")
    return (
        "# Built by gradeflow from a Gradescope autograder.zip, the way Gradescope builds it.\n"
        f"FROM {base_image}\n"
        "COPY source/ /autograder/source/\n"
        "# Gradescope runs setup.sh once, as root, in /autograder/source.\n"
        "RUN cd /autograder/source && bash ./setup.sh\n"
        "# The grader user (65534, as the shim runs it) owns what autograders write.\n"
        "RUN cp /autograder/source/run_autograder /autograder/run_autograder \\\n"
        "    && chmod 0755 /autograder/run_autograder \\\n"
        "    && mkdir -p /autograder/results \\\n"
        "    && chown -R 65534:65534 /autograder/source /autograder/results\n"
        "WORKDIR /autograder\n"
        'LABEL org.gradeflow.layout="gradescope" org.gradeflow.grader-dir="/autograder/source"\n'
        "ENTRYPOINT []\n"
        'CMD ["/autograder/run_autograder"]\n'
    )


def gradescope_build_context(autograder_zip: Path, base_image: str) -> bytes:
    """An uncompressed tar build context: the Dockerfile and the zip's files under ``source/``.

    Args:
        autograder_zip: the zip as uploaded to Gradescope; ``setup.sh`` and
            ``run_autograder`` at its top level.
        base_image: the image to build on (Gradescope's own are Ubuntu with
            bash; any image with bash, cp, chmod and chown works).

    Returns:
        The context, ready for ``docker build -`` or the docker SDK's
        ``images.build(fileobj=..., custom_context=True)``. Reproducible:
        members sorted, owned by root, timestamps zero.

    Raises:
        ConfigurationError: not a zip, a member breaks the unpacker's rules,
            a required file is missing, or ``base_image`` is not a reference.
    """
    recipe = dockerfile(base_image)
    with tempfile.TemporaryDirectory(prefix="gradeflow-autograder-") as scratch:
        source = Path(scratch) / "source"
        _unpack(autograder_zip, source)
        missing = [name for name in REQUIRED_FILES if not (source / name).is_file()]
        if missing:
            raise ConfigurationError(
                f"{autograder_zip}: no {' or '.join(missing)} at the top of the zip "
                "(Gradescope needs both there, not inside a folder)"
            )
        executable = _executable_members(autograder_zip)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            _add_bytes(tar, "Dockerfile", recipe.encode(), 0o644)
            _add_dir(tar, "source")
            for path in sorted(source.rglob("*")):
                name = path.relative_to(source).as_posix()
                if path.is_dir():
                    _add_dir(tar, f"source/{name}")
                else:
                    mode = 0o755 if name in executable or name in REQUIRED_FILES else 0o644
                    _add_bytes(tar, f"source/{name}", path.read_bytes(), mode)
        return buffer.getvalue()


def build_gradescope_image(
    client: Any, autograder_zip: Path, *, tag: str, base_image: str, rebuild: bool = False
) -> BuiltImage:
    """Build ``autograder_zip`` the Gradescope way on ``base_image`` and tag it ``tag``.

    Host networking, as for assignment images: ``setup.sh`` may install
    packages on an engine started with ``--bridge=none``. Nothing is pulled
    unless the base image is missing.

    Raises:
        ConfigurationError: a bad zip or reference (see `gradescope_build_context`).
        InfraError: the build failed (``setup.sh`` exited non-zero, no base image).
    """
    if not _IMAGE_REFERENCE.match(tag):
        raise ConfigurationError(f"not an image tag: {tag!r}")
    context = gradescope_build_context(autograder_zip, base_image)
    return build_image(
        client,
        tag,
        what=f"{tag} from {autograder_zip} on {base_image}",
        rebuild=rebuild,
        labels={"org.gradeflow.autograder": autograder_zip.name},
        base_image=base_image,
        fileobj=io.BytesIO(context),
        custom_context=True,
    )


def _unpack(autograder_zip: Path, dest: Path) -> None:
    if not autograder_zip.is_file() or not zipfile.is_zipfile(autograder_zip):
        raise ConfigurationError(f"{autograder_zip}: not a zip file")
    try:
        unpack_submission(autograder_zip, dest, filename="autograder.zip", limits=AUTOGRADER_LIMITS)
    except InvalidSubmission as exc:
        raise ConfigurationError(f"{autograder_zip}: unsafe autograder zip: {exc}") from exc


def _executable_members(autograder_zip: Path) -> set[str]:
    """Members whose Unix mode (if the zip recorded one) has an execute bit."""
    with zipfile.ZipFile(autograder_zip) as archive:
        return {
            info.filename.rstrip("/")
            for info in archive.infolist()
            if stat.S_IMODE(info.external_attr >> 16) & 0o111 and not info.is_dir()
        }


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    tar.addfile(info)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))
