"""S3Store against moto's server over real HTTP on 127.0.0.1.

What moto 5.2 enforces and what it does not (checked, not assumed):

- ``If-None-Match: *`` on PutObject and CompleteMultipartUpload: enforced (412).
  The conditional-create tests therefore prove the server refused the write,
  not merely that we looked first (``calls`` shows PutObject, then HeadObject).
- ``x-amz-checksum-sha256``: NOT verified — moto stores a body whose checksum
  header lies. Our own pre-send check (we hash exactly the bytes we send) is
  what the digest tests prove; S3's server-side ``BadDigest`` path is covered
  by a test that skips itself on moto, plus the error-translation test.
- Presigned URL signatures: NOT checked by moto without its auth mode. The
  presign tests prove the URLs work over HTTP and sign the checksum header.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from gradeflow._errors import (
    ChecksumMismatch,
    ConfigurationError,
    ObjectConflict,
    ObjectNotFound,
    StorageError,
)
from gradeflow.storage import S3Store, StoredObject
from gradeflow.storage._s3 import _translate

MiB = 1024 * 1024
KEY = "submissions/hw1/s-001/abc.zip"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def raw_head(client: Any, bucket: str, key: str) -> dict[str, Any] | None:
    try:
        return dict(client.head_object(Bucket=bucket, Key=key))
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("404", "NoSuchKey"):
            return None
        raise


# -- round trips ---------------------------------------------------------


def test_put_file_then_get_round_trips(
    s3_store: S3Store, s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    data = os.urandom(64 * 1024)

    stored = s3_store.put_file(KEY, write(tmp_path / "in.zip", data), sha256=sha(data))

    assert stored == StoredObject(KEY, len(data), sha(data), created=True)
    assert s3_store.get_bytes(KEY) == data
    assert s3_store.get_file(KEY, tmp_path / "out.zip").sha256 == sha(data)
    assert (tmp_path / "out.zip").read_bytes() == data
    assert s3_store.head(KEY) == StoredObject(KEY, len(data), sha(data))
    raw = raw_head(s3_client, bucket, f"gf/{KEY}")  # the prefix is applied
    assert raw is not None
    assert raw["Metadata"] == {"sha256": sha(data)}


def test_identical_re_put_is_not_created(
    s3_store: S3Store, tmp_path: Path, calls: list[str]
) -> None:
    src = write(tmp_path / "in", b"same")
    s3_store.put_file(KEY, src, sha256=sha(b"same"))
    calls.clear()

    again = s3_store.put_file(KEY, src, sha256=sha(b"same"))

    assert again.created is False
    # The server refused the conditional PUT (412) and the recorded digest matched.
    assert calls == ["PutObject", "HeadObject"]


def test_different_content_at_same_key_conflicts_and_keeps_original(
    s3_store: S3Store, tmp_path: Path
) -> None:
    s3_store.put_bytes(KEY, b"original")

    with pytest.raises(ObjectConflict, match=sha(b"original")):
        s3_store.put_file(KEY, write(tmp_path / "other", b"other"), sha256=sha(b"other"))

    assert s3_store.get_bytes(KEY) == b"original"


def test_moto_enforces_if_none_match_on_put(s3_client: Any, bucket: str) -> None:
    """Guards the claim above: if moto stops enforcing it, the conflict tests prove less."""
    s3_client.put_object(Bucket=bucket, Key="k", Body=b"a", IfNoneMatch="*")

    with pytest.raises(ClientError) as info:
        s3_client.put_object(Bucket=bucket, Key="k", Body=b"b", IfNoneMatch="*")

    assert info.value.response["Error"]["Code"] == "PreconditionFailed"


def test_overwrite_replaces_a_mutable_pointer(s3_store: S3Store) -> None:
    s3_store.put_bytes("results/hw1/s-001/latest", b"attempt-0001")

    s3_store.put_bytes("results/hw1/s-001/latest", b"attempt-0002", overwrite=True)

    assert s3_store.get_bytes("results/hw1/s-001/latest") == b"attempt-0002"


# -- checksums -----------------------------------------------------------


def test_put_with_a_wrong_digest_stores_nothing(s3_store: S3Store, tmp_path: Path) -> None:
    # Caught by hashing the bytes before they are sent (moto would not catch it).
    with pytest.raises(ChecksumMismatch, match="nothing stored"):
        s3_store.put_file(KEY, write(tmp_path / "in", b"real"), sha256=sha(b"claimed"))

    assert s3_store.head(KEY) is None


def test_body_corrupted_after_hashing_is_caught_and_not_kept(
    s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    """Flip a byte on the wire, after our pre-send check.

    Against AWS the server refuses it (``BadDigest`` from ``x-amz-checksum-sha256``).
    moto does not verify that header, so this runs with ``verify_writes=True``: what
    it proves is the read-back fallback for servers like moto, not S3's check.
    """
    store = S3Store(bucket, client=s3_client, verify_writes=True)

    def corrupt(request: Any, **_: Any) -> None:
        body = request.body.read() if hasattr(request.body, "read") else bytes(request.body)
        request.body = b"X" + body[1:]  # same length, so Content-Length still holds

    s3_client.meta.events.register("before-send.s3.PutObject", corrupt)
    try:
        with pytest.raises(ChecksumMismatch):
            store.put_file(KEY, write(tmp_path / "in", b"payload"), sha256=sha(b"payload"))
    finally:
        s3_client.meta.events.unregister("before-send.s3.PutObject", corrupt)

    assert store.head(KEY) is None


def test_tampered_object_fails_verification_on_read(
    s3_store: S3Store, s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    s3_store.put_bytes(KEY, b"graded work")
    # Replace the bytes underneath, keeping the recorded digest.
    s3_client.put_object(
        Bucket=bucket,
        Key=f"gf/{KEY}",
        Body=b"forged work",
        Metadata={"sha256": sha(b"graded work")},
    )

    with pytest.raises(ChecksumMismatch, match="recorded sha256"):
        s3_store.get_bytes(KEY)
    with pytest.raises(ChecksumMismatch):
        s3_store.get_file(KEY, tmp_path / "dest")
    assert list(tmp_path.iterdir()) == []  # no partial download left behind


def test_read_checks_the_digest_the_caller_expects(s3_store: S3Store) -> None:
    s3_store.put_bytes(KEY, b"version 1")

    with pytest.raises(ChecksumMismatch, match="expected sha256"):
        s3_store.get_bytes(KEY, sha256=sha(b"version 2"))


# -- multipart -----------------------------------------------------------


def test_large_file_goes_up_in_parts_with_the_whole_file_digest(
    s3_store: S3Store, s3_client: Any, bucket: str, tmp_path: Path, calls: list[str]
) -> None:
    data = os.urandom(12 * MiB)
    src = write(tmp_path / "big.zip", data)

    stored = s3_store.put_file(KEY, src, sha256=sha(data))

    assert stored.created is True
    assert calls.count("UploadPart") == 3  # 5 + 5 + 2 MiB
    assert "CompleteMultipartUpload" in calls and "PutObject" not in calls
    raw = raw_head(s3_client, bucket, f"gf/{KEY}")
    assert raw is not None and raw["Metadata"] == {"sha256": sha(data)}
    assert s3_store.get_file(KEY, tmp_path / "back.zip").sha256 == sha(data)
    assert (tmp_path / "back.zip").read_bytes() == data


def test_multipart_with_a_wrong_digest_is_aborted(
    s3_store: S3Store, s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    src = write(tmp_path / "big.zip", os.urandom(6 * MiB))

    with pytest.raises(ChecksumMismatch, match="aborted"):
        s3_store.put_file(KEY, src, sha256=sha(b"something else"))

    assert s3_store.head(KEY) is None
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_multipart_re_put_of_identical_file_sends_no_parts(
    s3_store: S3Store, tmp_path: Path, calls: list[str]
) -> None:
    data = os.urandom(6 * MiB)
    src = write(tmp_path / "big.zip", data)
    s3_store.put_file(KEY, src, sha256=sha(data))
    calls.clear()

    assert s3_store.put_file(KEY, src, sha256=sha(data)).created is False
    assert calls == ["HeadObject"]


def test_multipart_losing_a_race_at_completion_conflicts_and_aborts(
    s3_store: S3Store, s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    """Another writer lands the key after our look-first; If-None-Match on complete saves us."""

    def racer(**_: Any) -> None:
        s3_client.meta.events.unregister("before-call.s3.CompleteMultipartUpload", racer)
        s3_client.put_object(
            Bucket=bucket, Key=f"gf/{KEY}", Body=b"winner", Metadata={"sha256": sha(b"winner")}
        )

    s3_client.meta.events.register("before-call.s3.CompleteMultipartUpload", racer)
    data = os.urandom(6 * MiB)

    with pytest.raises(ObjectConflict, match=sha(b"winner")):
        s3_store.put_file(KEY, write(tmp_path / "big.zip", data), sha256=sha(data))

    assert s3_store.get_bytes(KEY) == b"winner"
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


# -- presigned URLs ------------------------------------------------------


def test_presigned_get_downloads_without_credentials(s3_store: S3Store) -> None:
    s3_store.put_bytes(KEY, b"for the agent")

    with urllib.request.urlopen(s3_store.presign_get(KEY, expires_s=60)) as response:
        assert response.read() == b"for the agent"


def test_presigned_put_with_the_checksum_header_uploads(s3_store: S3Store) -> None:
    body = b'{"score": 10}'
    url = s3_store.presign_put("results/hw1/s-001/attempt-0001/result.json", sha256=sha(body))

    signed = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["X-Amz-SignedHeaders"][0]
    assert "x-amz-checksum-sha256" in signed.split(";")  # S3 would refuse a PUT without it
    request = urllib.request.Request(
        url,
        data=body,
        method="PUT",
        # An explicit type: urllib's default (form-urlencoded) makes moto's server
        # parse the body as a form and store nothing. S3 signs neither header value
        # but the checksum, so any Content-Type works there.
        headers={"x-amz-checksum-sha256": b64(body), "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request) as response:
        assert response.status == 200
    assert (
        s3_store.get_bytes("results/hw1/s-001/attempt-0001/result.json", sha256=sha(body)) == body
    )


def test_presign_expiry_is_bounded(s3_store: S3Store) -> None:
    with pytest.raises(ValueError):
        s3_store.presign_get(KEY, expires_s=8 * 24 * 3600)


# -- errors --------------------------------------------------------------


def test_missing_bucket_is_a_configuration_error_naming_it(s3_client: Any, tmp_path: Path) -> None:
    store = S3Store("gradeflow-no-such-bucket", client=s3_client)

    with pytest.raises(ConfigurationError, match="gradeflow-no-such-bucket"):
        store.put_bytes(KEY, b"x")
    with pytest.raises(ConfigurationError, match="gradeflow-no-such-bucket"):
        store.get_bytes(KEY)
    with pytest.raises(ConfigurationError, match="gradeflow-no-such-bucket"):
        store.head(KEY)  # a bare 404 on HEAD: the store asks about the bucket
    with pytest.raises(ConfigurationError, match="gradeflow-no-such-bucket"):
        list(store.list_keys(""))


def test_missing_key_is_object_not_found(s3_store: S3Store, tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFound, match=r"nope\.json"):
        s3_store.get_bytes("results/nope.json")
    with pytest.raises(ObjectNotFound):
        s3_store.get_file("results/nope.json", tmp_path / "out")
    assert s3_store.head("results/nope.json") is None
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("code", "expected", "words"),
    [
        ("AccessDenied", StorageError, ["access denied", "get", "s3://bkt/k"]),
        ("NoSuchBucket", ConfigurationError, ["'bkt'"]),
        ("NoSuchKey", ObjectNotFound, ["s3://bkt/k"]),
        ("BadDigest", ChecksumMismatch, ["BadDigest"]),
        ("SlowDown", StorageError, ["SlowDown"]),
    ],
)
def test_client_errors_are_translated_by_code(
    code: str, expected: type[Exception], words: list[str]
) -> None:
    # The message text is deliberately misleading: only the code may matter.
    exc = ClientError({"Error": {"Code": code, "Message": "NoSuchKey"}}, "GetObject")

    translated = _translate(exc, "get", "bkt", "s3://bkt/k")

    assert type(translated) is expected
    for word in words:
        assert word in str(translated)


# -- listing and keys ----------------------------------------------------


def test_list_keys_is_sorted_and_scoped_to_the_store_prefix(
    s3_store: S3Store, s3_client: Any, bucket: str
) -> None:
    for key in ("results/hw1/b", "results/hw1/a/x", "results/hw10/c", "submissions/hw1/d"):
        s3_store.put_bytes(key, key.encode())
    s3_client.put_object(Bucket=bucket, Key="elsewhere/results/hw1/z", Body=b"not ours")

    assert list(s3_store.list_keys("results/hw1/")) == ["results/hw1/a/x", "results/hw1/b"]
    assert list(s3_store.list_keys("")) == [
        "results/hw1/a/x",
        "results/hw1/b",
        "results/hw10/c",
        "submissions/hw1/d",
    ]


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "a\\b", "a\x00b", ".gradeflow/x"])
def test_unsafe_keys_are_refused_before_any_request(
    s3_store: S3Store, key: str, calls: list[str]
) -> None:
    with pytest.raises(ValueError):
        s3_store.put_bytes(key, b"x")
    with pytest.raises(ValueError):
        s3_store.presign_get(key)
    assert calls == []


# -- construction --------------------------------------------------------


class _StandInParams:
    def __init__(self, endpoint_url: str) -> None:
        self.endpoint_url = endpoint_url

    def get_params_override(self) -> dict[str, Any]:
        return {"endpoint_url": self.endpoint_url}


class _StandInCredentials:
    """The slice of prefect-aws ``AwsCredentials`` that ``from_credentials`` uses."""

    def __init__(self, endpoint_url: str) -> None:
        self.aws_client_parameters = _StandInParams(endpoint_url)

    def get_boto3_session(self) -> boto3.Session:
        return boto3.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
        )


def test_from_credentials_builds_a_sigv4_client_from_block_parts(
    moto_endpoint: str, bucket: str
) -> None:
    store = S3Store.from_credentials(_StandInCredentials(moto_endpoint), bucket, prefix="folder/")

    store.put_bytes("k", b"via block")

    assert store.url == f"s3://{bucket}/folder/"
    assert store.get_bytes("k") == b"via block"
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in store.presign_get("k")


def test_importing_the_storage_package_does_not_import_prefect() -> None:
    code = "import sys, gradeflow.storage; sys.exit('prefect' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
