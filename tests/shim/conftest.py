"""Fixtures for the shim's behaviour tests.

The tests drive the real static binary from the outside, as root, the way a
grader container does: the shim drops to uid 65534, so every path a helper
program touches lives under a 0755 temp directory that uid can traverse.
Helper programs are `/bin/sh` and `/usr/bin/python3` (a pyenv interpreter
under /root is unreachable for uid 65534).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

SHIM_DIR = Path(__file__).resolve().parents[2] / "shim"
TARGET = "x86_64-unknown-linux-gnu"
PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="session")
def shim_binary() -> Path:
    """Build the shim once (static-pie, release) and return its path."""
    if shutil.which("cargo") is None:
        pytest.skip("cargo is not installed")
    env = dict(os.environ, RUSTFLAGS="-C target-feature=+crt-static")
    subprocess.run(
        ["cargo", "build", "--release", "--target", TARGET],
        cwd=SHIM_DIR,
        env=env,
        check=True,
    )
    binary = SHIM_DIR / "target" / TARGET / "release" / "gradeflow-shim"
    assert binary.is_file()
    return binary


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A fresh 0755 directory that uid 65534 can traverse and read."""
    path = Path(tempfile.mkdtemp(prefix="gradeflow-shim-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class ShimRun:
    """One finished shim invocation."""

    returncode: int
    envelope: dict[str, Any]
    events: list[dict[str, Any]]
    stderr: str
    stdout: str
    program_stdout: bytes = b""
    program_stderr: bytes = b""
    extra: dict[str, Any] = field(default_factory=dict)

    def event(self, name: str) -> dict[str, Any]:
        """The first log event called `name`."""
        for event in self.events:
            if event.get("event") == name:
                return event
        raise AssertionError(f"no {name!r} event in {self.events}")


def parse_events(stderr: str) -> list[dict[str, Any]]:
    """The shim's JSON log lines (PROGRAM's stderr may be mixed in)."""
    events: list[dict[str, Any]] = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict) and obj.get("shim") == "gradeflow-shim":
                events.append(obj)
    return events


RunShim = Callable[..., ShimRun]


@pytest.fixture
def run_shim(shim_binary: Path, workdir: Path) -> RunShim:
    """Run `gradeflow-shim --result ... --stdout ... --stderr ... OPTIONS -- PROGRAM`."""

    def run(
        *program: str,
        options: Sequence[str] = (),
        capture: bool = True,
        timeout: float = 60,
        env: dict[str, str] | None = None,
        pass_fds: Sequence[int] = (),
    ) -> ShimRun:
        result = workdir / "result.json"
        out, err = workdir / "program.stdout", workdir / "program.stderr"
        for stale in (result, out, err):
            stale.unlink(missing_ok=True)
        argv = [str(shim_binary), "--result", str(result)]
        if capture:
            argv += ["--stdout", str(out), "--stderr", str(err)]
        argv += [*options, "--", *program]
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env if env is not None else {"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            pass_fds=tuple(pass_fds),
            check=False,
        )
        envelope = json.loads(result.read_text()) if result.exists() else {}
        return ShimRun(
            returncode=proc.returncode,
            envelope=envelope,
            events=parse_events(proc.stderr),
            stderr=proc.stderr,
            stdout=proc.stdout,
            program_stdout=out.read_bytes() if out.exists() else b"",
            program_stderr=err.read_bytes() if err.exists() else b"",
        )

    return run
