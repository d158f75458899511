"""Unpacking submissions: what is accepted, and every rule that rejects one."""

from __future__ import annotations

import gzip
import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from gradeflow._archives import ArchiveLimits, UnpackReport, detect_kind, unpack_submission
from gradeflow._errors import InvalidSubmission
from gradeflow._models import Limits

LIMITS = ArchiveLimits(max_total_bytes=10 * 1024 * 1024, max_files=100)


# -- helpers -------------------------------------------------------------------


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def tar_member(name: str, data: bytes = b"", **attrs: object) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data


def make_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes]], mode: str = "w") -> Path:
    with tarfile.open(path, mode, format=tarfile.PAX_FORMAT) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def unpack(archive: Path, dest: Path, limits: ArchiveLimits = LIMITS) -> UnpackReport:
    return unpack_submission(archive, dest, filename="submission.bin", limits=limits)


def assert_rejected(archive: Path, dest: Path, match: str, limits: ArchiveLimits = LIMITS) -> None:
    before = sorted(p.name for p in dest.parent.iterdir())
    with pytest.raises(InvalidSubmission, match=match):
        unpack(archive, dest, limits)
    assert not dest.exists()
    assert sorted(p.name for p in dest.parent.iterdir()) == before


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    return out / "submission"


# -- limits and detection ------------------------------------------------------


def test_archive_limits_follow_the_assignment_limits() -> None:
    limits = ArchiveLimits.from_limits(Limits(submission_max_mb=3, submission_max_files=7))
    assert limits == ArchiveLimits(max_total_bytes=3 * 1024 * 1024, max_files=7)
    assert (limits.max_ratio, limits.max_depth, limits.max_name_bytes) == (100, 16, 255)


def test_detect_kind_uses_magic_bytes_not_the_extension(tmp_path: Path) -> None:
    zipped = make_zip(tmp_path / "looks-like.txt", {"a.py": b"x"})
    tarred = make_tar(tmp_path / "looks-like.zip", [tar_member("a.py", b"x")])
    plain = tmp_path / "looks-like.tar"
    plain.write_bytes(b"print('hi')\n")
    assert detect_kind(zipped) == "zip"
    assert detect_kind(tarred) == "tar"
    assert detect_kind(plain) == "file"


def test_detect_kind_sees_an_empty_zip(tmp_path: Path) -> None:
    empty = make_zip(tmp_path / "empty.zip", {})
    assert empty.read_bytes().startswith(b"PK\x05\x06")
    assert detect_kind(empty) == "zip"


def test_detect_kind_sees_a_tar_inside_gzip(tmp_path: Path) -> None:
    tgz = make_tar(tmp_path / "s.bin", [tar_member("a.py", b"x")], mode="w:gz")
    assert detect_kind(tgz) == "tar"


def test_detect_kind_treats_a_gzipped_non_tar_as_a_file(tmp_path: Path) -> None:
    gz = tmp_path / "data.csv.gz"
    gz.write_bytes(gzip.compress(b"a,b\n1,2\n"))
    assert detect_kind(gz) == "file"


# -- happy paths ---------------------------------------------------------------


def test_zip_is_unpacked_read_only(tmp_path: Path, dest: Path) -> None:
    archive = make_zip(tmp_path / "s.zip", {"main.py": b"print(1)\n", "pkg/util.py": b"x = 1\n"})
    report = unpack(archive, dest)
    assert report == UnpackReport(kind="zip", files=2, total_bytes=15)
    assert (dest / "main.py").read_bytes() == b"print(1)\n"
    assert (dest / "pkg" / "util.py").read_bytes() == b"x = 1\n"
    assert stat.S_IMODE((dest / "main.py").stat().st_mode) == 0o444
    assert stat.S_IMODE((dest / "pkg").stat().st_mode) == 0o555
    assert stat.S_IMODE(dest.stat().st_mode) == 0o555


