"""Hostile graders on the docker backend: each is contained and gets the right status.

Each grader is a small Python program in a throwaway image FROM the offline
base image; the host (this test process) must be unharmed afterwards.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from gradeflow import GradeStatus

from .conftest import GradeDocker, HostileAssignment

pytestmark = pytest.mark.docker

_REPORT = """
import json, os
def report(score, output):
    with open(os.path.join(os.environ["GRADEFLOW_RESULTS_DIR"], "results.json"), "w") as f:
        json.dump({"score": score, "max_score": 1, "output": output}, f)
"""


def reporting(body: str) -> str:
    """A grader script with ``report(score, output)`` defined (writes results.json)."""
    return _REPORT + body


def test_an_endless_loop_is_timed_out(
    hostile_assignment: HostileAssignment, grade_docker: GradeDocker
) -> None:
    assignment = hostile_assignment("while True:\n    pass\n", limits="timeout_s = 2")
    result = grade_docker(assignment)
    assert result.status is GradeStatus.TIMED_OUT


def test_a_memory_hog_is_killed_by_the_cgroup_and_reported_as_memory_exceeded(
    hostile_assignment: HostileAssignment, grade_docker: GradeDocker
) -> None:
    script = "hog = []\nwhile True:\n    hog.append(bytearray(8 << 20))\n"
    assignment = hostile_assignment(script, limits="timeout_s = 20\nmemory_mb = 64")
    result = grade_docker(assignment)
    assert result.status is GradeStatus.MEMORY_EXCEEDED
    assert result.resources.oom_killed is True


def test_a_fork_bomb_hits_the_pids_limit_and_the_run_still_ends(
    hostile_assignment: HostileAssignment, grade_docker: GradeDocker
) -> None:
    script = (
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    )
    assignment = hostile_assignment(script, limits="timeout_s = 4\nnproc = 32")
    started = time.monotonic()
    result = grade_docker(assignment)
    assert result.status in {GradeStatus.TIMED_OUT, GradeStatus.GRADER_ERROR}
    assert time.monotonic() - started < 30
    assert subprocess.run(["true"], timeout=10).returncode == 0  # the host can still fork


def test_a_gigabyte_of_output_is_output_exceeded(
    hostile_assignment: HostileAssignment, grade_docker: GradeDocker
) -> None:
    script = reporting(
        "import sys\nchunk = b'x' * (1 << 20)\n"
        "for _ in range(1024):\n    sys.stdout.buffer.write(chunk)\n"
        "sys.stdout.flush()\nreport(1, 'flooded')\n"
    )
    assignment = hostile_assignment(script, limits="timeout_s = 60\noutput_limit_kb = 1024")
    result = grade_docker(assignment)
    assert result.status is GradeStatus.OUTPUT_EXCEEDED
    assert result.resources.stdout_bytes == 1 << 30
    assert len(result.stdout_tail) <= 8 << 10


def test_the_grader_has_no_network_at_all(
    hostile_assignment: HostileAssignment, grade_docker: GradeDocker
) -> None:
    script = reporting("""
import socket
outcomes = {}
for host, port in [("127.0.0.1", 80), ("1.1.1.1", 53), ("10.0.0.1", 443), ("8.8.8.8", 53)]:
    try:
        socket.create_connection((host, port), timeout=2).close()
        outcomes[host] = "connected"
    except OSError as exc:
        outcomes[host] = type(exc).__name__
outcomes["interfaces"] = sorted(os.listdir("/sys/class/net"))
report(int("connected" not in outcomes.values()), json.dumps(outcomes))
""")
    result = grade_docker(hostile_assignment(script))
    outcomes = json.loads(result.feedback or "{}")
    assert result.score == 1, outcomes
    assert outcomes["interfaces"] == ["lo"]


def test_the_grader_sees_neither_the_flow_environment_nor_the_hosts(
    hostile_assignment: HostileAssignment,
    grade_docker: GradeDocker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-leak-to-graders")
    script = reporting("""
seen = dict(os.environ)
for path in ("/proc/1/environ", "/proc/self/environ"):
    try:
        seen[path] = open(path, "rb").read().decode(errors="replace")
    except OSError as exc:
        seen[path] = type(exc).__name__
report(1, json.dumps(seen))
""")
    result = grade_docker(hostile_assignment(script))
    seen = json.loads(result.feedback or "{}")
    assert "do-not-leak-to-graders" not in result.model_dump_json()
    assert "AWS_SECRET_ACCESS_KEY" not in seen
    assert seen["/proc/1/environ"] == "PermissionError"  # the shim's own, as root
    assert set(seen) - {"/proc/1/environ", "/proc/self/environ"} <= {
        "PATH", "HOME", "LANG", "PYTHONDONTWRITEBYTECODE", "GRADEFLOW_SUBMISSION_DIR",
        "GRADEFLOW_RESULTS_DIR", "GRADEFLOW_WORK_DIR", "GRADEFLOW_GRADER_DIR",
    }  # fmt: skip


def test_the_grader_can_write_only_its_work_results_and_tmp_dirs(
    hostile_assignment: HostileAssignment, grade_docker: GradeDocker
) -> None:
    script = reporting("""
targets = ["/etc/evil", "/evil", "/grader/evil", "/grading/evil", "/grading/submission/evil",
           "/grading/shim/evil", "/grading/bin/evil", "/grading/bin/gradeflow-shim",
           "/grading/work/ok", "/grading/results/ok", "/tmp/ok"]
wrote = []
for target in targets:
    try:
        with open(target, "ab") as f:
            f.write(b"x")
        wrote.append(target)
    except OSError:
        pass
report(1, json.dumps(wrote))
""")
    result = grade_docker(hostile_assignment(script))
    assert json.loads(result.feedback or "[]") == [
        "/grading/work/ok", "/grading/results/ok", "/tmp/ok",
    ]  # fmt: skip


def test_ptrace_is_refused(
    hostile_assignment: HostileAssignment, grade_docker: GradeDocker
) -> None:
    script = reporting("""
import ctypes, errno, subprocess
libc = ctypes.CDLL(None, use_errno=True)
child = subprocess.Popen(["sleep", "30"])
outcomes = []
for request, pid in ((16, 1), (16, child.pid), (0, 0)):  # PTRACE_ATTACH x2, PTRACE_TRACEME
    rc = libc.ptrace(request, pid, None, None)
    outcomes.append(errno.errorcode.get(ctypes.get_errno(), "OK") if rc == -1 else "OK")
child.kill()
report(1, json.dumps(outcomes))
""")
    result = grade_docker(hostile_assignment(script))
    assert json.loads(result.feedback or "[]") == ["EPERM", "EPERM", "EPERM"]


def test_a_daemon_left_behind_is_killed_when_the_grader_exits(
    hostile_assignment: HostileAssignment, grade_docker: GradeDocker
) -> None:
    script = reporting("""
import time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(600)  # the daemon: would keep the container alive for ten minutes
    os._exit(0)
time.sleep(0.2)
report(1, "left a daemon")
""")
    started = time.monotonic()
    result = grade_docker(hostile_assignment(script, limits="timeout_s = 120"))
    assert result.status is GradeStatus.GRADED
    assert time.monotonic() - started < 20
