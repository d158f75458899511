"""The one storage surface every backend and flow talks to.

Submissions and results are never lost and never silently replaced: every
write is a conditional create (an identical object already there is fine, a
different one is an ``ObjectConflict``), and every read can be checked against
the SHA-256 recorded when the object was written.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ObjectStore", "StoredObject"]


@dataclass(frozen=True, slots=True)
class StoredObject:
    """An object as the store holds it.

    Attributes:
        key: its key.
        size: bytes.
        sha256: hex digest of the whole object, recorded at write time.
        created: True when this call wrote it, False when an identical one was there.
    """

    key: str
    size: int
    sha256: str
    created: bool = False


class ObjectStore(abc.ABC):
    """A bucket-like key/value store of immutable objects."""

    @abc.abstractmethod
    def put_file(self, key: str, path: Path, *, sha256: str) -> StoredObject:
        """Create ``key`` from a file whose digest the caller computed.

        Idempotent: if ``key`` already holds an object with the same digest it is
        left alone (``created=False``). Large files go up in parts.

        Raises:
            ObjectConflict: ``key`` holds a different object.
            ChecksumMismatch: the store received bytes that do not match ``sha256``.
        """

    @abc.abstractmethod
    def put_bytes(self, key: str, data: bytes, *, overwrite: bool = False) -> StoredObject:
        """Create ``key`` from bytes; ``overwrite`` only for mutable pointers such as ``latest``."""

    @abc.abstractmethod
    def get_bytes(self, key: str, *, sha256: str | None = None) -> bytes:
        """Read a whole (small) object, verifying the digest when given or recorded."""

    @abc.abstractmethod
    def get_file(self, key: str, dest: Path, *, sha256: str | None = None) -> StoredObject:
        """Download to ``dest`` atomically and verify its digest (given or recorded)."""

    @abc.abstractmethod
    def head(self, key: str) -> StoredObject | None:
        """The object's size and recorded digest, or None when absent."""

    @abc.abstractmethod
    def list_keys(self, prefix: str) -> Iterator[str]:
        """Every key under ``prefix``, in lexicographic order."""

    @abc.abstractmethod
    def presign_get(self, key: str, *, expires_s: int = 3600) -> str:
        """A URL that lets a credential-less reader GET the object."""

    @abc.abstractmethod
    def presign_put(self, key: str, *, sha256: str | None = None, expires_s: int = 3600) -> str:
        """A URL that lets a credential-less writer PUT ``key`` (digest enforced when given)."""

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """Where this store lives, for logs and results (``file:///...``, ``s3://bucket/prefix``)."""
