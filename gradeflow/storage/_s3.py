"""The S3 store: any S3-protocol bucket (AWS, MinIO, moto) through boto3.

How the contract of :class:`ObjectStore` maps onto S3:

- **Never overwrite.** Creates send ``If-None-Match: *`` (``PutObject`` and
  ``CompleteMultipartUpload``). On ``412 PreconditionFailed`` the existing
  object's recorded digest decides: identical is ``created=False``, different
  is ``ObjectConflict``. Multipart uploads also look first, so a retry does not
  re-send a large file that is already there.
- **Checksums end to end.** The caller's whole-file SHA-256 is checked against
  the bytes we actually send (hashed as they are read), stored as user metadata
  ``x-amz-meta-sha256``, and sent as ``x-amz-checksum-sha256`` so S3 itself
  rejects a body corrupted in transit (``BadDigest``). Multipart parts each
  carry their own SHA-256; S3's object checksum is then a composite
  (``<b64>-<parts>``), which is why the whole-file digest lives in metadata.
- **Verified reads.** Downloads are hashed and compared with the digest the
  caller gives and the one recorded (metadata, else a full-object
  ``ChecksumSHA256`` that S3 reports for objects uploaded with one, e.g.
  through :meth:`S3Store.presign_put`).
- **Errors by code.** botocore ``ClientError`` is translated by its error code
  into the gradeflow tree; a missing bucket is a ``ConfigurationError``.

This module imports boto3/botocore only; ``S3Store.from_blocks`` imports
prefect-aws lazily so the core package never imports Prefect.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, FlexibleChecksumError

from gradeflow._errors import (
    ChecksumMismatch,
    ConfigurationError,
    GradeflowError,
    ObjectConflict,
    ObjectNotFound,
    StorageError,
)
from gradeflow.storage._base import ObjectStore, StoredObject
from gradeflow.storage._local import _check_digest, validate_key, validate_prefix

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["S3Store"]

MiB = 1024 * 1024
_MIN_PART = 5 * MiB  # S3's minimum for every part but the last
_MAX_PARTS = 10_000
_MAX_PRESIGN_S = 7 * 24 * 3600  # SigV4 presigned URLs live at most a week
_CHUNK = MiB
_META = "sha256"

_NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound"})
_NO_BUCKET = frozenset({"NoSuchBucket"})
_DENIED = frozenset(
    {
        "AccessDenied",
        "403",
        "Forbidden",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
    }
)
_BAD_CHECKSUM = frozenset({"BadDigest", "XAmzContentSHA256Mismatch", "InvalidDigest"})
_EXISTS = frozenset({"PreconditionFailed", "412"})
# S3 answers 409 when two conditional writes to one key race; the winner decides.
_RACE = frozenset({"ConditionalRequestConflict"})


class S3Store(ObjectStore):
    """An :class:`ObjectStore` in an S3 bucket, under an optional key prefix.

    Args:
        bucket: the bucket's name.
        prefix: prepended to every key (``"gradeflow"`` and ``"gradeflow/"``
            are the same); keys passed to and returned by this store exclude it.
        client: a boto3 S3 client; by default one from the ambient AWS config.
            Build it with ``Config(signature_version="s3v4")`` if it also signs
            presigned URLs.
        multipart_threshold: files larger than this go up in parts.
        part_size: bytes per part (at least 5 MiB; grown for files that would
            need more than 10,000 parts).
        presign_client: the client that signs URLs, when it must differ from
            ``client`` (e.g. an endpoint reachable from inside a task).
        verify_writes: read every newly created object back and hash it; for
            S3-compatible servers that ignore ``x-amz-checksum-sha256`` (moto
            does). A bad copy is deleted and ``ChecksumMismatch`` raised.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        client: S3Client | None = None,
        *,
        multipart_threshold: int = 8 * MiB,
        part_size: int = 8 * MiB,
        presign_client: S3Client | None = None,
        verify_writes: bool = False,
    ) -> None:
        if not bucket:
            raise ConfigurationError("S3Store needs a bucket name")
        if part_size < _MIN_PART:
            raise ConfigurationError(f"part_size must be at least 5 MiB, got {part_size}")
        if multipart_threshold < 1:
            raise ConfigurationError(f"multipart_threshold must be positive: {multipart_threshold}")
        prefix = prefix.strip("/")
        if prefix:
            validate_prefix(prefix)
            prefix += "/"
        self.bucket = bucket
        self.prefix = prefix
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self._client: S3Client = client if client is not None else _default_client()
        self._presign: S3Client = presign_client if presign_client is not None else self._client
        self.verify_writes = verify_writes
        self._bucket_seen = False

    @classmethod
    def from_blocks(cls, s3_bucket_block_name: str, **kwargs: Any) -> S3Store:
        """Build a store from a saved prefect-aws ``S3Bucket`` block.

        Uses the block's ``bucket_name``, ``bucket_folder`` (as the prefix) and
        credentials (a boto3 session plus its client parameters, e.g. a MinIO
        ``endpoint_url``), always signing with SigV4. Extra ``kwargs`` go to
        :class:`S3Store`. Loads synchronously, so call it from sync code.

        Raises:
            ConfigurationError: prefect-aws is missing or the block cannot be loaded.
        """
        try:
            from prefect_aws import S3Bucket  # lazy: the core never imports Prefect
        except ImportError as exc:
            raise ConfigurationError("S3Store.from_blocks needs prefect-aws installed") from exc
        try:
            # ``load`` dispatches to its async twin inside an event loop; force sync.
            block: Any = S3Bucket.load(s3_bucket_block_name, _sync=True)  # type: ignore[call-arg]
        except ValueError as exc:  # Prefect's "Unable to find block document named ..."
            raise ConfigurationError(
                f"cannot load S3Bucket block {s3_bucket_block_name!r}: {exc}"
            ) from exc
        return cls.from_credentials(
            block.credentials, block.bucket_name, prefix=block.bucket_folder or "", **kwargs
        )

    @classmethod
    def from_credentials(cls, credentials: Any, bucket: str, **kwargs: Any) -> S3Store:
        """Build a store from anything shaped like prefect-aws ``AwsCredentials``.

        ``credentials`` needs ``get_boto3_session()`` and, optionally,
        ``aws_client_parameters.get_params_override()``; the client it yields
        always signs with SigV4 (presigned URLs need it).
        """
        session: boto3.Session = credentials.get_boto3_session()
        params: dict[str, Any] = {}
        client_parameters = getattr(credentials, "aws_client_parameters", None)
        if client_parameters is not None:
            params = dict(client_parameters.get_params_override())
        config = Config(signature_version="s3v4")
        if isinstance(params.get("config"), Config):
            config = params.pop("config").merge(config)
        client = session.client("s3", config=config, **params)
        return cls(bucket, client=client, **kwargs)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def put_file(self, key: str, path: Path, *, sha256: str) -> StoredObject:
        validate_key(key)
        _check_digest(sha256)
        path = Path(path)
        size = path.stat().st_size
        if size > self.multipart_threshold:
            return self._put_multipart(key, path, sha256, size)
        data = path.read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise ChecksumMismatch(
                f"{path}: caller said sha256 {sha256}, the file hashes to {actual}; "
                f"nothing stored at {self._where(key)}"
            )
        return self._put_single(key, data, sha256, conditional=True)

    def put_bytes(self, key: str, data: bytes, *, overwrite: bool = False) -> StoredObject:
        validate_key(key)
        return self._put_single(
            key, data, hashlib.sha256(data).hexdigest(), conditional=not overwrite
        )

    def get_bytes(self, key: str, *, sha256: str | None = None) -> bytes:
        with self._get(key) as (chunks, recorded):
            h = hashlib.sha256()
            parts: list[bytes] = []
            for chunk in chunks:
                h.update(chunk)
                parts.append(chunk)
        self._verify(key, h.hexdigest(), given=sha256, recorded=recorded)
        return b"".join(parts)

    def get_file(self, key: str, dest: Path, *, sha256: str | None = None) -> StoredObject:
        dest = Path(dest)
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as out, self._get(key) as (chunks, recorded):
                h = hashlib.sha256()
                size = 0
                for chunk in chunks:
                    h.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            digest = h.hexdigest()
            self._verify(key, digest, given=sha256, recorded=recorded)
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        return StoredObject(key=key, size=size, sha256=digest)

    def head(self, key: str) -> StoredObject | None:
        """Size and recorded digest; ``sha256`` is ``""`` when none was recorded."""
        validate_key(key)
        try:
            resp = self._client.head_object(
                Bucket=self.bucket, Key=self.prefix + key, ChecksumMode="ENABLED"
            )
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND:
                # HEAD has no body, so a missing bucket is a bare 404 too: ask once.
                self._check_bucket()
                return None
            self._raise(exc, "head", key)
        except BotoCoreError as exc:
            raise StorageError(f"head {self._where(key)}: {exc}") from exc
        self._bucket_seen = True
        return StoredObject(key=key, size=int(resp["ContentLength"]), sha256=_recorded(resp) or "")

    def list_keys(self, prefix: str) -> Iterator[str]:
        validate_prefix(prefix)
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for item in page.get("Contents", []):
                    yield item["Key"][len(self.prefix) :]
        except ClientError as exc:
            self._raise(exc, "list", prefix)
        except BotoCoreError as exc:
            raise StorageError(f"list {self._where(prefix)}: {exc}") from exc

    def presign_get(self, key: str, *, expires_s: int = 3600) -> str:
        """A SigV4 URL for a plain ``GET`` with no extra headers."""
        validate_key(key)
        return self._sign("get_object", {"Key": self.prefix + key}, expires_s)

    def presign_put(self, key: str, *, sha256: str | None = None, expires_s: int = 3600) -> str:
        """A SigV4 URL for ``PUT``-ting ``key``.

        With ``sha256`` the URL signs the header ``x-amz-checksum-sha256``, so the
        uploader **must** send ``x-amz-checksum-sha256: <base64 of the raw 32-byte
        digest>`` (not hex); S3 then rejects a body that does not hash to it
        (``400 BadDigest``) and records it as the object's checksum, which
        :meth:`get_bytes`/:meth:`get_file` verify against. Without ``sha256``
        the uploader sends no extra headers. The URL does not prevent overwriting.
        """
        validate_key(key)
        params: dict[str, Any] = {"Key": self.prefix + key}
        if sha256 is not None:
            _check_digest(sha256)
            params["ChecksumSHA256"] = _b64(sha256)
        return self._sign("put_object", params, expires_s)

    # -- private helpers ---------------------------------------------------

    def _where(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"

    def _sign(self, method: str, params: dict[str, Any], expires_s: int) -> str:
        if not 1 <= expires_s <= _MAX_PRESIGN_S:
            raise ValueError(f"expires_s must be within 1..{_MAX_PRESIGN_S}, got {expires_s}")
        try:
            url = self._presign.generate_presigned_url(
                method, Params={"Bucket": self.bucket, **params}, ExpiresIn=expires_s
            )
        except BotoCoreError as exc:
            raise StorageError(f"presign {method} {self._where(params['Key'])}: {exc}") from exc
        return str(url)

    def _put_single(self, key: str, data: bytes, sha256: str, *, conditional: bool) -> StoredObject:
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self.prefix + key,
            "Body": data,
            "ChecksumSHA256": _b64(sha256),
            "Metadata": {_META: sha256},
        }
        if conditional:
            kwargs["IfNoneMatch"] = "*"
        try:
            self._client.put_object(**kwargs)
        except ClientError as exc:
            if conditional and _code(exc) in _EXISTS | _RACE:
                return self._already_there(key, sha256, len(data), exc)
            self._raise(exc, "put", key)
        except BotoCoreError as exc:
            raise StorageError(f"put {self._where(key)}: {exc}") from exc
        self._bucket_seen = True
        if self.verify_writes:
            self._read_back(key, sha256, delete_if_bad=conditional)
        return StoredObject(key=key, size=len(data), sha256=sha256, created=True)

    def _put_multipart(self, key: str, path: Path, sha256: str, size: int) -> StoredObject:
        # Look first: a retry of a large upload should not re-send it.
        existing = self.head(key)
        if existing is not None:
            return self._compare(key, existing, sha256, size)
        full_key = self.prefix + key
        part_size = max(self.part_size, -(-size // _MAX_PARTS))
        try:
            upload = self._client.create_multipart_upload(
                Bucket=self.bucket,
                Key=full_key,
                ChecksumAlgorithm="SHA256",
                Metadata={_META: sha256},
            )
        except ClientError as exc:
            self._raise(exc, "put (create multipart upload)", key)
        except BotoCoreError as exc:
            raise StorageError(f"put {self._where(key)}: {exc}") from exc
        upload_id = upload["UploadId"]
        try:
            parts: list[dict[str, Any]] = []
            whole = hashlib.sha256()
            with path.open("rb") as src:
                while chunk := src.read(part_size):
                    whole.update(chunk)
                    number = len(parts) + 1
                    part_b64 = base64.b64encode(hashlib.sha256(chunk).digest()).decode()
                    resp = self._client.upload_part(
                        Bucket=self.bucket,
                        Key=full_key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=chunk,
                        ChecksumSHA256=part_b64,
                    )
                    parts.append(
                        {"PartNumber": number, "ETag": resp["ETag"], "ChecksumSHA256": part_b64}
                    )
            actual = whole.hexdigest()
            if actual != sha256:
                raise ChecksumMismatch(
                    f"{path}: caller said sha256 {sha256}, the file hashes to {actual}; "
                    f"upload to {self._where(key)} aborted"
                )
            self._client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=full_key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                IfNoneMatch="*",
            )
        except ClientError as exc:
            self._abort(full_key, upload_id)
            if _code(exc) in _EXISTS | _RACE:
                return self._already_there(key, sha256, size, exc)
            self._raise(exc, "put (multipart)", key)
        except BotoCoreError as exc:
            self._abort(full_key, upload_id)
            raise StorageError(f"put (multipart) {self._where(key)}: {exc}") from exc
        except BaseException:
            self._abort(full_key, upload_id)
            raise
        if self.verify_writes:
            self._read_back(key, sha256, delete_if_bad=True)
        return StoredObject(key=key, size=size, sha256=sha256, created=True)

    def _read_back(self, key: str, sha256: str, *, delete_if_bad: bool) -> None:
        """Hash what the server stored; remove a bad copy we created ourselves."""
        with self._get(key) as (chunks, _):
            h = hashlib.sha256()
            for chunk in chunks:
                h.update(chunk)
        if h.hexdigest() == sha256:
            return
        if delete_if_bad:
            with contextlib.suppress(ClientError, BotoCoreError):
                self._client.delete_object(Bucket=self.bucket, Key=self.prefix + key)
        raise ChecksumMismatch(
            f"{self._where(key)}: sent sha256 {sha256}, the server stored {h.hexdigest()}"
            + ("; deleted it" if delete_if_bad else "")
        )

    def _abort(self, full_key: str, upload_id: str) -> None:
        """Best effort: a leftover upload only costs storage until a lifecycle rule."""
        with contextlib.suppress(ClientError, BotoCoreError):
            self._client.abort_multipart_upload(
                Bucket=self.bucket, Key=full_key, UploadId=upload_id
            )

    def _already_there(self, key: str, sha256: str, size: int, exc: ClientError) -> StoredObject:
        """The conditional create lost: the object now there decides the outcome."""
        existing = self.head(key)
        if existing is None:  # deleted again, or a racing write failed: let the caller retry
            raise StorageError(
                f"put {self._where(key)}: precondition failed ({_code(exc)}) "
                "but no object is there now; retry"
            ) from exc
        return self._compare(key, existing, sha256, size)

    def _compare(self, key: str, existing: StoredObject, sha256: str, size: int) -> StoredObject:
        if existing.sha256 == sha256:
            return StoredObject(key=key, size=size, sha256=sha256, created=False)
        recorded = existing.sha256 or "no recorded sha256"
        raise ObjectConflict(
            f"{self._where(key)} already holds a different object ({recorded}, not {sha256})"
        )

    @contextlib.contextmanager
    def _get(self, key: str) -> Iterator[tuple[Iterator[bytes], str | None]]:
        """Stream an object's body with its recorded digest; errors translated."""
        validate_key(key)
        try:
            resp = self._client.get_object(
                Bucket=self.bucket, Key=self.prefix + key, ChecksumMode="ENABLED"
            )
            self._bucket_seen = True
            body = resp["Body"]
            with contextlib.closing(body):
                yield body.iter_chunks(_CHUNK), _recorded(resp)
        except FlexibleChecksumError as exc:  # botocore checked S3's own checksum
            raise ChecksumMismatch(f"get {self._where(key)}: {exc}") from exc
        except ClientError as exc:
            self._raise(exc, "get", key)
        except BotoCoreError as exc:
            raise StorageError(f"get {self._where(key)}: {exc}") from exc

    def _verify(self, key: str, digest: str, *, given: str | None, recorded: str | None) -> None:
        for label, expected in (("expected", given), ("recorded", recorded)):
            if expected is not None and expected != digest:
                raise ChecksumMismatch(
                    f"{self._where(key)}: {label} sha256 {expected}, read {digest}"
                )

    def _check_bucket(self) -> None:
        if self._bucket_seen:
            return
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND | _NO_BUCKET:
                raise ConfigurationError(f"S3 bucket {self.bucket!r} does not exist") from exc
            self._raise(exc, "head bucket", "")
        except BotoCoreError as exc:
            raise StorageError(f"head bucket {self.url}: {exc}") from exc
        self._bucket_seen = True

    def _raise(self, exc: ClientError, op: str, key: str) -> NoReturn:
        raise _translate(exc, op, self.bucket, self._where(key)) from exc


def _translate(exc: ClientError, op: str, bucket: str, where: str) -> GradeflowError:
    code = _code(exc)
    if code in _NO_BUCKET:
        return ConfigurationError(f"S3 bucket {bucket!r} does not exist ({op} {where})")
    if code in _NOT_FOUND:
        return ObjectNotFound(f"no object at {where}")
    if code in _DENIED:
        return StorageError(f"access denied ({code}): {op} {where}")
    if code in _BAD_CHECKSUM:
        return ChecksumMismatch(f"S3 rejected the body's checksum ({code}): {op} {where}")
    if code in _EXISTS:
        return ObjectConflict(f"precondition failed: {op} {where}")
    message = exc.response.get("Error", {}).get("Message", "")
    return StorageError(f"{op} {where} failed: {code} {message}".rstrip())


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _recorded(resp: Any) -> str | None:
    """The whole-object digest S3 holds: our metadata, else a full-object ChecksumSHA256."""
    meta = resp.get("Metadata") or {}
    if _META in meta:
        return str(meta[_META]).lower()
    checksum = resp.get("ChecksumSHA256")
    if (
        checksum
        and "-" not in checksum
        and resp.get("ChecksumType", "FULL_OBJECT") == "FULL_OBJECT"
    ):
        return base64.b64decode(checksum).hex()
    return None


def _b64(sha256_hex: str) -> str:
    return base64.b64encode(bytes.fromhex(sha256_hex)).decode("ascii")


def _default_client() -> S3Client:
    return boto3.client("s3", config=Config(signature_version="s3v4"))
