"""LocalStore: a private directory that never overwrites and always verifies."""

from __future__ import annotations

import hashlib
import stat
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gradeflow._errors import ChecksumMismatch, ConfigurationError, ObjectConflict, ObjectNotFound
from gradeflow.storage import LocalStore, StoredObject

KEY = "submissions/hw1/s-001/abc.zip"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def stray_files(store: LocalStore) -> list[Path]:
    """Temp files left anywhere in the store (a failed write must leave none)."""
    return [p for p in store.root.rglob("*") if ".gradeflow-tmp-" in p.name]


def test_put_file_then_get_round_trips(local_store: LocalStore, tmp_path: Path) -> None:
    data = b"print('hello')\n" * 1000
    src = write(tmp_path / "in.zip", data)

    stored = local_store.put_file(KEY, src, sha256=sha(data))

    assert stored == StoredObject(key=KEY, size=len(data), sha256=sha(data), created=True)
    assert local_store.get_bytes(KEY) == data
    got = local_store.get_file(KEY, tmp_path / "out.zip", sha256=sha(data))
    assert (tmp_path / "out.zip").read_bytes() == data
    assert got.sha256 == sha(data)
    assert local_store.head(KEY) == StoredObject(key=KEY, size=len(data), sha256=sha(data))


def test_root_and_objects_are_private_to_the_owner(local_store: LocalStore) -> None:
    local_store.put_bytes(KEY, b"secret")

    assert stat.S_IMODE(local_store.root.stat().st_mode) == 0o700
    assert stat.S_IMODE((local_store.root / KEY).stat().st_mode) == 0o600
    for directory in (local_store.root / KEY).parents:
        if directory == local_store.root.parent:
            break
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory


def test_an_existing_open_root_we_own_is_tightened(tmp_path: Path) -> None:
    root = tmp_path / "open"
    root.mkdir(mode=0o755)
    root.chmod(0o755)

    LocalStore(root)

    assert stat.S_IMODE(root.stat().st_mode) == 0o700


def test_a_root_that_is_a_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot use"):
        LocalStore(write(tmp_path / "file", b"x"))


def test_identical_re_put_is_not_created(local_store: LocalStore, tmp_path: Path) -> None:
    src = write(tmp_path / "in", b"same")
    local_store.put_file(KEY, src, sha256=sha(b"same"))

    again = local_store.put_file(KEY, src, sha256=sha(b"same"))

    assert again.created is False
    assert again.sha256 == sha(b"same")
    assert stray_files(local_store) == []


def test_different_content_at_same_key_conflicts_and_keeps_original(
    local_store: LocalStore, tmp_path: Path
) -> None:
    local_store.put_bytes(KEY, b"original")

    with pytest.raises(ObjectConflict, match=sha(b"original")):
        local_store.put_file(KEY, write(tmp_path / "other", b"other"), sha256=sha(b"other"))

    assert local_store.get_bytes(KEY) == b"original"
    assert stray_files(local_store) == []


def test_concurrent_creates_of_one_key_have_exactly_one_winner(local_store: LocalStore) -> None:
    barrier = threading.Barrier(8)

    def put(i: int) -> str:
        barrier.wait()
        try:
            local_store.put_bytes(KEY, f"writer {i}".encode())
        except ObjectConflict:
            return "conflict"
        return "created"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(put, range(8)))

    assert outcomes.count("created") == 1
    winner = local_store.get_bytes(KEY)  # verified against its recorded digest
    assert winner.startswith(b"writer ")


def test_put_with_a_wrong_digest_stores_nothing(local_store: LocalStore, tmp_path: Path) -> None:
    src = write(tmp_path / "in", b"real bytes")

    with pytest.raises(ChecksumMismatch, match="nothing stored"):
        local_store.put_file(KEY, src, sha256=sha(b"claimed bytes"))

    assert local_store.head(KEY) is None
    assert stray_files(local_store) == []


def test_tampered_object_fails_verification_on_read(
    local_store: LocalStore, tmp_path: Path
) -> None:
    local_store.put_bytes(KEY, b"graded work")
    (local_store.root / KEY).write_bytes(b"forged work")  # underneath the store
    dest = write(tmp_path / "dest", b"previous download")

    with pytest.raises(ChecksumMismatch, match="recorded sha256"):
        local_store.get_bytes(KEY)
    with pytest.raises(ChecksumMismatch):
        local_store.get_file(KEY, dest)

    assert dest.read_bytes() == b"previous download"  # the failed download replaced nothing
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".dest.")] == []


