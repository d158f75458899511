"""assignment.toml: loaded, validated, and wrong files named in the error."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradeflow import ConfigurationError, load_assignment

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def write(directory: Path, text: str) -> Path:
    (directory / "assignment.toml").write_text(text)
    return directory


def test_examples_load() -> None:
    for path in EXAMPLES.glob("*/assignment.toml"):
        assignment = load_assignment(path.parent)
        assert assignment.id == path.parent.name
        assert assignment.grader.local_command


def test_limits_and_grader_are_read(tmp_path: Path) -> None:
    assignment = load_assignment(
        write(
            tmp_path,
            'id = "hw1"\ntitle = "T"\nresults_format = "coursera"\n'
            '[grader]\nlocal_command = ["python3", "{grader}/g.py"]\n'
            "[limits]\ntimeout_s = 3\nmemory_mb = 128\n",
        )
    )
    assert assignment.limits.timeout_s == 3
    assert assignment.limits.memory_mb == 128
    assert assignment.results_format == "coursera"
    assert assignment.grader_dir == tmp_path / "grader"


def test_missing_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"no assignment\.toml"):
        load_assignment(tmp_path)


def test_bad_toml_names_the_file(tmp_path: Path) -> None:
    write(tmp_path, "id = \n")
    with pytest.raises(ConfigurationError, match=r"assignment\.toml"):
        load_assignment(tmp_path)


def test_schema_errors_name_the_field(tmp_path: Path) -> None:
    write(tmp_path, 'id = "Bad Id"\ntitle = "T"\n[grader]\nlocal_command = ["x"]\n')
    with pytest.raises(ConfigurationError, match="id"):
        load_assignment(tmp_path)
    write(
        tmp_path,
        'id = "ok"\ntitle = "T"\n[grader]\nlocal_command = ["x"]\n[limits]\nmemory_mb = -1\n',
    )
    with pytest.raises(ConfigurationError, match=r"limits\.memory_mb"):
        load_assignment(tmp_path)


def test_a_grader_needs_an_image_or_a_local_command(tmp_path: Path) -> None:
    write(tmp_path, 'id = "ok"\ntitle = "T"\n')
    with pytest.raises(ConfigurationError, match="image or a local_command"):
        load_assignment(tmp_path)


def test_grader_digest_changes_with_the_grader(tmp_path: Path) -> None:
    write(tmp_path, 'id = "ok"\ntitle = "T"\n[grader]\nlocal_command = ["x"]\n')
    (tmp_path / "grader").mkdir()
    (tmp_path / "grader" / "g.py").write_text("print(1)\n")
    before = load_assignment(tmp_path).grader_digest()
    assert load_assignment(tmp_path).grader_digest() == before
    (tmp_path / "grader" / "g.py").write_text("print(2)\n")
    assert load_assignment(tmp_path).grader_digest() != before