def test_tar_gz_is_unpacked(tmp_path: Path, dest: Path) -> None:
    archive = make_tar(
        tmp_path / "s.tar.gz",
        [
            tar_member("./src", type=tarfile.DIRTYPE, mode=0o755),
            tar_member("./src/a.c", b"int main(){}\n"),
        ],
        mode="w:gz",
    )
    report = unpack(archive, dest)
    assert report == UnpackReport(kind="tar", files=1, total_bytes=13)
    assert (dest / "src" / "a.c").read_bytes() == b"int main(){}\n"


def test_plain_tar_is_unpacked(tmp_path: Path, dest: Path) -> None:
    archive = make_tar(tmp_path / "s.tar", [tar_member("a.txt", b"hello")])
    assert unpack(archive, dest) == UnpackReport(kind="tar", files=1, total_bytes=5)
    assert (dest / "a.txt").read_bytes() == b"hello"


def test_single_file_is_placed_under_its_name(tmp_path: Path, dest: Path) -> None:
    src = tmp_path / "upload"
    src.write_bytes(b"def f(): pass\n")
    report = unpack_submission(src, dest, filename="solution.py", limits=LIMITS)
    assert report == UnpackReport(kind="file", files=1, total_bytes=14)
    assert (dest / "solution.py").read_bytes() == b"def f(): pass\n"
    assert stat.S_IMODE((dest / "solution.py").stat().st_mode) == 0o444


def test_single_file_with_an_unsafe_name_is_rejected(tmp_path: Path, dest: Path) -> None:
    src = tmp_path / "upload"
    src.write_bytes(b"x")
    with pytest.raises(InvalidSubmission, match=r"'\.\.' segments"):
        unpack_submission(src, dest, filename="..", limits=LIMITS)
    with pytest.raises(InvalidSubmission, match="without '/'"):
        unpack_submission(src, dest, filename="../evil.py", limits=LIMITS)
    assert not dest.exists()


# -- names ---------------------------------------------------------------------


def test_zip_slip_is_rejected(tmp_path: Path, dest: Path) -> None:
    archive = make_zip(tmp_path / "s.zip", {"ok.py": b"x", "../evil": b"pwned"})
    assert_rejected(archive, dest, r"'\.\./evil'.*'\.\.' segments")
    assert not (tmp_path / "evil").exists()
    assert not (dest.parent / "evil").exists()


def test_absolute_path_is_rejected(tmp_path: Path, dest: Path) -> None:
    archive = make_tar(tmp_path / "s.tar", [tar_member("/tmp/evil", b"x")])
    assert_rejected(archive, dest, "'/tmp/evil': absolute paths")


def test_backslash_in_name_is_rejected(tmp_path: Path, dest: Path) -> None:
    archive = make_zip(tmp_path / "s.zip", {"..\\evil": b"x"})
    assert_rejected(archive, dest, "backslashes")


def test_control_character_in_name_is_rejected(tmp_path: Path, dest: Path) -> None:
    archive = make_tar(tmp_path / "s.tar", [tar_member("bad\x1bname", b"x")])
    assert_rejected(archive, dest, "control characters")


def test_overlong_name_segment_is_rejected(tmp_path: Path, dest: Path) -> None:
    archive = make_tar(tmp_path / "s.tar", [tar_member("a" * 300, b"x")])
    assert_rejected(archive, dest, "300 bytes is longer than the limit of 255")


def test_too_deep_a_path_is_rejected(tmp_path: Path, dest: Path) -> None:
    archive = make_zip(tmp_path / "s.zip", {"/".join(["d"] * 17) + "/f": b"x"})
    assert_rejected(archive, dest, "18 path segments, deeper than the limit of 16")


def test_duplicate_names_are_rejected(tmp_path: Path, dest: Path) -> None:
    archive = make_tar(tmp_path / "s.tar", [tar_member("a.py", b"1"), tar_member("./a.py", b"2")])
    assert_rejected(archive, dest, "'./a.py': duplicate member name")