def test_read_checks_the_digest_the_caller_expects(local_store: LocalStore) -> None:
    local_store.put_bytes(KEY, b"version 1")

    with pytest.raises(ChecksumMismatch, match="expected sha256"):
        local_store.get_bytes(KEY, sha256=sha(b"version 2"))


def test_missing_key_is_object_not_found(local_store: LocalStore, tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFound, match="nope"):
        local_store.get_bytes("results/nope.json")
    with pytest.raises(ObjectNotFound):
        local_store.get_file("results/nope.json", tmp_path / "out")
    assert local_store.head("results/nope.json") is None
    assert not local_store.exists("results/nope.json")


def test_overwrite_replaces_a_mutable_pointer_and_its_digest(local_store: LocalStore) -> None:
    local_store.put_bytes("results/hw1/s-001/latest", b"attempt-0001")

    stored = local_store.put_bytes("results/hw1/s-001/latest", b"attempt-0002", overwrite=True)

    assert stored.created is True
    assert local_store.get_bytes("results/hw1/s-001/latest") == b"attempt-0002"
    head = local_store.head("results/hw1/s-001/latest")
    assert head is not None and head.sha256 == sha(b"attempt-0002")


def test_list_keys_is_sorted_filtered_and_hides_bookkeeping(local_store: LocalStore) -> None:
    for key in ("results/hw1/b", "results/hw1/a/x", "results/hw10/c", "submissions/hw1/d"):
        local_store.put_bytes(key, key.encode())
    (local_store.root / "results/hw1/.gradeflow-tmp-leftover").write_bytes(b"crash debris")

    assert list(local_store.list_keys("results/hw1/")) == ["results/hw1/a/x", "results/hw1/b"]
    assert list(local_store.list_keys("results/hw1")) == [
        "results/hw1/a/x",
        "results/hw1/b",
        "results/hw10/c",
    ]
    assert list(local_store.list_keys("")) == [
        "results/hw1/a/x",
        "results/hw1/b",
        "results/hw10/c",
        "submissions/hw1/d",
    ]
    assert list(local_store.list_keys("nothing/here/")) == []


def test_a_crash_before_the_sidecar_is_recovered_by_the_next_reader(
    local_store: LocalStore,
) -> None:
    local_store.put_bytes(KEY, b"complete bytes")
    sidecar = local_store.root / ".gradeflow" / "sha256" / KEY
    sidecar.unlink()  # as if the writer died right after linking the object

    assert local_store.head(KEY) == StoredObject(KEY, 14, sha(b"complete bytes"))
    assert sidecar.read_text().strip() == sha(b"complete bytes")
    assert local_store.put_bytes(KEY, b"complete bytes").created is False


def test_a_key_that_is_a_prefix_of_other_keys_conflicts(local_store: LocalStore) -> None:
    local_store.put_bytes("a/b", b"x")

    with pytest.raises(ObjectConflict):
        local_store.put_bytes("a", b"y")
    with pytest.raises(ObjectConflict):
        local_store.put_bytes("a/b/c", b"z")


def test_presigned_get_is_a_readable_file_url(local_store: LocalStore) -> None:
    local_store.put_bytes(KEY, b"fetch me")

    url = local_store.presign_get(KEY)

    assert url.startswith("file:///")
    with urllib.request.urlopen(url) as response:
        assert response.read() == b"fetch me"


def test_presigned_put_points_where_the_key_will_live(local_store: LocalStore) -> None:
    url = local_store.presign_put(KEY, sha256=sha(b"x"))

    assert url == (local_store.root / KEY).as_uri()


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/etc/passwd",
        "a/../../etc/passwd",
        "..",
        "a/./b",
        "a//b",
        "a/",
        "a\\b",
        "a\x00b",
        "a\nb",
        ".gradeflow/sha256/x",
        "a/.gradeflow-tmp-1",
        "x" * 1025,
    ],
)
def test_unsafe_keys_are_refused_before_touching_disk(local_store: LocalStore, key: str) -> None:
    with pytest.raises(ValueError):
        local_store.put_bytes(key, b"x")
    with pytest.raises(ValueError):
        local_store.get_bytes(key)
    assert list(local_store.list_keys("")) == []
