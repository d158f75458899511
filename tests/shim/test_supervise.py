"""Exit codes, signals, timeouts, descendants and output capture."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

RunShim = Callable[..., Any]
PYTHON = "/usr/bin/python3"


@pytest.mark.parametrize("code", [0, 1, 42])
def test_exit_codes_pass_through(run_shim: RunShim, code: int) -> None:
    run = run_shim("/bin/sh", "-c", f"exit {code}")
    assert run.returncode == code
    assert run.envelope["status"] == "exited"
    assert run.envelope["exit_code"] == code
    assert run.envelope["signal"] is None
    assert run.envelope["error"] is None
    assert run.event("exited")["exit_code"] == code


def test_death_by_signal_is_128_plus_n(run_shim: RunShim) -> None:
    run = run_shim("/bin/sh", "-c", "kill -SEGV $$")
    assert run.returncode == 139
    assert run.envelope["status"] == "signaled"
    assert run.envelope["signal"] == 11
    assert run.envelope["exit_code"] is None


def test_missing_program_is_127(run_shim: RunShim, workdir: Path) -> None:
    run = run_shim(str(workdir / "no-such-program"))
    assert run.returncode == 127
    assert run.envelope["status"] == "spawn_failed"
    assert run.envelope["error"].endswith("No such file or directory")
    assert run.envelope["error"].startswith("execve(")


def test_missing_program_on_path_is_127(run_shim: RunShim) -> None:
    run = run_shim("definitely-not-a-program-xyz")
    assert run.returncode == 127


def test_program_found_on_the_safe_path(run_shim: RunShim) -> None:
    run = run_shim("true")
    assert run.returncode == 0


def test_non_executable_is_126(run_shim: RunShim, workdir: Path) -> None:
    script = workdir / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    run = run_shim(str(script))
    assert run.returncode == 126
    assert run.envelope["status"] == "spawn_failed"
    assert run.envelope["error"].endswith("Permission denied")


def test_busy_loop_is_killed_at_the_timeout(run_shim: RunShim) -> None:
    run = run_shim("/bin/sh", "-c", "while :; do :; done", options=["--timeout", "0.5"])
    assert run.returncode == 124
    assert run.envelope["status"] == "timed_out"
    assert 450 <= run.envelope["wall_ms"] < 4000
    assert run.envelope["cpu_user_ms"] + run.envelope["cpu_sys_ms"] > 100


def test_sleeping_program_is_killed_at_the_timeout(run_shim: RunShim) -> None:
    run = run_shim("/bin/sleep", "60", options=["--timeout", "0.3"])
    assert run.returncode == 124
    assert run.envelope["status"] == "timed_out"
    assert run.envelope["signal"] == signal.SIGTERM
    assert run.envelope["wall_ms"] < 3000


def test_sigterm_ignoring_program_gets_sigkill_after_grace(run_shim: RunShim) -> None:
    started = time.monotonic()
    run = run_shim(
        "/bin/sh",
        "-c",
        "trap '' TERM; while :; do sleep 0.05; done",
        options=["--timeout", "0.3", "--kill-grace", "0.5"],
    )
    assert run.returncode == 124
    assert run.envelope["signal"] == signal.SIGKILL
    assert 0.8 <= time.monotonic() - started < 5


DAEMON = """
import os, sys, time
pidfile = sys.argv[1]
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        with open(pidfile + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename(pidfile + ".tmp", pidfile)
        while True:
            time.sleep(1)
    os._exit(0)
while not os.path.exists(pidfile):
    time.sleep(0.01)
"""


def test_escaped_daemon_dies_with_the_shim(run_shim: RunShim, workdir: Path) -> None:
    pidfile = workdir / "daemon.pid"
    run = run_shim(PYTHON, "-c", DAEMON, str(pidfile), options=["--keep-root"])
    assert run.returncode == 0, run.program_stderr
    pid = int(pidfile.read_text())
    assert not Path(f"/proc/{pid}").exists()
    assert run.envelope["orphans_killed"] == 1
    assert run.envelope["status"] == "exited"


def test_escaped_daemon_dies_at_timeout(run_shim: RunShim, workdir: Path) -> None:
    pidfile = workdir / "daemon.pid"
    program = DAEMON + "time.sleep(60)\n"
    run = run_shim(PYTHON, "-c", program, str(pidfile), options=["--keep-root", "--timeout", "1"])
    assert run.returncode == 124
    pid = int(pidfile.read_text())
    assert not Path(f"/proc/{pid}").exists()


def test_output_flood_is_capped_without_hanging(run_shim: RunShim) -> None:
    limit = 1 << 20
    flood = "head -c 1G /dev/zero; head -c 3M /dev/zero >&2"
    started = time.monotonic()
    run = run_shim("/bin/sh", "-c", flood, options=["--output-limit", str(limit)], timeout=120)
    assert run.returncode == 0, run.stderr
    assert len(run.program_stdout) == limit
    assert len(run.program_stderr) == limit
    assert run.envelope["stdout_bytes"] >= 1 << 30
    assert run.envelope["stderr_bytes"] == 3 << 20
    assert run.envelope["output_truncated"] is True
    assert time.monotonic() - started < 60


def test_output_is_captured_separately(run_shim: RunShim) -> None:
    run = run_shim("/bin/sh", "-c", "echo out; echo err >&2")
    assert run.program_stdout == b"out\n"
    assert run.program_stderr == b"err\n"
    assert (run.envelope["stdout_bytes"], run.envelope["stderr_bytes"]) == (4, 4)
    assert run.envelope["output_truncated"] is False


def marked_processes(marker: str) -> list[int]:
    """Pids whose environment contains `marker`."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_fork_bomb_is_contained_by_nproc(run_shim: RunShim) -> None:
    marker = f"GRADEFLOW_BOMB={uuid.uuid4().hex}"
    started = time.monotonic()
    run = run_shim(
        "/bin/bash",
        "-c",
        "b() { b | b & }; b; sleep 30",
        options=["--env", marker, "--nproc", "40", "--timeout", "2", "--kill-grace", "0.2"],
        timeout=120,
    )
    assert run.returncode == 124, run.stderr[-2000:]
    assert run.envelope["orphans_killed"] > 0
    assert time.monotonic() - started < 60
    assert marked_processes(marker) == []


def test_sigterm_is_forwarded(shim_binary: Path, workdir: Path) -> None:
    result = workdir / "result.json"
    proc = subprocess.Popen(
        [str(shim_binary), "--result", str(result), "--", "/bin/sleep", "30"],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert json.loads(line)["event"] == "started"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 128 + signal.SIGTERM
    envelope = json.loads(result.read_text())
    assert envelope["status"] == "signaled"
    assert envelope["signal"] == signal.SIGTERM
    proc.stderr.close()


def test_resource_usage_is_reported(run_shim: RunShim) -> None:
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
    run = run_shim(PYTHON, "-c", burn)
    assert run.envelope["cpu_user_ms"] + run.envelope["cpu_sys_ms"] >= 250
    assert run.envelope["max_rss_kb"] > 1000
    assert run.envelope["oom_killed"] in (None, False)


def test_envelope_has_every_field(run_shim: RunShim, workdir: Path) -> None:
    run = run_shim("/bin/true")
    assert set(run.envelope) >= {
        "shim_version",
        "status",
        "exit_code",
        "signal",
        "wall_ms",
        "cpu_user_ms",
        "cpu_sys_ms",
        "max_rss_kb",
        "ready_wait_ms",
        "stdout_bytes",
        "stderr_bytes",
        "output_truncated",
        "oom_killed",
        "error",
        "orphans_killed",
    }
    assert sorted(os.listdir(workdir)) == ["program.stderr", "program.stdout", "result.json"]