def test_duplicate_names_in_zip_are_rejected(tmp_path: Path, dest: Path) -> None:
    archive = tmp_path / "s.zip"
    with zipfile.ZipFile(archive, "w") as zf, pytest.warns(UserWarning, match="Duplicate"):
        zf.writestr("a.py", b"1")
        zf.writestr("a.py", b"2")
    assert_rejected(archive, dest, "'a.py': duplicate member name")


def test_member_below_a_file_is_rejected(tmp_path: Path, dest: Path) -> None:
    archive = make_tar(tmp_path / "s.tar", [tar_member("a", b"1"), tar_member("a/b", b"2")])
    assert_rejected(archive, dest, "parent 'a' is a file")


# -- types and modes -----------------------------------------------------------


def test_symlink_in_tar_is_rejected(tmp_path: Path, dest: Path) -> None:
    link = tar_member("link", type=tarfile.SYMTYPE, linkname="/etc/passwd")
    archive = make_tar(tmp_path / "s.tar", [link])
    assert_rejected(archive, dest, "'link': symbolic links")


def test_symlink_in_zip_is_rejected(tmp_path: Path, dest: Path) -> None:
    archive = tmp_path / "s.zip"
    info = zipfile.ZipInfo("link")
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(info, "/etc/passwd")
    assert_rejected(archive, dest, "'link': symbolic links")


def test_hardlink_in_tar_is_rejected(tmp_path: Path, dest: Path) -> None:
    archive = make_tar(
        tmp_path / "s.tar",
        [tar_member("a", b"1"), tar_member("b", type=tarfile.LNKTYPE, linkname="a")],
    )
    assert_rejected(archive, dest, "'b': hard links")


def test_character_device_in_tar_is_rejected(tmp_path: Path, dest: Path) -> None:
    dev = tar_member("null", type=tarfile.CHRTYPE, devmajor=1, devminor=3)
    archive = make_tar(tmp_path / "s.tar", [dev])
    assert_rejected(archive, dest, "'null': device files")


def test_fifo_in_tar_is_rejected(tmp_path: Path, dest: Path) -> None:
    archive = make_tar(tmp_path / "s.tar", [tar_member("pipe", type=tarfile.FIFOTYPE)])
    assert_rejected(archive, dest, "'pipe': FIFOs")


def test_setuid_bit_in_tar_is_rejected(tmp_path: Path, dest: Path) -> None:
    archive = make_tar(tmp_path / "s.tar", [tar_member("run", b"#!/bin/sh\n", mode=0o4755)])
    assert_rejected(archive, dest, "'run': setuid, setgid and sticky bits")


def test_setuid_bit_in_zip_is_rejected(tmp_path: Path, dest: Path) -> None:
    archive = tmp_path / "s.zip"
    info = zipfile.ZipInfo("run")
    info.create_system = 3
    info.external_attr = (stat.S_IFREG | stat.S_ISUID | 0o755) << 16
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(info, b"#!/bin/sh\n")
    assert_rejected(archive, dest, "'run': setuid, setgid and sticky bits")


def test_encrypted_zip_member_is_rejected(tmp_path: Path, dest: Path) -> None:
    archive = make_zip(tmp_path / "s.zip", {"secret.py": b"x"})
    data = bytearray(archive.read_bytes())
    # Set the "encrypted" flag bit in the local header and the central directory.
    data[6] |= 0x1
    central = data.index(b"PK\x01\x02")
    data[central + 8] |= 0x1
    archive.write_bytes(bytes(data))
    assert_rejected(archive, dest, "'secret.py': encrypted")


# -- sizes ---------------------------------------------------------------------


def test_zip_bomb_is_rejected_by_the_ratio_limit(tmp_path: Path, dest: Path) -> None:
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("zeros.bin", bytes(50 * 1024 * 1024))
    generous = ArchiveLimits(max_total_bytes=1024 * 1024 * 1024, max_files=10)
    assert_rejected(archive, dest, "'zeros.bin'.*compression ratio limit", generous)


