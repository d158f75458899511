"""Each layout on the docker backend: the tree, permissions and environment a grader gets.

The docker twin of tests/layouts/test_local_layouts.py. One grader image per
layout (the gradescope one built from an autograder.zip the way Gradescope
builds it); the grader runs the submission as shell commands and reports
their output as the feedback, in the layout's own results file -- unless the
commands wrote that file themselves. So each test's submission is the one
observation it asserts.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import docker
import pytest

from gradeflow import GradeRequest, GradeResult, GradeStatus, Settings
from gradeflow._gradescope_image import build_gradescope_image
from gradeflow._images import BASE_IMAGE
from gradeflow._pipeline import grade
from gradeflow._runtime import open_store
from gradeflow._shim_build import ShimArtifact
from gradeflow.launchers._docker import DockerLauncher

pytestmark = pytest.mark.docker

Grade = Callable[..., GradeResult]

_WRITERS = {
    "gradeflow": 'json.dump({"score": 1, "max_score": 1, "output": sys.stdin.read()}, '
    'open(os.environ["GRADEFLOW_RESULTS_DIR"] + "/results.json", "w"))',
    "coursera": 'json.dump({"fractionalScore": 1, "feedback": sys.stdin.read()}, '
    'open("/shared/feedback.json", "w"))',
    "gradescope": 'json.dump({"score": 1, "max_score": 1, "output": sys.stdin.read()}, '
    'open("/autograder/results/results.json", "w"))',
}
_SUBMISSION = {
    "gradeflow": '"$GRADEFLOW_SUBMISSION_DIR/answer.py"',
    "coursera": "/shared/submission/answer.py",
    "gradescope": "/autograder/submission/answer.py",
}
_RESULTS = {
    "gradeflow": '"$GRADEFLOW_RESULTS_DIR/results.json"',
    "coursera": "/shared/feedback.json",
    "gradescope": "/autograder/results/results.json",
}


def _grader(layout: str) -> str:
    return (
        "#!/bin/sh\n"
        f"out=$(sh {_SUBMISSION[layout]} 2>&1)\n"
        f"[ -e {_RESULTS[layout]} ] && exit 0\n"
        f"printf '%s' \"$out\" | python3 -c 'import json, os, sys; {_WRITERS[layout]}'\n"
    )


@pytest.fixture(scope="module")
def layout_images(
    docker_client: docker.DockerClient,
    grader_images: list[str],
    test_images: list[str],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    """One grader image per layout, by layout name."""
    scratch = tmp_path_factory.mktemp("layout-images")
    images: dict[str, str] = {}
    for layout, workdir in (("gradeflow", "/"), ("coursera", "/grader")):
        tag = f"gradeflow-tests/layout-{layout}:1"
        context = scratch / layout
        (context / "grader").mkdir(parents=True)
        (context / "grader" / "run_autograder").write_text(_grader(layout))
        (context / "Dockerfile").write_text(
            f"FROM {BASE_IMAGE}\nCOPY grader /grader\nWORKDIR {workdir}\n"
            'ENTRYPOINT ["/bin/sh", "/grader/run_autograder"]\n'
        )
        docker_client.images.build(path=str(context), tag=tag, rm=True, network_mode="host")
        test_images.append(tag)
        images[layout] = tag
    autograder = scratch / "autograder.zip"
    with zipfile.ZipFile(autograder, "w") as archive:
        archive.writestr("setup.sh", "#!/bin/sh\ntouch /autograder/source/set-up\n")
        archive.writestr("run_autograder", _grader("gradescope"))
    tag = "gradeflow-tests/layout-gradescope:1"
    build_gradescope_image(docker_client, autograder, tag=tag, base_image=BASE_IMAGE)
    test_images.append(tag)
    images["gradescope"] = tag
    return images


@pytest.fixture
def grade_commands(
    settings: Settings,
    shim_artifact: ShimArtifact,
    tmp_path: Path,
    docker_client: docker.DockerClient,
    layout_images: dict[str, str],
) -> Grade:
    """Grade ``commands`` (the submission) under ``layout`` on the docker backend, as alice."""
    store = open_store(settings)
    tmp_path.chmod(0o755)

    def run(
        commands: str,
        *,
        layout: str = "gradeflow",
        grader: str = "",
        submission_id: str = "s1",
    ) -> GradeResult:
        root = tmp_path / f"hw-{layout}"
        root.mkdir(exist_ok=True)
        fmt = 'results_format = "gradescope"\n' if layout == "gradeflow" else ""
        (root / "assignment.toml").write_text(
            f'id = "hw"\ntitle = "Layout test"\nlayout = "{layout}"\n{fmt}'
            f'submission_filename = "answer.py"\n'
            f'[grader]\nimage = "{layout_images[layout]}"\n{grader}'
            "[limits]\ntimeout_s = 20\nkill_grace_s = 0.5\n"
        )
        submission = tmp_path / "submitted.py"
        submission.write_text(commands + "\n")
        request = GradeRequest(
            assignment="hw",
            submission=submission_id,
            student="alice",
            submission_path=str(submission),
            assignment_dir=str(root),
            backend="docker",
        )
        launcher = DockerLauncher(docker_client)
        return grade(request, settings=settings, store=store, launcher=launcher, shim=shim_artifact)

    return run


def can_write(path: str) -> str:
    return f'if touch "{path}" 2>/dev/null; then echo writable; else echo read-only; fi'


def feedback(result: GradeResult) -> str:
    assert result.status == GradeStatus.GRADED, (result.status, result.notes, result.stderr)
    return result.feedback.strip()


# -- coursera ------------------------------------------------------------------


def test_a_coursera_grader_finds_the_submission_in_shared_submission(
    grade_commands: Grade,
) -> None:
    assert feedback(grade_commands("ls /shared/submission", layout="coursera")) == "answer.py"


def test_a_coursera_grader_cannot_write_its_submission(grade_commands: Grade) -> None:
    result = grade_commands(can_write("/shared/submission/answer.py"), layout="coursera")
    assert feedback(result) == "read-only"


def test_a_coursera_grader_cannot_add_files_to_its_submission(grade_commands: Grade) -> None:
    result = grade_commands(can_write("/shared/submission/planted"), layout="coursera")
    assert feedback(result) == "read-only"


def test_a_coursera_grader_may_write_into_shared(grade_commands: Grade) -> None:
    result = grade_commands(can_write("/shared/scratch.txt"), layout="coursera")
    assert feedback(result) == "writable"


def test_a_coursera_grader_cannot_write_its_grader_directory(grade_commands: Grade) -> None:
    result = grade_commands(can_write("$GRADEFLOW_GRADER_DIR/planted"), layout="coursera")
    assert feedback(result) == "read-only"


def test_a_coursera_grader_runs_unprivileged_in_its_images_workdir(grade_commands: Grade) -> None:
    assert feedback(grade_commands("id -u; pwd", layout="coursera")).split() == ["65534", "/grader"]


def test_a_coursera_grader_gets_part_id_filename_and_user_id(grade_commands: Grade) -> None:
    result = grade_commands(
        'echo "$partId $filename $userId"', layout="coursera", grader='part_id = "p1"\n'
    )
    assert feedback(result) == "p1 answer.py alice"


def test_coursera_html_feedback_is_the_feedback_with_type_html(grade_commands: Grade) -> None:
    commands = (
        "echo '<p>well done</p>' > /shared/htmlFeedback.html\n"
        'echo \'{"fractionalScore": 0.5, "feedback": "short", "feedbackType": "TXT"}\''
        " > /shared/feedback.json"
    )
    result = grade_commands(commands, layout="coursera")
    assert (feedback(result), result.feedback_type, result.score) == (
        "<p>well done</p>",
        "html",
        0.5,
    )


def test_coursera_files_other_than_its_feedback_are_not_collected(grade_commands: Grade) -> None:
    commands = (
        'echo \'{"score": 9, "max_score": 9}\' > /shared/results.json\n'
        "echo '{\"fractionalScore\": 0.25}' > /shared/feedback.json"
    )
    result = grade_commands(commands, layout="coursera")
    assert (result.status, result.score, result.max_score) == (GradeStatus.GRADED, 0.25, 1.0)


# -- gradescope ----------------------------------------------------------------


def test_a_gradescope_autograder_runs_in_autograder_with_its_submission(
    grade_commands: Grade,
) -> None:
    result = grade_commands("pwd; ls /autograder/submission", layout="gradescope")
    assert feedback(result).split() == ["/autograder", "answer.py"]


def test_a_gradescope_autograder_runs_from_its_image_built_the_gradescope_way(
    grade_commands: Grade,
) -> None:
    result = grade_commands("ls /autograder /autograder/source", layout="gradescope")
    assert feedback(result).split() == [
        "/autograder:", "results", "run_autograder", "source", "submission",
        "submission_metadata.json",
        "/autograder/source:", "run_autograder",
        "set-up",  # setup.sh ran at build time, in /autograder/source
        "setup.sh",
    ]  # fmt: skip


def test_a_gradescope_autograder_may_write_its_source_and_results(grade_commands: Grade) -> None:
    commands = f"{can_write('/autograder/source/run_autograder')}; " + can_write(
        "/autograder/results/extra.txt"
    )
    result = grade_commands(commands, layout="gradescope")
    assert feedback(result).split() == ["writable", "writable"]


def test_a_gradescope_autograder_cannot_write_its_submission_or_metadata(
    grade_commands: Grade,
) -> None:
    commands = "; ".join(
        can_write(path)
        for path in (
            "/autograder/submission/answer.py",
            "/autograder/submission/planted",
            "/autograder/submission_metadata.json",
            "/autograder/planted",
        )
    )
    result = grade_commands(commands, layout="gradescope")
    assert feedback(result).split() == ["read-only"] * 4


def test_a_gradescope_autograder_runs_unprivileged_by_default(grade_commands: Grade) -> None:
    assert feedback(grade_commands("id -u", layout="gradescope")) == "65534"


def test_submission_metadata_json_describes_the_submission(grade_commands: Grade) -> None:
    result = grade_commands(
        "cat /autograder/submission_metadata.json", layout="gradescope", submission_id="sub-7"
    )
    metadata = json.loads(feedback(result))
    assert metadata["id"] == "sub-7"
    assert metadata["assignment"]["id"] == "hw"
    assert metadata["assignment"]["title"] == "Layout test"
    assert metadata["users"] == [{"name": "alice", "email": None, "id": "alice"}]
    assert metadata["gradeflow"] == {"attempt": 1, "filename": "answer.py"}


def test_gradescope_results_are_parsed_and_hidden_tests_kept_from_students(
    grade_commands: Grade,
) -> None:
    commands = (
        'echo \'{"score": 3, "max_score": 4, "stdout_visibility": "visible", "tests": ['
        '{"name": "seen", "score": 1, "max_score": 1},'
        '{"name": "secret", "score": 2, "max_score": 3, "visibility": "hidden"}]}\''
        " > /autograder/results/results.json"
    )
    result = grade_commands(commands, layout="gradescope")
    assert (result.score, result.max_score, result.stdout_visibility) == (3, 4, "visible")
    assert [(t.name, t.visibility) for t in result.tests] == [
        ("seen", "visible"),
        ("secret", "hidden"),
    ]
    view = result.student_view(after_due_date=False, published=True)
    assert [t.name for t in view.tests] == ["seen"]


# -- gradeflow -----------------------------------------------------------------


def test_a_gradeflow_grader_cannot_write_its_grader_directory(grade_commands: Grade) -> None:
    result = grade_commands(can_write("$GRADEFLOW_GRADER_DIR/planted"))
    assert feedback(result) == "read-only"


def test_a_gradeflow_grader_still_works_in_gradeflows_own_tree(grade_commands: Grade) -> None:
    result = grade_commands('ls "$GRADEFLOW_SUBMISSION_DIR"; pwd; id -u')
    assert feedback(result).split() == ["answer.py", "/grading/work", "65534"]


def test_no_layout_directory_appears_in_a_gradeflow_container(grade_commands: Grade) -> None:
    result = grade_commands("ls -d /shared /autograder 2>&1 | wc -l; ls /shared 2>/dev/null")
    assert feedback(result) == "2"  # two "No such file" lines, nothing listed


# -- the container's hardening holds under every layout ------------------------


@pytest.mark.parametrize("layout", ["gradeflow", "coursera", "gradescope"])
def test_the_root_filesystem_is_read_only_and_there_is_no_network(
    grade_commands: Grade, layout: str
) -> None:
    commands = can_write("/etc/planted") + "; grep -c : /proc/net/dev"
    result = grade_commands(commands, layout=layout)
    assert feedback(result).split() == ["read-only", "1"]  # loopback only


# -- run_as_root ---------------------------------------------------------------

ROOT = "run_as_root = true\n"


@pytest.mark.parametrize("layout", ["gradeflow", "coursera", "gradescope"])
def test_run_as_root_keeps_uid_0_without_capabilities_and_with_no_new_privs(
    grade_commands: Grade, layout: str
) -> None:
    commands = "id -u; grep -E '^(CapEff|NoNewPrivs):' /proc/self/status"
    result = grade_commands(commands, layout=layout, grader=ROOT)
    assert feedback(result).split() == ["0", "CapEff:", "0000000000000000", "NoNewPrivs:", "1"]


def test_run_as_root_may_write_where_the_grader_may(grade_commands: Grade) -> None:
    commands = "; ".join(
        can_write(path)
        for path in (
            "/autograder/source/new",
            "/autograder/results/extra",
            "$HOME/scratch",
            "/tmp/scratch",
            "/autograder/submission/planted",
        )
    )
    result = grade_commands(commands, layout="gradescope", grader=ROOT)
    assert feedback(result).split() == ["writable"] * 4 + ["read-only"]


def test_run_as_root_cannot_mount(grade_commands: Grade) -> None:
    commands = (
        "if mount -t tmpfs none /autograder/results 2>/dev/null; then echo mounted; "
        "else echo refused; fi"
    )
    assert feedback(grade_commands(commands, layout="gradescope", grader=ROOT)) == "refused"
