"""The embedded default store: a private directory on the flow host.

Layout under ``root`` (created ``0700``: graders run as another uid on the same
machine and must not read other students' submissions)::

    root/<key>                        the object's bytes, exactly as written (0600)
    root/.gradeflow/sha256/<key>      its SHA-256 hex digest, recorded at write time
    root/<dir>/.gradeflow-tmp-*       a write in progress (never listed)

Why this shape: the object file *is* the object, so an operator can ``cat`` it
and a ``file://`` URL points at it; digests live in a parallel tree, so no key
can collide with a sidecar (keys may not use the ``.gradeflow`` name).

Every write goes to a temp file in the key's own directory, is fsynced, and is
then published in one step: ``os.link`` for a conditional create (the link fails
with EEXIST when the key exists, and the existing digest decides between
``created=False`` and ``ObjectConflict``), ``os.replace`` for an overwrite. The
link is the commit point; the sidecar is written right after it. A crash between
the two leaves a complete object without a sidecar, which the next reader hashes
and records (tamper detection starts then, not before).

Publishing and reading the (object, sidecar) pair hold an ``flock`` on
``root/.gradeflow/lock`` — exclusive to publish, shared to read — so a reader
never pairs new bytes with an old digest while a mutable pointer is replaced.
The lock is held only around metadata operations, never while copying data.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from gradeflow._errors import (
    ChecksumMismatch,
    ConfigurationError,
    ObjectConflict,
    ObjectNotFound,
    StorageError,
)
from gradeflow.storage._base import ObjectStore, StoredObject

__all__ = ["LocalStore", "validate_key", "validate_prefix"]

_RESERVED = ".gradeflow"
_TMP_PREFIX = ".gradeflow-tmp-"
_CHUNK = 1 << 20
_MAX_KEY_BYTES = 1024  # S3's limit; the stores stay interchangeable
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def validate_key(key: str) -> str:
    """Check that ``key`` is a safe, portable object key and return it.

    The same rules hold for every store so an object can move between them:
    non-empty ``/``-separated segments, no ``.`` or ``..`` segment, no leading
    ``/``, no backslash, NUL or other control character, at most 1024 UTF-8
    bytes, and no segment starting with the reserved ``.gradeflow``.

    Raises:
        ValueError: naming the rule the key broke.
    """
    if not isinstance(key, str) or not key:
        raise ValueError(f"object key must be a non-empty string, got {key!r}")
    _check_chars(key, what="object key")
    for segment in key.split("/"):
        _check_segment(key, segment, what="object key")
    return key


def validate_prefix(prefix: str) -> str:
    """Like :func:`validate_key`, but ``""`` and a trailing ``/`` are allowed."""
    if prefix == "":
        return prefix
    _check_chars(prefix, what="key prefix")
    segments = prefix.split("/")
    if segments[-1] == "":
        segments.pop()
    for segment in segments:
        _check_segment(prefix, segment, what="key prefix")
    return prefix


class LocalStore(ObjectStore):
    """An :class:`ObjectStore` in a private directory; no services needed.

    Args:
        root: the store's directory; created ``0700`` if absent. An existing
            directory we own is tightened to ``0700``; one owned by another user
            and open to group or others is refused.

    Raises:
        ConfigurationError: ``root`` is unusable (not a directory, or shared).
    """

    def __init__(self, root: Path) -> None:
        self._root = Path(root).absolute()
        try:
            self._root.mkdir(parents=True, exist_ok=True, mode=0o700)
            st = self._root.stat()
            if not stat.S_ISDIR(st.st_mode):
                raise ConfigurationError(f"local store root {self._root} is not a directory")
            if st.st_mode & 0o077:
                if st.st_uid != os.geteuid():
                    raise ConfigurationError(
                        f"local store root {self._root} is readable by others and owned by "
                        f"uid {st.st_uid}; graders could read submissions"
                    )
                os.chmod(self._root, 0o700)
            self._meta = self._root / _RESERVED
            self._mkdirs(self._meta / "sha256")
            self._lock_path = self._meta / "lock"
            self._lock_path.touch(mode=0o600, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(f"cannot use local store root {self._root}: {exc}") from exc

    @property
    def root(self) -> Path:
        return self._root

    @property
    def url(self) -> str:
        return self._root.as_uri()

    def put_file(self, key: str, path: Path, *, sha256: str) -> StoredObject:
        _check_digest(sha256)
        dest = self._path(key)
        with Path(path).open("rb") as src:
            tmp, digest, size = self._write_temp(dest, src)
        if digest != sha256:
            _unlink(tmp)
            raise ChecksumMismatch(
                f"{path}: caller said sha256 {sha256}, the file hashes to {digest}; "
                f"nothing stored at {key!r}"
            )
        return self._publish(key, tmp, digest, size, overwrite=False)

    def put_bytes(self, key: str, data: bytes, *, overwrite: bool = False) -> StoredObject:
        dest = self._path(key)
        tmp, digest, size = self._write_temp(dest, _BytesReader(data))
        return self._publish(key, tmp, digest, size, overwrite=overwrite)

    def get_bytes(self, key: str, *, sha256: str | None = None) -> bytes:
        with self._open(key) as (src, recorded):
            data = src.read()
        self._verify(key, hashlib.sha256(data).hexdigest(), given=sha256, recorded=recorded)
        return data

    def get_file(self, key: str, dest: Path, *, sha256: str | None = None) -> StoredObject:
        dest = Path(dest)
        with self._open(key) as (src, recorded):
            fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
            tmp = Path(tmp_name)
            try:
                with os.fdopen(fd, "wb") as out:
                    digest, size = _copy_hashing(src, out)
                    out.flush()
                    os.fsync(out.fileno())
                self._verify(key, digest, given=sha256, recorded=recorded)
                os.replace(tmp, dest)
            except BaseException:
                _unlink(tmp)
                raise
        return StoredObject(key=key, size=size, sha256=digest)

    def head(self, key: str) -> StoredObject | None:
        path = self._path(key)
        with self._lock(fcntl.LOCK_SH):
            try:
                st = path.stat()
            except (FileNotFoundError, NotADirectoryError):
                return None
            if not stat.S_ISREG(st.st_mode):
                return None
            recorded = self._read_sidecar(key)
        if recorded is None:
            with path.open("rb") as src:
                recorded, _ = _copy_hashing(src, None)
            self._recover_sidecar(key, path, st.st_ino, recorded)
        return StoredObject(key=key, size=st.st_size, sha256=recorded)

    def list_keys(self, prefix: str) -> Iterator[str]:
        validate_prefix(prefix)
        # Walk only the deepest directory the prefix names; filter the rest.
        start = self._root / prefix.rpartition("/")[0] if "/" in prefix else self._root
        if not start.is_dir():
            return
        found: list[str] = []
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [d for d in dirnames if not d.startswith(_RESERVED)]
            rel = Path(dirpath).relative_to(self._root).as_posix()
            base = "" if rel == "." else f"{rel}/"
            found.extend(
                f"{base}{name}"
                for name in filenames
                if not name.startswith(_RESERVED) and f"{base}{name}".startswith(prefix)
            )
        yield from sorted(found)

    def presign_get(self, key: str, *, expires_s: int = 3600) -> str:
        """A ``file://`` URL of the object; a local path carries no expiry."""
        return self._path(key).as_uri()

    def presign_put(self, key: str, *, sha256: str | None = None, expires_s: int = 3600) -> str:
        """A ``file://`` URL where the object will live.

        A local path can enforce neither expiry nor digest: a writer through it
        should write a temp file beside it and rename it into place. The digest
        is recorded by the first reader (and checked there when the reader
        passes ``sha256``). Prefer ``put_file``/``put_bytes`` on the flow host.
        """
        if sha256 is not None:
            _check_digest(sha256)
        return self._path(key).as_uri()

    # -- private helpers ---------------------------------------------------

    def _path(self, key: str) -> Path:
        return self._root / validate_key(key)

    def _sidecar(self, key: str) -> Path:
        return self._meta / "sha256" / key

    def _mkdirs(self, directory: Path) -> None:
        """``mkdir -p`` where every directory we create is 0700 (makedirs' mode skips parents)."""
        missing: list[Path] = []
        d = directory
        while not d.is_dir():
            missing.append(d)
            d = d.parent
        for d in reversed(missing):
            try:
                d.mkdir(mode=0o700)
            except FileExistsError:
                if not d.is_dir():
                    raise

    @contextlib.contextmanager
    def _lock(self, how: int) -> Iterator[None]:
        with self._lock_path.open("rb") as f:
            fcntl.flock(f.fileno(), how)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def _write_temp(self, dest: Path, src: BinaryIO | _BytesReader) -> tuple[Path, str, int]:
        """Copy ``src`` into a fsynced temp file beside ``dest``; return it, digest, size."""
        try:
            self._mkdirs(dest.parent)
        except (FileExistsError, NotADirectoryError) as exc:
            raise ObjectConflict(
                f"cannot store {dest.relative_to(self._root)}: a parent of it is an object"
            ) from exc
        fd, name = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=dest.parent)  # mode 0600
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                digest, size = _copy_hashing(src, out)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            _unlink(tmp)
            raise
        return tmp, digest, size

    def _publish(
        self, key: str, tmp: Path, digest: str, size: int, *, overwrite: bool
    ) -> StoredObject:
        dest = self._path(key)
        try:
            with self._lock(fcntl.LOCK_EX):
                if dest.is_dir():
                    raise ObjectConflict(f"cannot store {key!r}: it is a prefix of other keys")
                if overwrite:
                    os.replace(tmp, dest)
                else:
                    try:
                        os.link(tmp, dest)  # fails with EEXIST: never overwrite
                    except FileExistsError:
                        existing = self._read_sidecar(key)
                        if existing is None:  # crashed writer before its sidecar: hash it
                            with dest.open("rb") as src:
                                existing, _ = _copy_hashing(src, None)
                            self._write_sidecar(key, existing)
                        if existing == digest:
                            return StoredObject(key=key, size=size, sha256=digest, created=False)
                        raise ObjectConflict(
                            f"{key!r} already holds a different object "
                            f"(sha256 {existing}, not {digest})"
                        ) from None
                self._write_sidecar(key, digest)
                _fsync_dir(dest.parent)
        finally:
            _unlink(tmp)
        return StoredObject(key=key, size=size, sha256=digest, created=True)

    def _read_sidecar(self, key: str) -> str | None:
        try:
            text = self._sidecar(key).read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return None
        if not _HEX64.match(text):
            raise StorageError(f"recorded digest of {key!r} is corrupt: {text[:80]!r}")
        return text

    def _write_sidecar(self, key: str, digest: str) -> None:
        """Atomically record the digest (caller holds the exclusive lock)."""
        path = self._sidecar(key)
        self._mkdirs(path.parent)
        fd, name = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as out:
                out.write(f"{digest}\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(name, path)
        except BaseException:
            _unlink(Path(name))
            raise
        _fsync_dir(path.parent)

    def _recover_sidecar(self, key: str, path: Path, inode: int, digest: str) -> None:
        """Record a digest a crashed writer never wrote, if the object is still that file."""
        with self._lock(fcntl.LOCK_EX):
            try:
                same = path.stat().st_ino == inode
            except FileNotFoundError:
                return
            if same and self._read_sidecar(key) is None:
                self._write_sidecar(key, digest)

    @contextlib.contextmanager
    def _open(self, key: str) -> Iterator[tuple[BinaryIO, str | None]]:
        """Open the object and read its recorded digest as one consistent pair."""
        path = self._path(key)
        with self._lock(fcntl.LOCK_SH):
            try:
                src = path.open("rb")
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
                raise ObjectNotFound(f"no object at {key!r} in {self.url}") from exc
            recorded = self._read_sidecar(key)
        # The open file keeps naming the bytes we paired with ``recorded`` even if
        # an overwrite replaces the path now (os.replace never writes in place).
        with src:
            yield src, recorded
            if recorded is None:
                src.seek(0)
                digest, _ = _copy_hashing(src, None)
                self._recover_sidecar(key, path, os.fstat(src.fileno()).st_ino, digest)

    def _verify(self, key: str, digest: str, *, given: str | None, recorded: str | None) -> None:
        for label, expected in (("expected", given), ("recorded", recorded)):
            if expected is not None and expected != digest:
                raise ChecksumMismatch(
                    f"{key!r} in {self.url}: {label} sha256 {expected}, read {digest}"
                )


class _BytesReader:
    """The one-method reader ``_copy_hashing`` needs, over bytes without a copy."""

    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        end = len(self._view) if n < 0 else self._pos + n
        chunk = self._view[self._pos : end]
        self._pos += len(chunk)
        return bytes(chunk)


def _copy_hashing(src: BinaryIO | _BytesReader, out: BinaryIO | None) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    while chunk := src.read(_CHUNK):
        h.update(chunk)
        size += len(chunk)
        if out is not None:
            out.write(chunk)
    return h.hexdigest(), size


def _fsync_dir(directory: Path) -> None:
    """Make a rename or link durable: the directory entry lives in the directory."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _check_digest(sha256: str) -> None:
    if not isinstance(sha256, str) or not _HEX64.match(sha256):
        raise ValueError(f"not a lowercase sha256 hex digest: {sha256!r}")


def _check_chars(key: str, *, what: str) -> None:
    if key.startswith("/"):
        raise ValueError(f"{what} must be relative, got {key!r}")
    if "\\" in key:
        raise ValueError(f"{what} must not contain a backslash: {key!r}")
    if _CONTROL.search(key):
        raise ValueError(f"{what} must not contain NUL or control characters: {key!r}")
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{what} is not valid UTF-8 text: {key!r}") from exc
    if len(encoded) > _MAX_KEY_BYTES:
        raise ValueError(f"{what} is longer than {_MAX_KEY_BYTES} bytes: {key[:60]!r}...")


def _check_segment(key: str, segment: str, *, what: str) -> None:
    if segment == "":
        raise ValueError(f"{what} has an empty segment: {key!r}")
    if segment in (".", ".."):
        raise ValueError(f"{what} must not contain {segment!r} segments: {key!r}")
    if segment.startswith(_RESERVED):
        raise ValueError(f"{what} uses the reserved name {_RESERVED!r}: {key!r}")
