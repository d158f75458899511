"""The command line: --version, usage errors, `install`, and the static binary."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest


def shim(binary: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_version(shim_binary: Path) -> None:
    proc = shim(shim_binary, "--version")
    assert proc.returncode == 0
    assert proc.stdout.startswith("gradeflow-shim ")
    major, minor, patch = proc.stdout.split()[1].split(".")
    assert all(part.isdigit() for part in (major, minor, patch))


def test_missing_double_dash_is_125(shim_binary: Path) -> None:
    proc = shim(shim_binary, "--timeout", "3", "/bin/true")
    assert proc.returncode == 125
    first = json.loads(proc.stderr.splitlines()[0])
    assert first["event"] == "error"
    assert "`--`" in first["message"]


def test_bad_flag_value_is_125(shim_binary: Path) -> None:
    proc = shim(shim_binary, "--timeout", "soon", "--", "/bin/true")
    assert proc.returncode == 125
    assert json.loads(proc.stderr.splitlines()[0])["message"] == (
        '--timeout "soon": expected seconds > 0'
    )


def elf_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(p_type, p_offset, p_filesz) of each program header of a 64-bit ELF."""
    phoff = int.from_bytes(data[0x20:0x28], "little")
    phentsize = int.from_bytes(data[0x36:0x38], "little")
    phnum = int.from_bytes(data[0x38:0x3A], "little")
    segments = []
    for i in range(phnum):
        ph = data[phoff + i * phentsize : phoff + (i + 1) * phentsize]
        segments.append(
            (
                int.from_bytes(ph[0:4], "little"),
                int.from_bytes(ph[8:16], "little"),
                int.from_bytes(ph[32:40], "little"),
            )
        )
    return segments


def test_binary_is_static_pie(shim_binary: Path) -> None:
    data = shim_binary.read_bytes()
    assert data[:4] == b"\x7fELF"
    assert int.from_bytes(data[16:18], "little") == 3, "ET_DYN: position independent"
    pt_interp, pt_dynamic, dt_needed = 3, 2, 1
    segments = elf_segments(data)
    assert pt_interp not in [t for t, _, _ in segments], "no ELF interpreter"
    for p_type, offset, size in segments:
        if p_type == pt_dynamic:
            tags = [
                int.from_bytes(data[o : o + 8], "little") for o in range(offset, offset + size, 16)
            ]
            assert dt_needed not in tags, "no shared libraries needed"
    assert len(data) < 1_500_000


def test_install_copies_itself_read_only(shim_binary: Path, workdir: Path) -> None:
    dest = workdir / "bin" / "gradeflow-shim"
    proc = shim(shim_binary, "install", str(dest))
    assert proc.returncode == 0, proc.stderr
    assert dest.stat().st_mode & 0o7777 == 0o555
    assert dest.read_bytes() == shim_binary.read_bytes()
    assert shim(dest, "--version").stdout.startswith("gradeflow-shim ")
    assert sorted(p.name for p in dest.parent.iterdir()) == ["gradeflow-shim"]


def docker_available() -> str | None:
    """None when a Docker engine answers, else why not."""
    if shutil.which("docker") is None:
        return "docker CLI not installed"
    try:
        info = subprocess.run(
            ["docker", "info"], capture_output=True, text=True, timeout=30, check=False
        )
    except subprocess.TimeoutExpired:
        return "docker info timed out"
    if info.returncode != 0:
        return f"docker info failed: {info.stderr.strip()[:200]}"
    return None


@pytest.mark.docker
def test_runs_in_an_empty_scratch_container(shim_binary: Path, workdir: Path) -> None:
    reason = docker_available()
    if reason is not None:
        pytest.skip(reason)
    context = workdir / "context"
    context.mkdir()
    shutil.copy2(shim_binary, context / "gradeflow-shim")
    (context / "Dockerfile").write_text(
        'FROM scratch\nCOPY gradeflow-shim /gradeflow-shim\nENTRYPOINT ["/gradeflow-shim"]\n'
    )
    tag = f"gradeflow-shim-test:{uuid.uuid4().hex[:12]}"
    subprocess.run(
        ["docker", "build", "--network", "host", "-q", "-t", tag, str(context)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    try:
        version = subprocess.run(
            ["docker", "run", "--rm", "--network", "none", tag, "--version"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert version.returncode == 0, version.stderr
        assert version.stdout.startswith("gradeflow-shim ")
        # The shim as PID 1 hardening and running a program (itself: scratch has nothing else).
        nested = subprocess.run(
            [
                "docker",
                "run",
                "--rm",
                "--network",
                "none",
                tag,
                "--",
                "/gradeflow-shim",
                "--version",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert nested.returncode == 0, nested.stderr
        assert nested.stdout.startswith("gradeflow-shim ")
        events = [json.loads(line)["event"] for line in nested.stderr.splitlines()]
        assert events[-1] == "exited"
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, timeout=120, check=False)
