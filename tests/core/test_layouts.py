"""Layouts as data: what each one tells a backend to build, and how assignments choose one."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import pytest

from gradeflow import ConfigurationError, Limits, load_assignment
from gradeflow._layouts import LAYOUTS, Directory, SubmissionInfo, layout_for
from gradeflow._sandbox import CONTAINER_ROOT, SandboxPaths, grader_environment, shim_command

SANDBOX = SandboxPaths(root=CONTAINER_ROOT, grader_dir=PurePosixPath("/grader"))
INFO = SubmissionInfo(
    assignment_id="hw1", assignment_title="Homework 1", submission_id="s9", student="bob",
    attempt=2, filename="main.py", part_id="part-a",
)  # fmt: skip


def write(directory: Path, body: str) -> Path:
    (directory / "assignment.toml").write_text(
        f'id = "hw1"\ntitle = "T"\n{body}[grader]\nlocal_command = ["x"]\n'
    )
    return directory


def test_an_assignment_without_a_layout_uses_gradeflows(tmp_path: Path) -> None:
    assert load_assignment(write(tmp_path, "")).layout == "gradeflow"


def test_a_coursera_layout_reads_coursera_results(tmp_path: Path) -> None:
    assert load_assignment(write(tmp_path, 'layout = "coursera"\n')).results_format == "coursera"


def test_a_layout_and_a_different_results_format_are_rejected(tmp_path: Path) -> None:
    write(tmp_path, 'layout = "gradescope"\nresults_format = "coursera"\n')
    with pytest.raises(ConfigurationError, match="layout 'gradescope'"):
        load_assignment(tmp_path)


def test_run_as_root_is_an_opt_in(tmp_path: Path) -> None:
    (tmp_path / "assignment.toml").write_text(
        'id = "hw1"\ntitle = "T"\n[grader]\nlocal_command = ["x"]\nrun_as_root = true\n'
    )
    assert layout_for(load_assignment(tmp_path)).run_as_root
    assert not LAYOUTS["gradescope"].run_as_root


def test_the_gradeflow_layout_is_the_contract_tree() -> None:
    paths = LAYOUTS["gradeflow"].paths(SANDBOX)
    assert (paths.submission, paths.results, paths.workdir, paths.mounts) == (
        SANDBOX.submission, SANDBOX.results, SANDBOX.work, (),
    )  # fmt: skip


def test_the_gradeflow_environment_is_the_contract_environment() -> None:
    layout = LAYOUTS["gradeflow"]
    assert layout.environment(layout.paths(SANDBOX), INFO) == grader_environment(SANDBOX)


def test_coursera_collects_only_its_feedback_files_from_shared() -> None:
    paths = LAYOUTS["coursera"].paths(SANDBOX)
    assert paths.results == PurePosixPath("/shared")
    assert paths.result_files == ("feedback.json", "htmlFeedback.html", "txtFeedback.txt")


def test_coursera_hands_the_grader_part_id_filename_and_user_id() -> None:
    layout = LAYOUTS["coursera"]
    env = layout.environment(layout.paths(SANDBOX), INFO)
    assert (env["partId"], env["filename"], env["userId"]) == ("part-a", "main.py", "bob")


def test_gradescope_gives_the_grader_its_source_and_results_directories() -> None:
    paths = LAYOUTS["gradescope"].paths(SANDBOX)
    autograder = PurePosixPath("/autograder")
    assert Directory(autograder / "source", "grader", 0o755) in paths.directories
    assert Directory(autograder / "results", "grader", 0o755) in paths.directories
    assert paths.workdir == autograder


def test_a_root_grader_owns_the_grader_directories_as_uid_0() -> None:
    layout = LAYOUTS["gradescope"]
    rooted = type(layout)(layout.name, layout.results_format, layout.default_command, True)
    paths = rooted.paths(SANDBOX)
    assert {paths.uid_of(d) for d in paths.directories} == {0}


def test_gradescope_metadata_is_shaped_as_gradescope_documents_it() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    raw = LAYOUTS["gradescope"].metadata(INFO, now=when)
    assert raw is not None
    metadata = json.loads(raw)
    assert metadata["id"] == "s9"
    assert metadata["created_at"] == "2026-01-02T03:04:05+00:00"
    assert metadata["assignment"]["title"] == "Homework 1"
    assert metadata["users"] == [{"name": "bob", "email": None, "id": "bob"}]


def test_only_gradescope_has_a_metadata_file() -> None:
    assert LAYOUTS["coursera"].metadata(INFO) is None
    assert LAYOUTS["gradeflow"].metadata(INFO) is None


def test_keep_root_adds_the_shims_keep_root_flag() -> None:
    argv = shim_command(
        "shim", SANDBOX, Limits(), ["g"], digest="d", ready_timeout_s=1, environment={},
        keep_root=True,
    )  # fmt: skip
    assert "--keep-root" in argv[: argv.index("--")]


def test_without_keep_root_the_shim_drops_to_the_grader_uid() -> None:
    argv = shim_command(
        "shim", SANDBOX, Limits(), ["g"], digest="d", ready_timeout_s=1, environment={}
    )
    assert "--keep-root" not in argv