def test_gzip_tar_bomb_is_rejected_by_the_ratio_limit(tmp_path: Path, dest: Path) -> None:
    archive = make_tar(
        tmp_path / "bomb.tgz", [tar_member("zeros.bin", bytes(20 * 1024 * 1024))], mode="w:gz"
    )
    generous = ArchiveLimits(max_total_bytes=1024 * 1024 * 1024, max_files=10)
    assert_rejected(archive, dest, "'zeros.bin'.*compression ratio limit", generous)


def test_small_highly_compressible_file_is_not_a_bomb(tmp_path: Path, dest: Path) -> None:
    archive = make_zip(tmp_path / "s.zip", {"data.txt": b"0" * 300_000})
    assert unpack(archive, dest).total_bytes == 300_000


def test_too_many_files_are_rejected(tmp_path: Path, dest: Path) -> None:
    archive = make_zip(tmp_path / "s.zip", {f"f{i}.txt": b"x" for i in range(6)})
    limits = ArchiveLimits(max_total_bytes=1024 * 1024, max_files=5)
    assert_rejected(archive, dest, "6 files, over the limit of 5", limits)


def test_too_many_files_in_a_tar_stream_are_rejected(tmp_path: Path, dest: Path) -> None:
    archive = make_tar(tmp_path / "s.tar", [tar_member(f"f{i}.txt", b"x") for i in range(6)])
    limits = ArchiveLimits(max_total_bytes=1024 * 1024, max_files=5)
    assert_rejected(archive, dest, "'f5.txt': more than 5 files", limits)


def test_too_large_total_is_rejected(tmp_path: Path, dest: Path) -> None:
    payload = bytes(range(256)) * 1024  # 256 KiB, compresses well below the limit
    archive = make_tar(
        tmp_path / "s.tgz",
        [tar_member("a.bin", payload), tar_member("b.bin", payload)],
        mode="w:gz",
    )
    limits = ArchiveLimits(max_total_bytes=400 * 1024, max_files=10)
    assert_rejected(archive, dest, "'b.bin': unpacked size exceeds the limit of 409600", limits)


def test_archive_larger_than_the_limit_is_rejected(tmp_path: Path, dest: Path) -> None:
    src = tmp_path / "upload"
    src.write_bytes(b"x" * 2048)
    limits = ArchiveLimits(max_total_bytes=1024, max_files=10)
    with pytest.raises(InvalidSubmission, match="2048 bytes, over the limit of 1024"):
        unpack_submission(src, dest, filename="big.txt", limits=limits)
    assert not dest.exists()


# -- corrupt input -------------------------------------------------------------


def test_corrupt_zip_is_rejected(tmp_path: Path, dest: Path) -> None:
    archive = tmp_path / "s.zip"
    archive.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    assert_rejected(archive, dest, "not a valid zip archive")


def test_zip_with_damaged_data_is_rejected(tmp_path: Path, dest: Path) -> None:
    archive = make_zip(tmp_path / "s.zip", {"a.txt": b"hello world " * 100})
    data = bytearray(archive.read_bytes())
    data[40] ^= 0xFF  # inside the compressed data of the only member
    archive.write_bytes(bytes(data))
    assert_rejected(archive, dest, "not a valid zip archive")


def test_truncated_tar_gz_is_rejected(tmp_path: Path, dest: Path) -> None:
    archive = make_tar(
        tmp_path / "s.tgz", [tar_member("a.bin", bytes(range(256)) * 64)], mode="w:gz"
    )
    archive.write_bytes(archive.read_bytes()[:-200])
    assert_rejected(archive, dest, "not a valid tar archive")


def test_existing_destination_is_left_alone(tmp_path: Path, dest: Path) -> None:
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    archive = make_zip(tmp_path / "s.zip", {"a.py": b"x"})
    with pytest.raises(OSError):
        unpack(archive, dest)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["submission"]
    assert (dest / "keep.txt").read_text() == "mine"
