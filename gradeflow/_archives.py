"""Unpacking a student's submission without trusting a single byte of it.

A submission is a zip, a tar (plain, gzip, bzip2 or xz compressed) or one
plain file. The kind is decided by magic bytes, never by the file name the
student chose. Every archive member is checked before and while it is
written, and a broken rule rejects the whole submission with
`InvalidSubmission` naming the member and the rule:

    names         relative, no ``..``, no backslash/NUL/control characters,
                  valid UTF-8, each segment at most ``max_name_bytes``,
                  at most ``max_depth`` segments, no duplicates, no member
                  below a path that is a file
    types         regular files and directories only: no symlinks, hardlinks,
                  devices, FIFOs or sockets
    modes         no setuid, setgid or sticky bits (tar modes, zip external
                  attributes)
    sizes         at most ``max_files`` files (and as many directories), at
                  most ``max_total_bytes`` actually written, and at most
                  ``max_ratio`` times the archive's own size once past a
                  small floor (zip and gzip bombs) -- declared sizes are
                  never trusted, bytes are counted as they are written
    zip           no encrypted members, no unsupported compression

Unpacking happens in a fresh directory beside ``dest`` that is renamed into
place only when every member passed; on any failure it is removed, so a
rejected submission leaves nothing behind. The result is read-only for the
grader: files ``0444``, directories ``0555``.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import lzma
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from ._errors import InvalidSubmission

if TYPE_CHECKING:  # the ECS agent imports this module with the stdlib only
    from ._models import Limits

__all__ = ["ArchiveLimits", "UnpackReport", "detect_kind", "unpack_submission"]

ArchiveKind = Literal["zip", "tar", "file"]

_FILE_MODE = 0o444
_DIR_MODE = 0o555
_CHUNK = 64 * 1024
_RATIO_FLOOR_BYTES = 1024 * 1024
"""Below this many unpacked bytes the ratio rule does not apply: a 2 KB zip of
one highly repetitive 300 KB text file is a submission, not a bomb."""
_SPECIAL_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX


@dataclass(frozen=True)
class ArchiveLimits:
    """What an unpacked submission may amount to.

    Args:
        max_total_bytes: bytes actually written, summed over all files; also
            the largest archive accepted.
        max_files: regular files (directories are limited to as many again).
        max_ratio: unpacked bytes per archive byte before it is a bomb.
        max_depth: path segments of one member.
        max_name_bytes: UTF-8 bytes of one path segment (NAME_MAX).
    """

    max_total_bytes: int
    max_files: int
    max_ratio: float = 100
    max_depth: int = 16
    max_name_bytes: int = 255

    @classmethod
    def from_limits(cls, limits: Limits) -> ArchiveLimits:
        """The archive limits an assignment's `Limits` imply."""
        return cls(
            max_total_bytes=limits.submission_max_mb * 1024 * 1024,
            max_files=limits.submission_max_files,
        )


@dataclass
class UnpackReport:
    """What `unpack_submission` placed in ``dest``."""

    kind: ArchiveKind
    files: int
    total_bytes: int


def detect_kind(path: Path) -> ArchiveKind:
    """Decide by magic bytes whether ``path`` is a zip, a tar or a plain file.

    A compressed file (gzip, bzip2, xz) is a tar only if what it decompresses
    to starts with a ustar header; otherwise -- say ``data.csv.gz`` -- it is a
    plain file and is handed to the grader compressed, as submitted. Old
    pre-POSIX (v7) tars have no magic and are treated as plain files.
    """
    with path.open("rb") as f:
        head = f.read(512)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if _is_ustar(head):
        return "tar"
    inner = _decompressed_head(path, head)
    if inner is not None and _is_ustar(inner):
        return "tar"
    return "file"


def unpack_submission(
    archive: Path, dest: Path, *, filename: str, limits: ArchiveLimits
) -> UnpackReport:
    """Validate and unpack ``archive`` into the new directory ``dest``.

    Args:
        archive: the submission as uploaded.
        dest: must not exist yet (or be an empty directory); its parent must.
        filename: the name the student gave the submission; a plain-file
            submission is placed as ``dest/<filename>``, so it must be a safe
            basename.
        limits: what the unpacked submission may amount to.

    Returns:
        What was unpacked.

    Raises:
        InvalidSubmission: the submission broke a rule; ``dest`` was not created.
    """
    kind = detect_kind(archive)
    if kind == "file":
        _check_segment(filename, "submission file name", limits)
    archive_size = archive.stat().st_size
    if archive_size > limits.max_total_bytes:
        raise InvalidSubmission(
            f"submission is {archive_size} bytes, over the limit of {limits.max_total_bytes}"
        )
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    try:
        writer = _Writer(staging, limits, archive_size)
        if kind == "zip":
            _unpack_zip(archive, writer)
        elif kind == "tar":
            _unpack_tar(archive, writer)
        else:
            with archive.open("rb") as src:
                writer.add_file(filename, src)
        writer.seal()
        staging.replace(dest)
    except BaseException:
        _remove_tree(staging)
        raise
    return UnpackReport(kind=kind, files=writer.files, total_bytes=writer.total_bytes)


