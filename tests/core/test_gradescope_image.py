"""The build context of an image built from a Gradescope autograder.zip, as Gradescope does."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from gradeflow import ConfigurationError
from gradeflow._gradescope_image import gradescope_build_context

AUTOGRADER = Path(__file__).resolve().parents[2] / "examples" / "gradescope-pyprimes" / "autograder"


def make_zip(path: Path, members: dict[str, tuple[bytes, int]]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, (data, mode) in members.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            archive.writestr(info, data)
    return path


@pytest.fixture
def autograder_zip(tmp_path: Path) -> Path:
    """The example autograder, zipped the way instructors upload it (files at the top)."""
    members = {
        p.relative_to(AUTOGRADER).as_posix(): (p.read_bytes(), p.stat().st_mode & 0o777)
        for p in sorted(AUTOGRADER.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }
    return make_zip(tmp_path / "autograder.zip", members)


def members(context: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(context)) as tar:
        return {info.name: info for info in tar.getmembers()}


def dockerfile_of(context: bytes) -> str:
    with tarfile.open(fileobj=io.BytesIO(context)) as tar:
        handle = tar.extractfile("Dockerfile")
        assert handle is not None
        return handle.read().decode()


def test_the_dockerfile_builds_on_the_base_image(autograder_zip: Path) -> None:
    text = dockerfile_of(gradescope_build_context(autograder_zip, "ubuntu:22.04"))
    assert text.splitlines()[1] == "FROM ubuntu:22.04"


def test_setup_sh_runs_at_build_time_in_the_source_directory(autograder_zip: Path) -> None:
    text = dockerfile_of(gradescope_build_context(autograder_zip, "ubuntu:22.04"))
    assert "COPY source/ /autograder/source/" in text
    assert "RUN cd /autograder/source && bash ./setup.sh" in text


def test_run_autograder_is_installed_and_is_the_command(autograder_zip: Path) -> None:
    text = dockerfile_of(gradescope_build_context(autograder_zip, "ubuntu:22.04"))
    assert "cp /autograder/source/run_autograder /autograder/run_autograder" in text
    assert text.rstrip().endswith('CMD ["/autograder/run_autograder"]')


def test_the_grader_user_owns_source_and_results(autograder_zip: Path) -> None:
    text = dockerfile_of(gradescope_build_context(autograder_zip, "ubuntu:22.04"))
    assert "chown -R 65534:65534 /autograder/source /autograder/results" in text


def test_the_zips_files_are_in_the_context_under_source(autograder_zip: Path) -> None:
    names = set(members(gradescope_build_context(autograder_zip, "ubuntu:22.04")))
    assert {"source/setup.sh", "source/run_autograder", "source/run_tests.py"} <= names


def test_run_autograder_stays_executable(autograder_zip: Path) -> None:
    context = members(gradescope_build_context(autograder_zip, "ubuntu:22.04"))
    assert context["source/run_autograder"].mode == 0o755


def test_other_files_keep_their_execute_bits_or_lack_of_them(autograder_zip: Path) -> None:
    context = members(gradescope_build_context(autograder_zip, "ubuntu:22.04"))
    assert (context["source/setup.sh"].mode, context["source/run_tests.py"].mode) == (0o755, 0o644)


def test_the_context_is_reproducible(autograder_zip: Path) -> None:
    first = gradescope_build_context(autograder_zip, "ubuntu:22.04")
    assert gradescope_build_context(autograder_zip, "ubuntu:22.04") == first


def test_a_zip_slip_autograder_is_rejected(tmp_path: Path) -> None:
    bad = make_zip(
        tmp_path / "evil.zip",
        {"setup.sh": (b"", 0o755), "run_autograder": (b"", 0o755), "../evil": (b"x", 0o644)},
    )
    with pytest.raises(ConfigurationError, match="unsafe autograder zip"):
        gradescope_build_context(bad, "ubuntu:22.04")


def test_an_autograder_without_run_autograder_at_the_top_is_rejected(tmp_path: Path) -> None:
    nested = make_zip(
        tmp_path / "nested.zip",
        {"hw/setup.sh": (b"", 0o755), "hw/run_autograder": (b"", 0o755)},
    )
    with pytest.raises(ConfigurationError, match="at the top of the zip"):
        gradescope_build_context(nested, "ubuntu:22.04")


def test_a_file_that_is_not_a_zip_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "autograder.zip"
    path.write_text("not a zip")
    with pytest.raises(ConfigurationError, match="not a zip"):
        gradescope_build_context(path, "ubuntu:22.04")


def test_a_base_image_with_a_newline_is_rejected(autograder_zip: Path) -> None:
    with pytest.raises(ConfigurationError, match="not an image reference"):
        gradescope_build_context(autograder_zip, "ubuntu\nRUN curl evil")
