"""What PROGRAM sees: environment, credentials, capabilities, limits, fds, syscalls."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

RunShim = Callable[..., Any]
PYTHON = "/usr/bin/python3"

SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="hardening tests expect to start the shim as root"
)


def status_fields(text: bytes) -> dict[str, str]:
    """/proc/self/status as a dict."""
    fields: dict[str, str] = {}
    for line in text.decode().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def test_environment_is_exactly_what_was_allowed(run_shim: RunShim) -> None:
    run = run_shim(
        "/usr/bin/env",
        options=["--env", "A=1", "--env", "B=x=y", "--pass-env", "HOME", "--pass-env", "UNSET_VAR"],
        env={"HOME": "/home/grader", "SECRET_TOKEN": "s3cr3t", "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 0, run.stderr
    lines = run.program_stdout.decode().splitlines()
    assert sorted(lines) == sorted(["A=1", "B=x=y", "HOME=/home/grader", f"PATH={SAFE_PATH}"])


def test_explicit_path_replaces_the_safe_path(run_shim: RunShim) -> None:
    run = run_shim("/usr/bin/env", options=["--env", "PATH=/opt/bin:/usr/bin"])
    assert run.program_stdout.decode().splitlines() == ["PATH=/opt/bin:/usr/bin"]


def test_no_new_privs_seccomp_and_no_capabilities(run_shim: RunShim) -> None:
    run = run_shim("/bin/cat", "/proc/self/status")
    assert run.returncode == 0, run.stderr
    status = status_fields(run.program_stdout)
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert status[cap] == "0000000000000000", cap


def test_root_drops_to_nobody_without_supplementary_groups(run_shim: RunShim) -> None:
    run = run_shim("/bin/cat", "/proc/self/status")
    status = status_fields(run.program_stdout)
    assert status["Uid"].split() == ["65534"] * 4
    assert status["Gid"].split() == ["65534"] * 4
    assert status["Groups"] == ""


def test_uid_and_gid_flags(run_shim: RunShim) -> None:
    run = run_shim("/bin/cat", "/proc/self/status", options=["--uid", "1234", "--gid", "4321"])
    status = status_fields(run.program_stdout)
    assert status["Uid"].split() == ["1234"] * 4
    assert status["Gid"].split() == ["4321"] * 4


def test_keep_root_stays_uid_zero_with_nothing(run_shim: RunShim) -> None:
    run = run_shim("/bin/cat", "/proc/self/status", options=["--keep-root"])
    status = status_fields(run.program_stdout)
    assert status["Uid"].split() == ["0"] * 4
    assert status["Groups"] == ""
    assert status["NoNewPrivs"] == "1"
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert status[cap] == "0000000000000000", cap


def test_rlimits_are_applied(run_shim: RunShim) -> None:
    run = run_shim(
        "/bin/cat",
        "/proc/self/limits",
        options=[
            "--cpu",
            "7",
            "--memory",
            "1G",
            "--nproc",
            "50",
            "--nofile",
            "64",
            "--fsize",
            "1M",
        ],
    )
    assert run.returncode == 0, run.stderr
    limits: dict[str, list[str]] = {}
    for line in run.program_stdout.decode().splitlines()[1:]:
        name = re.split(r"\s{2,}", line)[0]
        limits[name] = line[len(name) :].split()
    assert limits["Max cpu time"][:2] == ["7", "8"]
    assert limits["Max address space"][:2] == [str(1 << 30)] * 2
    assert limits["Max processes"][:2] == ["50", "50"]
    assert limits["Max open files"][:2] == ["64", "64"]
    assert limits["Max file size"][:2] == [str(1 << 20)] * 2
    assert limits["Max core file size"][:2] == ["0", "0"]


def test_file_size_limit_stops_a_big_write(run_shim: RunShim, workdir: Path) -> None:
    target = workdir / "big"
    run = run_shim(
        "/bin/sh",
        "-c",
        f"head -c 2M /dev/zero > {target}",
        options=["--fsize", "64K", "--keep-root"],
    )
    assert run.returncode != 0
    assert target.stat().st_size == 64 * 1024


def test_no_inherited_file_descriptors(run_shim: RunShim, workdir: Path) -> None:
    fd = os.open(workdir, os.O_RDONLY)  # not close-on-exec once passed via pass_fds
    try:
        probe = f"test -e /proc/self/fd/{fd} && echo open || echo closed"
        run = run_shim("/bin/sh", "-c", probe, pass_fds=[fd])
        assert run.program_stdout.decode().strip() == "closed"
        # Sanity: the same probe without the shim does see the fd.
        direct = subprocess.run(
            ["/bin/sh", "-c", probe], pass_fds=[fd], capture_output=True, text=True, check=True
        )
        assert direct.stdout.strip() == "open"
    finally:
        os.close(fd)


PTRACE_PROBE = (
    "import ctypes, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "rc = libc.ptrace(0, 0, None, None)\n"  # PTRACE_TRACEME
    "print(rc, ctypes.get_errno())\n"
)


def test_seccomp_denies_ptrace_with_eperm(run_shim: RunShim) -> None:
    run = run_shim(PYTHON, "-c", PTRACE_PROBE)
    assert run.returncode == 0, run.program_stderr
    assert run.program_stdout.decode().split() == ["-1", "1"]


def test_seccomp_denies_unshare(run_shim: RunShim) -> None:
    probe = (
        "import ctypes\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "print(libc.unshare(0x04000000), ctypes.get_errno())\n"  # CLONE_NEWUTS
    )
    run = run_shim(PYTHON, "-c", probe, options=["--keep-root"])
    assert run.program_stdout.decode().split() == ["-1", "1"]


def test_seccomp_off_installs_no_filter(run_shim: RunShim) -> None:
    run = run_shim("/bin/cat", "/proc/self/status", options=["--seccomp", "off"])
    assert status_fields(run.program_stdout)["Seccomp"] == "0"


def test_no_network_leaves_only_loopback(run_shim: RunShim) -> None:
    run = run_shim("/bin/cat", "/proc/net/dev", options=["--no-network"])
    assert run.returncode == 0, run.stderr
    interfaces = [
        line.split(":")[0].strip() for line in run.program_stdout.decode().splitlines()[2:]
    ]
    assert interfaces == ["lo"]


def test_workdir(run_shim: RunShim, workdir: Path) -> None:
    run = run_shim("/bin/pwd", options=["--workdir", str(workdir)])
    assert run.program_stdout.decode().strip() == str(workdir)


def test_hardening_failure_fails_closed(run_shim: RunShim, workdir: Path) -> None:
    missing = workdir / "missing"
    run = run_shim("/bin/true", options=["--workdir", str(missing)])
    assert run.returncode == 125
    assert run.envelope["status"] == "spawn_failed"
    assert run.envelope["error"] == f"chdir({missing}): No such file or directory"
    assert run.event("error")["message"] == run.envelope["error"]


def as_nobody(shim_binary: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Start the shim itself unprivileged (uid/gid 65534, no groups)."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed")
    return subprocess.run(
        [
            setpriv,
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            str(shim_binary),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_unprivileged_shim_still_hardens(shim_binary: Path) -> None:
    proc = as_nobody(shim_binary, "--", "/bin/cat", "/proc/self/status")
    assert proc.returncode == 0, proc.stderr
    status = status_fields(proc.stdout.encode())
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"
    for cap in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert status[cap] == "0000000000000000", cap
    assert "not started as root" in proc.stderr


def test_require_no_network_fails_closed_when_refused(shim_binary: Path) -> None:
    proc = as_nobody(shim_binary, "--require-no-network", "--", "/bin/true")
    assert proc.returncode == 125
    assert "unshare(CLONE_NEWNET): Operation not permitted" in proc.stderr