# -- formats -------------------------------------------------------------------


def _unpack_zip(archive: Path, writer: _Writer) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            writer.check_count(sum(not i.is_dir() for i in infos), len(infos))
            for info in infos:
                name = info.filename
                if info.flag_bits & 0x1:
                    raise InvalidSubmission(f"{name!r}: encrypted zip members are not accepted")
                mode = info.external_attr >> 16
                is_dir = info.is_dir() or stat.S_ISDIR(mode)
                if mode:
                    _check_mode(name, mode, is_dir=is_dir)
                if is_dir:
                    writer.add_dir(name)
                    continue
                with zf.open(info) as src:
                    writer.add_file(name, src)
    except InvalidSubmission:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        raise InvalidSubmission(f"not a valid zip archive: {exc}") from exc
    except (OSError, ValueError, lzma.LZMAError) as exc:
        raise InvalidSubmission(f"not a valid zip archive: {exc}") from exc


def _unpack_tar(archive: Path, writer: _Writer) -> None:
    try:
        # Stream mode ("r|*"): members are read in order and never seeked
        # over, so a compressed bomb is only ever decompressed as far as the
        # bytes we count.
        with tarfile.open(archive, mode="r|*") as tf:
            for member in tf:
                name = member.name
                if member.issym():
                    raise InvalidSubmission(f"{name!r}: symbolic links are not accepted")
                if member.islnk():
                    raise InvalidSubmission(f"{name!r}: hard links are not accepted")
                if member.ischr() or member.isblk():
                    raise InvalidSubmission(f"{name!r}: device files are not accepted")
                if member.isfifo():
                    raise InvalidSubmission(f"{name!r}: FIFOs are not accepted")
                if not (member.isreg() or member.isdir()):
                    raise InvalidSubmission(
                        f"{name!r}: tar member type {member.type!r} is not accepted"
                    )
                _check_mode(name, member.mode, is_dir=member.isdir())
                if member.isdir():
                    writer.add_dir(name)
                    continue
                src = tf.extractfile(member)
                if src is None:  # pragma: no cover - isreg() members always have data
                    raise InvalidSubmission(f"{name!r}: tar member has no data")
                with src:
                    writer.add_file(name, src)
    except InvalidSubmission:
        raise
    except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError, ValueError) as exc:
        raise InvalidSubmission(f"not a valid tar archive: {exc}") from exc


class _Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


# -- the checked writer --------------------------------------------------------


class _Writer:
    """Writes members below ``root``, enforcing every rule as it goes."""

    def __init__(self, root: Path, limits: ArchiveLimits, archive_size: int) -> None:
        self.root = root
        self.limits = limits
        self.max_bytes = min(
            limits.max_total_bytes,
            max(int(archive_size * limits.max_ratio), _RATIO_FLOOR_BYTES),
        )
        self.files = 0
        self.dirs = 0
        self.total_bytes = 0
        self._seen: set[tuple[str, ...]] = set()
        self._file_paths: set[tuple[str, ...]] = set()
        self._dir_paths: set[tuple[str, ...]] = {()}

    def check_count(self, files: int, entries: int) -> None:
        """Reject early when a listing already shows too many members."""
        if files > self.limits.max_files:
            raise InvalidSubmission(
                f"archive lists {files} files, over the limit of {self.limits.max_files}"
            )
        if entries - files > self.limits.max_files:
            raise InvalidSubmission(
                f"archive lists {entries - files} directories, over the limit of "
                f"{self.limits.max_files}"
            )

    def add_dir(self, name: str) -> None:
        parts = self._claim(name, is_dir=True)
        if parts:
            self._make_parents(parts, name, include_self=True)

    def add_file(self, name: str, src: _Readable) -> None:
        parts = self._claim(name, is_dir=False)
        if not parts:
            raise InvalidSubmission(f"{name!r}: a file member needs a name")
        self.files += 1
        if self.files > self.limits.max_files:
            raise InvalidSubmission(
                f"{name!r}: more than {self.limits.max_files} files (file count limit)"
            )
        self._make_parents(parts, name, include_self=False)
        self._file_paths.add(parts)
        path = self.root.joinpath(*parts)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(path, flags, 0o600)
        with os.fdopen(fd, "wb") as out:
            while chunk := src.read(_CHUNK):
                self.total_bytes += len(chunk)
                self._check_budget(name)
                out.write(chunk)
        os.chmod(path, _FILE_MODE)

    def seal(self) -> None:
        """Make every directory read-only, deepest first, ``root`` last."""
        for parts in sorted(self._dir_paths, key=len, reverse=True):
            os.chmod(self.root.joinpath(*parts), _DIR_MODE)

    def _check_budget(self, name: str) -> None:
        if self.total_bytes <= self.max_bytes:
            return
        if self.total_bytes > self.limits.max_total_bytes:
            raise InvalidSubmission(
                f"{name!r}: unpacked size exceeds the limit of {self.limits.max_total_bytes} bytes"
            )
        raise InvalidSubmission(
            f"{name!r}: unpacked size exceeds {self.limits.max_ratio:g} times the archive's "
            f"size (compression ratio limit; a zip or gzip bomb?)"
        )

    def _claim(self, name: str, *, is_dir: bool) -> tuple[str, ...]:
        parts = _split_name(name, self.limits)
        if not parts:
            return parts
        if (
            parts in self._seen
            or parts in self._file_paths
            or (not is_dir and parts in self._dir_paths)
        ):
            raise InvalidSubmission(f"{name!r}: duplicate member name")
        self._seen.add(parts)
        for i in range(1, len(parts)):
            if parts[:i] in self._file_paths:
                raise InvalidSubmission(
                    f"{name!r}: its parent {'/'.join(parts[:i])!r} is a file (path conflict)"
                )
        return parts

    def _make_parents(self, parts: tuple[str, ...], name: str, *, include_self: bool) -> None:
        end = len(parts) if include_self else len(parts) - 1
        for i in range(1, end + 1):
            prefix = parts[:i]
            if prefix in self._dir_paths:
                continue
            self.dirs += 1
            if self.dirs > self.limits.max_files:
                raise InvalidSubmission(
                    f"{name!r}: more than {self.limits.max_files} directories "
                    f"(directory count limit)"
                )
            os.mkdir(self.root.joinpath(*prefix), 0o700)
            self._dir_paths.add(prefix)


