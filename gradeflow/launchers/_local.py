"""The ``local`` backend: the embedded default, a development sandbox.

No Docker and no AWS: the flow host is the co-process and the shim runs the
assignment's ``local_command`` on this machine. What protects the host is the
shim alone: rlimits, no_new_privs, every capability dropped, a seccomp deny
list, a scrubbed environment, a private network namespace where the kernel
allows it, and (when gradeflow runs as root) uid/gid 65534. The grader still
sees this machine's filesystem wherever it is world-readable, so use the
docker or ecs backend for untrusted code in production.

Each run gets a directory named ``{run_key}-{random token}`` under a 0711
parent, so a grader cannot list or guess another run's submission.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path, PurePosixPath
from typing import ClassVar

from .._archives import ArchiveLimits, unpack_submission
from .._assignment import Assignment
from .._errors import ConfigurationError, InfraError, InvalidSubmission
from .._models import Backend, GraderIdentity, ShimEnvelope
from .._sandbox import GRADER_UID, SandboxPaths, grader_environment, shim_command
from ._base import MAX_RESULT_FILE_BYTES, GradingJob, Launcher, LaunchHandle, RunOutput

__all__ = ["LocalLauncher"]

_TAIL_BYTES = 8 << 10
_MAX_RESULT_FILES = 32

# Popen objects of shims started by this process, so they are reaped (no zombies)
# and a retried task in the same process reattaches to the very same child.
_children: dict[str, subprocess.Popen[bytes]] = {}
_children_lock = threading.Lock()


class LocalLauncher(Launcher):
    """Runs graders on this machine through the shim (see the module docstring)."""

    name: ClassVar[Backend] = "local"

    def __init__(self, runs_dir: Path, *, keep_runs: bool = False) -> None:
        self._runs_dir = runs_dir
        self._index_dir = runs_dir / ".index"
        self._keep_runs = keep_runs
        runs_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(runs_dir, 0o711)  # traverse, never list
        self._index_dir.mkdir(mode=0o700, exist_ok=True)

    def grader_identity(self, assignment: Assignment) -> GraderIdentity:
        return GraderIdentity(
            image=None, digest=assignment.grader_digest(), results_format=assignment.results_format
        )

    # -- launch ---------------------------------------------------------------------------

    def launch(self, job: GradingJob) -> LaunchHandle:
        existing = self._reattach(job.run_key)
        if existing is not None:
            return existing
        command = job.assignment.grader.local_command
        if not command:
            raise ConfigurationError(
                f"assignment {job.assignment.id}: [grader] local_command is required "
                "for the local backend"
            )
        run_dir = self._runs_dir / f"{job.run_key}-{secrets.token_hex(16)}"
        paths = SandboxPaths(
            root=PurePosixPath(run_dir / "grading"),
            grader_dir=PurePosixPath(run_dir / "grading" / "grader"),
        )
        self._lay_out(run_dir, paths, job.assignment)
        program = [part.replace("{grader}", str(paths.grader_dir)) for part in command]
        argv = shim_command(
            job.shim.path,
            paths,
            job.assignment.limits,
            program,
            digest=job.submission_sha256,
            ready_timeout_s=max(job.assignment.limits.timeout_s, 60.0),
            environment=grader_environment(paths),
        )
        events = open(paths.shim_dir / "events.jsonl", "wb")  # noqa: SIM115 - handed to the child
        try:
            child = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=events,
                cwd=run_dir,
                env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
                start_new_session=True,
            )
        except OSError as exc:
            raise InfraError(f"cannot start the shim {job.shim.path}: {exc}") from exc
        finally:
            events.close()
        with _children_lock:
            _children[job.run_key] = child
        self._write_index(job.run_key, run_dir, child.pid)
        return LaunchHandle(
            backend="local", run_key=job.run_key, run_id=run_dir.name,
            details={"run_dir": str(run_dir), "pid": str(child.pid)},
        )  # fmt: skip

    def _lay_out(self, run_dir: Path, paths: SandboxPaths, assignment: Assignment) -> None:
        run_dir.mkdir(mode=0o755)
        root = Path(paths.root)
        root.mkdir(mode=0o755)
        Path(paths.shim_dir).mkdir(mode=0o700)
        for writable in (paths.work, paths.results):
            Path(writable).mkdir(mode=0o700)
            if os.geteuid() == 0:
                os.chown(writable, GRADER_UID, GRADER_UID)
        grader_dir = Path(paths.grader_dir)
        try:
            shutil.copytree(
                assignment.grader_dir, grader_dir, ignore=shutil.ignore_patterns("__pycache__")
            )
        except OSError as exc:
            raise ConfigurationError(
                f"cannot copy the grader directory {assignment.grader_dir}: {exc}"
            ) from exc
        _make_read_only(grader_dir)

    # -- ready ----------------------------------------------------------------------------

    def make_ready(self, handle: LaunchHandle, job: GradingJob, *, timeout_s: float) -> None:
        run_dir = Path(handle.details["run_dir"])
        paths = _paths(run_dir)
        if not Path(paths.ready_file).exists():
            submission = Path(paths.submission)
            if not submission.exists():
                try:
                    unpack_submission(
                        job.submission_file,
                        submission,
                        filename=job.submission_filename,
                        limits=ArchiveLimits.from_limits(job.assignment.limits),
                    )
                except InvalidSubmission:
                    self.stop(handle)
                    raise
            _write_atomically(Path(paths.ready_file), job.submission_sha256.encode())
        self._wait_started(handle, paths, timeout_s)

    def _wait_started(self, handle: LaunchHandle, paths: SandboxPaths, timeout_s: float) -> None:
        events = Path(paths.shim_dir) / "events.jsonl"
        deadline = time.monotonic() + timeout_s
        pause = 0.0005
        while True:
            text = events.read_bytes() if events.exists() else b""
            if b'"event":"started"' in text or Path(paths.envelope).exists():
                return  # started, or already over (a spawn failure is in the envelope)
            if not self._alive(handle):
                return  # the shim ended; collect() reports what it wrote
            if time.monotonic() > deadline:
                self.stop(handle)
                raise InfraError(
                    f"{handle.run_key}: the grader did not start within {timeout_s:g} s"
                )
            time.sleep(pause)
            pause = min(pause * 2, 0.01)

    # -- wait / stop ----------------------------------------------------------------------

    def wait(self, handle: LaunchHandle, *, timeout_s: float) -> None:
        child = _children.get(handle.run_key)
        if child is not None:
            try:
                child.wait(timeout=timeout_s)
                return
            except subprocess.TimeoutExpired:
                self.stop(handle)
                raise InfraError(
                    f"{handle.run_key}: the shim did not finish within {timeout_s:g} s; stopped it"
                ) from None
        deadline = time.monotonic() + timeout_s
        while self._alive(handle):
            if time.monotonic() > deadline:
                self.stop(handle)
                raise InfraError(
                    f"{handle.run_key}: the shim did not finish within {timeout_s:g} s"
                )
            time.sleep(0.02)

    def stop(self, handle: LaunchHandle) -> None:
        pid = int(handle.details.get("pid", "0"))
        if not pid or not self._alive(handle):
            return
        # SIGTERM: the shim forwards it to the grader and still writes its envelope.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while self._alive(handle) and time.monotonic() < deadline:
            time.sleep(0.02)
        if self._alive(handle):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        child = _children.get(handle.run_key)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=5)

    def _alive(self, handle: LaunchHandle) -> bool:
        child = _children.get(handle.run_key)
        if child is not None:
            return child.poll() is None
        pid = int(handle.details.get("pid", "0"))
        return _is_our_shim(pid, handle.details.get("run_dir", ""))

    # -- collect / cleanup ----------------------------------------------------------------

    def collect(self, handle: LaunchHandle) -> RunOutput:
        paths = _paths(Path(handle.details["run_dir"]))
        envelope: ShimEnvelope | None = None
        notes: list[str] = []
        try:
            envelope = ShimEnvelope.model_validate_json(Path(paths.envelope).read_bytes())
        except FileNotFoundError:
            notes.append("the shim wrote no envelope")
        except ValueError as exc:
            notes.append(f"the shim's envelope is unreadable: {exc}")
        return RunOutput(
            envelope=envelope,
            results_files=_read_results(Path(paths.results)),
            stdout_tail=_tail(Path(paths.stdout)),
            stderr_tail=_tail(Path(paths.stderr)),
            notes=tuple(notes) + _shim_warnings(Path(paths.shim_dir) / "events.jsonl"),
        )

    def cleanup(self, handle: LaunchHandle) -> None:
        self.stop(handle)
        with _children_lock:
            _children.pop(handle.run_key, None)
        with contextlib.suppress(FileNotFoundError):
            (self._index_dir / handle.run_key).unlink()
        if not self._keep_runs:
            shutil.rmtree(handle.details["run_dir"], ignore_errors=True)

    # -- the index: run_key -> run dir, for reattaching ------------------------------------

    def _write_index(self, run_key: str, run_dir: Path, pid: int) -> None:
        record = json.dumps({"run_dir": str(run_dir), "pid": pid}).encode()
        _write_atomically(self._index_dir / run_key, record)

    def _reattach(self, run_key: str) -> LaunchHandle | None:
        try:
            record = json.loads((self._index_dir / run_key).read_text())
        except (FileNotFoundError, ValueError):
            return None
        run_dir = Path(record["run_dir"])
        if not run_dir.is_dir():
            return None
        handle = LaunchHandle(
            backend="local", run_key=run_key, run_id=run_dir.name, reattached=True,
            details={"run_dir": str(run_dir), "pid": str(record["pid"])},
        )  # fmt: skip
        if self._alive(handle) or Path(_paths(run_dir).envelope).exists():
            return handle
        return None  # started once but died without a trace: start afresh


def _paths(run_dir: Path) -> SandboxPaths:
    root = PurePosixPath(run_dir / "grading")
    return SandboxPaths(root=root, grader_dir=root / "grader")


def _make_read_only(tree: Path) -> None:
    for path in [tree, *tree.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        executable = mode & 0o111
        os.chmod(path, 0o555 if path.is_dir() else (0o555 if executable else 0o444))


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _read_results(results_dir: Path) -> dict[str, bytes]:
    """Regular files at the top of the results dir, never following the grader's links."""
    files: dict[str, bytes] = {}
    try:
        names = sorted(os.listdir(results_dir))
    except FileNotFoundError:
        return files
    for name in names[:_MAX_RESULT_FILES]:
        try:
            fd = os.open(results_dir / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue  # a symlink, a FIFO the grader left, or vanished
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not _is_plain_file(info) or info.st_size > MAX_RESULT_FILE_BYTES:
                continue
            files[name] = handle.read(MAX_RESULT_FILE_BYTES)
    return files


def _is_plain_file(info: os.stat_result) -> bool:
    import stat

    return stat.S_ISREG(info.st_mode) and info.st_nlink == 1


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - _TAIL_BYTES))
            return handle.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def _shim_warnings(events: Path) -> tuple[str, ...]:
    warnings: list[str] = []
    with contextlib.suppress(FileNotFoundError):
        for line in events.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and event.get("event") in {"warning", "error"}:
                    warnings.append(str(event.get("message", event)))
    return tuple(warnings)


def _is_our_shim(pid: int, run_dir: str) -> bool:
    if pid <= 0 or not run_dir:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z" and run_dir.encode() in cmdline
