"""Each layout on the local backend: the tree, permissions and environment a grader gets.

Every grader here is a shell script that prints what it observed; `reporting`
wraps it so that the observation arrives as the result's feedback, written to
the layout's own results file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gradeflow import ConfigurationError, GradeStatus
from gradeflow.launchers import _local

from .conftest import Grade, MakeAssignment, as_root

_WRITERS = {
    "gradeflow": 'json.dump({"score": 1, "max_score": 1, "output": sys.stdin.read()}, '
    'open(os.environ["GRADEFLOW_RESULTS_DIR"] + "/results.json", "w"))',
    "coursera": 'json.dump({"fractionalScore": 1, "feedback": sys.stdin.read()}, '
    'open("/shared/feedback.json", "w"))',
    "gradescope": 'json.dump({"score": 1, "max_score": 1, "output": sys.stdin.read()}, '
    'open("/autograder/results/results.json", "w"))',
}


def reporting(layout: str, commands: str) -> str:
    """A grader script: run ``commands``, their output becomes the feedback."""
    return f"( {commands} ) 2>&1 | python3 -c 'import json, os, sys; {_WRITERS[layout]}'\n"


def can_write(path: str) -> str:
    return f'if touch "{path}" 2>/dev/null; then echo writable; else echo read-only; fi'


# -- coursera ------------------------------------------------------------------


@as_root
def test_a_coursera_grader_finds_the_submission_in_shared_submission(
    grade_file: Grade, make_assignment: MakeAssignment
) -> None:
    assignment = make_assignment(reporting("coursera", "ls /shared/submission"), layout="coursera")
    assert grade_file(assignment).feedback.strip() == "answer.py"


@as_root
def test_a_coursera_grader_cannot_write_its_submission(
    grade_file: Grade, make_assignment: MakeAssignment
) -> None:
    script = reporting("coursera", can_write("/shared/submission/answer.py"))
    assert grade_file(make_assignment(script, layout="coursera")).feedback.strip() == "read-only"


@as_root
def test_a_coursera_grader_may_write_into_shared(
    grade_file: Grade, make_assignment: MakeAssignment
) -> None:
    script = reporting("coursera", can_write("/shared/scratch.txt"))
    assert grade_file(make_assignment(script, layout="coursera")).feedback.strip() == "writable"


@as_root
def test_a_coursera_grader_cannot_write_its_grader_directory(
    grade_file: Grade, make_assignment: MakeAssignment
) -> None:
    script = reporting("coursera", can_write("$GRADEFLOW_GRADER_DIR/planted"))
    assert grade_file(make_assignment(script, layout="coursera")).feedback.strip() == "read-only"


@as_root
def test_a_coursera_grader_gets_part_id_filename_and_user_id(
    grade_file: Grade, make_assignment: MakeAssignment
) -> None:
    script = reporting("coursera", 'echo "$partId $filename $userId"')
    assignment = make_assignment(script, layout="coursera", grader='part_id = "p1"\n')
    assert grade_file(assignment).feedback.strip() == "p1 answer.py alice"


@as_root
def test_coursera_html_feedback_is_the_feedback_with_type_html(
    grade_file: Grade, make_assignment: MakeAssignment
) -> None:
    script = (
        "echo '<p>well done</p>' > /shared/htmlFeedback.html\n"
        'echo \'{"fractionalScore": 0.5, "feedback": "short", "feedbackType": "TXT"}\''
        " > /shared/feedback.json\n"
    )
    result = grade_file(make_assignment(script, layout="coursera"))
    assert (result.feedback.strip(), result.feedback_type) == ("<p>well done</p>", "html")


@as_root
def test_coursera_files_other_than_its_feedback_are_not_collected(
    grade_file: Grade, make_assignment: MakeAssignment
) -> None:
    script = (
        'echo \'{"score": 9, "max_score": 9}\' > /shared/results.json\n'
        "echo '{\"fractionalScore\": 0.25}' > /shared/feedback.json\n"
    )
    result = grade_file(make_assignment(script, layout="coursera"))
    assert (result.status, result.score) == (GradeStatus.GRADED, 0.25)


@as_root
def test_the_hosts_shared_directory_is_left_empty_and_unmounted(
    grade_file: Grade, make_assignment: MakeAssignment
) -> None:
    script = "echo '{\"fractionalScore\": 1}' > /shared/feedback.json\n"
    grade_file(make_assignment(script, layout="coursera"))
    assert list(Path("/shared").iterdir()) == []
    assert " /shared " not in Path("/proc/self/mountinfo").read_text()


# -- gradescope ----------------------------------------------------------------


@as_root
def test_a_gradescope_autograder_runs_in_autograder_with_its_submission(
    grade_file: Grade, make_assignment: MakeAssignment
) -> None:
    script = reporting("gradescope", "pwd; ls /autograder/submission")
    result = grade_file(make_assignment(script, layout="gradescope"))
    assert result.feedback.split() == ["/autograder", "answer.py"]


@as_root
def test_a_gradescope_autograder_runs_from_its_copy_in_autograder(
    grade_file: Grade, make_assignment: MakeAssignment
) -> None:
    script = reporting("gradescope", 'echo "$0"; ls /autograder/source')
    result = grade_file(make_assignment(script, layout="gradescope"))
    assert result.feedback.split() == ["/autograder/run_autograder", "run_autograder"]


@as_root
def test_a_gradescope_autograder_may_write_its_source_directory(
    grade_file: Grade, make_assignment: MakeAssignment
) -> None:
    script = reporting("gradescope", can_write("/autograder/source/run_autograder"))
    result = grade_file(make_assignment(script, layout="gradescope"))
    assert result.feedback.strip() == "writable"


@as_root
def test_a_gradescope_autograder_cannot_write_its_submission(
    grade_file: Grade, make_assignment: MakeAssignment
) -> None:
    script = reporting("gradescope", can_write("/autograder/submission/answer.py"))
    result = grade_file(make_assignment(script, layout="gradescope"))
    assert result.feedback.strip() == "read-only"


@as_root
def test_a_gradescope_autograder_runs_unprivileged_by_default(
    grade_file: Grade, make_assignment: MakeAssignment
) -> None:
    script = reporting("gradescope", "id -u")
    assert grade_file(make_assignment(script, layout="gradescope")).feedback.strip() == "65534"


@as_root
def test_submission_metadata_json_describes_the_submission(
    grade_file: Grade, make_assignment: MakeAssignment
) -> None:
    script = reporting("gradescope", "cat /autograder/submission_metadata.json")
    result = grade_file(make_assignment(script, layout="gradescope"), submission_id="sub-7")
    metadata = json.loads(result.feedback)
    assert metadata["id"] == "sub-7"
    assert metadata["assignment"]["id"] == "hw"
    assert metadata["assignment"]["title"] == "Layout test"
    assert metadata["users"] == [{"name": "alice", "email": None, "id": "alice"}]
    assert metadata["gradeflow"]["attempt"] == 1
    assert metadata["created_at"]


@as_root
def test_gradescope_results_are_parsed_with_their_visibility(
    grade_file: Grade, make_assignment: MakeAssignment
) -> None:
    script = (
        'echo \'{"score": 3, "max_score": 4, "stdout_visibility": "visible", "tests": ['
        '{"name": "seen", "score": 1, "max_score": 1},'
        '{"name": "secret", "score": 2, "max_score": 3, "visibility": "hidden"}]}\''
        " > /autograder/results/results.json\n"
    )
    result = grade_file(make_assignment(script, layout="gradescope"))
    assert (result.score, result.max_score, result.stdout_visibility) == (3, 4, "visible")
    assert [(t.name, t.visibility) for t in result.tests] == [
        ("seen", "visible"),
        ("secret", "hidden"),
    ]


# -- gradeflow -----------------------------------------------------------------


@as_root
def test_a_gradeflow_grader_cannot_write_its_grader_directory(
    grade_file: Grade, make_assignment: MakeAssignment
) -> None:
    script = reporting("gradeflow", can_write("$GRADEFLOW_GRADER_DIR/planted"))
    assert grade_file(make_assignment(script)).feedback.strip() == "read-only"


def test_a_gradeflow_grader_still_works_in_gradeflows_own_tree(
    grade_file: Grade, make_assignment: MakeAssignment
) -> None:
    script = reporting("gradeflow", 'ls "$GRADEFLOW_SUBMISSION_DIR"; basename "$PWD"')
    assert grade_file(make_assignment(script)).feedback.split() == ["answer.py", "work"]


# -- run_as_root ---------------------------------------------------------------

ROOT = "run_as_root = true\n"


@as_root
def test_run_as_root_keeps_uid_0(grade_file: Grade, make_assignment: MakeAssignment) -> None:
    script = reporting("gradescope", "id -u")
    result = grade_file(make_assignment(script, layout="gradescope", grader=ROOT))
    assert result.feedback.strip() == "0"


@as_root
def test_run_as_root_has_no_effective_capabilities(
    grade_file: Grade, make_assignment: MakeAssignment
) -> None:
    script = reporting("gradescope", "grep '^CapEff:' /proc/self/status")
    result = grade_file(make_assignment(script, layout="gradescope", grader=ROOT))
    assert result.feedback.split() == ["CapEff:", "0000000000000000"]


@as_root
def test_run_as_root_still_sets_no_new_privs(
    grade_file: Grade, make_assignment: MakeAssignment
) -> None:
    script = reporting("gradescope", "grep '^NoNewPrivs:' /proc/self/status")
    result = grade_file(make_assignment(script, layout="gradescope", grader=ROOT))
    assert result.feedback.split() == ["NoNewPrivs:", "1"]


@as_root
def test_run_as_root_cannot_mount(grade_file: Grade, make_assignment: MakeAssignment) -> None:
    script = reporting(
        "gradescope",
        "if mount -t tmpfs none /autograder/results 2>/dev/null; then echo mounted; "
        "else echo refused; fi",
    )
    result = grade_file(make_assignment(script, layout="gradescope", grader=ROOT))
    assert result.feedback.strip() == "refused"


# -- refusals ------------------------------------------------------------------


def test_a_coursera_layout_without_root_is_a_configuration_error(
    grade_file: Grade, make_assignment: MakeAssignment, monkeypatch: pytest.MonkeyPatch
) -> None:
    assignment = make_assignment("exit 0\n", layout="coursera")
    monkeypatch.setattr(_local.os, "geteuid", lambda: 1000)
    with pytest.raises(ConfigurationError, match="needs root"):
        grade_file(assignment)


@as_root
def test_a_mountpoint_that_is_not_a_directory_is_a_configuration_error(tmp_path: Path) -> None:
    planted = tmp_path / "shared"
    planted.write_text("not a directory")
    with pytest.raises(ConfigurationError, match="not a directory"):
        _local._ensure_mountpoint(planted)