# -- rules on names and modes --------------------------------------------------


def _split_name(name: str, limits: ArchiveLimits) -> tuple[str, ...]:
    """The checked path segments of a member name; ``.`` and empty ones dropped."""
    if name.startswith("/"):
        raise InvalidSubmission(f"{name!r}: absolute paths are not accepted")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    for part in parts:
        _check_segment(part, repr(name), limits)
    if len(parts) > limits.max_depth:
        raise InvalidSubmission(
            f"{name!r}: {len(parts)} path segments, deeper than the limit of {limits.max_depth}"
        )
    return parts


def _check_segment(part: str, what: str, limits: ArchiveLimits) -> None:
    if part in ("", ".", ".."):
        rule = "'..' segments are not accepted" if part == ".." else "not a file name"
        raise InvalidSubmission(f"{what}: {rule}")
    if "/" in part:
        raise InvalidSubmission(f"{what}: must be a plain file name, without '/'")
    if "\\" in part:
        raise InvalidSubmission(f"{what}: backslashes in names are not accepted")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in part):
        raise InvalidSubmission(f"{what}: NUL and control characters in names are not accepted")
    try:
        size = len(part.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidSubmission(f"{what}: name is not valid UTF-8") from None
    if size > limits.max_name_bytes:
        raise InvalidSubmission(
            f"{what}: a name segment of {size} bytes is longer than the limit of "
            f"{limits.max_name_bytes}"
        )


def _check_mode(name: str, mode: int, *, is_dir: bool) -> None:
    kind = stat.S_IFMT(mode)
    if kind == stat.S_IFLNK:
        raise InvalidSubmission(f"{name!r}: symbolic links are not accepted")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise InvalidSubmission(
            f"{name!r}: special files (devices, FIFOs, sockets) are not accepted"
        )
    if kind == stat.S_IFDIR and not is_dir:
        raise InvalidSubmission(f"{name!r}: directory mode on a file member")
    if mode & _SPECIAL_BITS:
        raise InvalidSubmission(f"{name!r}: setuid, setgid and sticky bits are not accepted")


# -- helpers -------------------------------------------------------------------


def _is_ustar(head: bytes) -> bool:
    return head[257:262] == b"ustar"


def _decompressed_head(path: Path, head: bytes) -> bytes | None:
    """The first 512 decompressed bytes of a gzip/bzip2/xz file, else None."""
    try:
        if head.startswith(b"\x1f\x8b"):
            with gzip.open(path, "rb") as gz:
                return gz.read(512)
        if head.startswith(b"BZh"):
            with bz2.open(path, "rb") as bz:
                return bz.read(512)
        if head.startswith(b"\xfd7zXZ\x00"):
            with lzma.open(path, "rb") as xz:
                return xz.read(512)
    except (OSError, EOFError, lzma.LZMAError, zlib.error):
        return None
    return None


def _remove_tree(root: Path) -> None:
    """Remove a partly written tree, whose directories may already be read-only."""
    with contextlib.suppress(OSError):
        os.chmod(root, 0o700)
    for dirpath, _dirnames, _filenames in os.walk(root):
        with contextlib.suppress(OSError):
            os.chmod(dirpath, 0o700)
    shutil.rmtree(root, ignore_errors=True)
