"""The in-container contract, and the shim command line that enforces it.

Every backend lays out the same tree (``/grading`` in containers, a private
run directory locally) and hands the grader the same environment, so one
grader runs unchanged everywhere::

    bin/gradeflow-shim   the shim (read-only for the grader)
    submission/          the unpacked submission (read-only)
    work/                scratch, owned by the grader user (cwd)
    results/             the grader writes results.json here
    shim/                shim-owned: ready marker, envelope, captured output
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from ._models import Limits

__all__ = ["CONTAINER_ROOT", "SandboxPaths", "grader_environment", "shim_command"]

CONTAINER_ROOT = PurePosixPath("/grading")
GRADER_UID = 65534


@dataclass(frozen=True, slots=True)
class SandboxPaths:
    """Where the contract's directories are, as seen by the shim."""

    root: PurePosixPath
    grader_dir: PurePosixPath

    @property
    def shim_binary(self) -> PurePosixPath:
        return self.root / "bin" / "gradeflow-shim"

    @property
    def submission(self) -> PurePosixPath:
        return self.root / "submission"

    @property
    def work(self) -> PurePosixPath:
        return self.root / "work"

    @property
    def results(self) -> PurePosixPath:
        return self.root / "results"

    @property
    def shim_dir(self) -> PurePosixPath:
        return self.root / "shim"

    @property
    def ready_file(self) -> PurePosixPath:
        return self.shim_dir / "ready"

    @property
    def envelope(self) -> PurePosixPath:
        return self.shim_dir / "envelope.json"

    @property
    def stdout(self) -> PurePosixPath:
        return self.shim_dir / "stdout"

    @property
    def stderr(self) -> PurePosixPath:
        return self.shim_dir / "stderr"


def grader_environment(paths: SandboxPaths) -> dict[str, str]:
    """Exactly the variables a grader sees (the shim adds a safe PATH)."""
    return {
        "HOME": str(paths.work),
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "GRADEFLOW_SUBMISSION_DIR": str(paths.submission),
        "GRADEFLOW_RESULTS_DIR": str(paths.results),
        "GRADEFLOW_WORK_DIR": str(paths.work),
        "GRADEFLOW_GRADER_DIR": str(paths.grader_dir),
    }


def shim_command(
    shim: str,
    paths: SandboxPaths,
    limits: Limits,
    program: Sequence[str],
    *,
    digest: str,
    ready_timeout_s: float,
    environment: Mapping[str, str],
    require_no_network: bool = False,
    workdir: PurePosixPath | None = None,
    keep_root: bool = False,
) -> list[str]:
    """The full argv: the shim, its flags from ``limits``, ``--``, then the grader.

    ``workdir`` (default: the contract's ``work/``) is the grader's cwd, which
    a layout may move (gradescope: ``/autograder``). ``keep_root`` is the
    assignment's explicit ``run_as_root`` opt-in: uid 0 stays, but with no
    capabilities, no_new_privs and seccomp all the same.
    """
    argv = [
        shim,
        "--ready-file", str(paths.ready_file),
        "--ready-timeout", _seconds(ready_timeout_s),
        "--expect-digest", digest,
        "--workdir", str(workdir or paths.work),
        "--uid", str(GRADER_UID),
        "--gid", str(GRADER_UID),
        "--timeout", _seconds(limits.timeout_s),
        "--kill-grace", _seconds(limits.kill_grace_s),
        "--memory", str(limits.memory_mb << 20),
        "--nproc", str(limits.nproc),
        "--nofile", str(limits.nofile),
        "--fsize", str(limits.fsize_mb << 20),
        "--stdout", str(paths.stdout),
        "--stderr", str(paths.stderr),
        "--output-limit", str(limits.output_limit_kb << 10),
        "--result", str(paths.envelope),
        "--no-network",
        "--seccomp", "default",
    ]  # fmt: skip
    if require_no_network:
        argv.append("--require-no-network")
    if keep_root:
        argv.append("--keep-root")
    if limits.cpu_s is not None:
        argv += ["--cpu", str(limits.cpu_s)]
    for key, value in sorted(environment.items()):
        argv += ["--env", f"{key}={value}"]
    return [*argv, "--", *program]


def _seconds(value: float) -> str:
    return f"{value:g}"
