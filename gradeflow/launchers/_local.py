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

The run directory is laid out as the assignment's layout says (see
``gradeflow._layouts``). Coursera and Gradescope graders hard-code
``/shared`` and ``/autograder``, so for those layouts the shim starts in a
private mount namespace (``unshare --mount --propagation private``) where
the run's ``shared/`` or ``autograder/`` directory is bind-mounted on that
path; every run sees only its own tree and the host's mount table is never
touched. That needs root, and the (empty) mountpoint on the host, which is
created root-owned 0755 when missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import select
import shutil
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import ClassVar

from .._assignment import Assignment
from .._errors import ConfigurationError, InfraError, InvalidSubmission
from .._layouts import LAYOUTS, LayoutPaths, SubmissionInfo, layout_for
from .._models import Backend, GraderIdentity, LayoutName, ShimEnvelope
from .._result_files import read_result_files
from .._sandbox import SandboxPaths, shim_command
from ._base import GradingJob, Launcher, LaunchHandle, RunOutput

__all__ = ["LocalLauncher"]

_TAIL_BYTES = 8 << 10
_SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_MOUNT_SCRIPT = (
    'while [ "$1" != -- ]; do mount --bind "$1" "$2" || exit 125; shift 2; done; shift; exec "$@"'
)
"""Bind-mounts (source, target) pairs, then execs the shim. Runs in the new
namespace only, so a failure leaves the host untouched (and no envelope: infra_error)."""

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
        layout = layout_for(job.assignment)
        command = job.assignment.grader.local_command or layout.default_command
        if not command:
            raise ConfigurationError(
                f"assignment {job.assignment.id}: [grader] local_command is required "
                "for the local backend"
            )
        run_dir = self._runs_dir / f"{job.run_key}-{secrets.token_hex(16)}"
        paths = layout.paths(_paths(run_dir))
        mount_prefix = _mount_namespace(run_dir, paths, job.assignment)
        self._lay_out(run_dir, paths, job.assignment)
        program = [part.replace("{grader}", str(paths.grader_dir)) for part in command]
        argv = mount_prefix + shim_command(
            job.shim.path,
            paths.sandbox,
            job.assignment.limits,
            program,
            digest=job.submission_sha256,
            ready_timeout_s=max(job.assignment.limits.timeout_s, 60.0),
            environment=layout.environment(paths, SubmissionInfo.for_job(job)),
            workdir=paths.workdir,
            keep_root=layout.run_as_root,
        )
        events = open(paths.sandbox.shim_dir / "events.jsonl", "wb")  # noqa: SIM115 - handed to the child
        try:
            child = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=events,
                cwd=run_dir,
                env={"PATH": _SAFE_PATH},
                start_new_session=True,
            )
        except OSError as exc:
            raise InfraError(f"cannot start the shim {job.shim.path}: {exc}") from exc
        finally:
            events.close()
        with _children_lock:
            _children[job.run_key] = child
        self._write_index(job.run_key, run_dir, child.pid, layout.name)
        return LaunchHandle(
            backend="local", run_key=job.run_key, run_id=run_dir.name,
            details={"run_dir": str(run_dir), "pid": str(child.pid), "layout": layout.name},
        )  # fmt: skip

    def _lay_out(self, run_dir: Path, paths: LayoutPaths, assignment: Assignment) -> None:
        """The layout's directories (owners, modes), then the grader's files."""
        run_dir.mkdir(mode=0o755)
        Path(paths.sandbox.root).mkdir(mode=0o755)
        for directory in paths.directories:
            host = _host(run_dir, paths, directory.path)
            host.mkdir(mode=directory.mode)
            os.chmod(host, directory.mode)  # not narrowed by the umask
            uid = paths.uid_of(directory)
            if os.geteuid() == 0 and uid != 0:
                os.chown(host, uid, uid)
        grader_dir = _host(run_dir, paths, paths.grader_dir)
        try:
            shutil.copytree(
                assignment.grader_dir,
                grader_dir,
                ignore=shutil.ignore_patterns("__pycache__"),
                dirs_exist_ok=True,
            )
            if paths.program_copy is not None:
                source, dest = (_host(run_dir, paths, p) for p in paths.program_copy)
                shutil.copyfile(source, dest)
                os.chmod(dest, 0o755)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot copy the grader directory {assignment.grader_dir}: {exc}"
            ) from exc
        if not paths.grader_writable:
            _make_read_only(grader_dir)
        elif os.geteuid() == 0 and paths.grader_uid != 0:
            _give_to(grader_dir, paths.grader_uid)

    # -- ready ----------------------------------------------------------------------------

    def make_ready(self, handle: LaunchHandle, job: GradingJob, *, timeout_s: float) -> None:
        run_dir = Path(handle.details["run_dir"])
        layout = layout_for(job.assignment)
        layout_paths = layout.paths(_paths(run_dir))
        paths = layout_paths.sandbox
        if not Path(paths.ready_file).exists():
            submission = _host(run_dir, layout_paths, layout_paths.submission)
            if not submission.exists():
                try:
                    job.unpack_submission(submission)
                except InvalidSubmission:
                    self.stop(handle)
                    raise
            metadata = layout.metadata(SubmissionInfo.for_job(job))
            if metadata is not None and layout_paths.metadata is not None:
                target = _host(run_dir, layout_paths, layout_paths.metadata)
                _write_atomically(target, metadata)
                os.chmod(target, 0o444)
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
                _wait_child(child, timeout_s)
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
        run_dir = Path(handle.details["run_dir"])
        layout_paths = LAYOUTS[_layout_name(handle.details)].paths(_paths(run_dir))
        paths = layout_paths.sandbox
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
            results_files=read_result_files(
                _host(run_dir, layout_paths, layout_paths.results), layout_paths.result_files
            ),
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

    def _write_index(self, run_key: str, run_dir: Path, pid: int, layout: str) -> None:
        record = json.dumps({"run_dir": str(run_dir), "pid": pid, "layout": layout}).encode()
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
            details={
                "run_dir": str(run_dir), "pid": str(record["pid"]),
                "layout": _layout_name(record),
            },
        )  # fmt: skip
        if self._alive(handle) or Path(_paths(run_dir).envelope).exists():
            return handle
        return None  # started once but died without a trace: start afresh


def _wait_child(child: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Wait for ``child`` to exit, waking the moment it does.

    ``Popen.wait(timeout=...)`` polls with a backoff of up to 50 ms, which was
    about 40 ms of every run's latency (measured); a pidfd becomes readable
    exactly when the process exits.
    """
    try:
        pidfd = os.pidfd_open(child.pid)
    except (AttributeError, OSError):  # kernel < 5.3, or already reaped
        child.wait(timeout=timeout_s)
        return
    try:
        readable, _, _ = select.select([pidfd], [], [], timeout_s)
    finally:
        os.close(pidfd)
    if not readable:
        raise subprocess.TimeoutExpired(child.args, timeout_s)
    child.wait()


def _paths(run_dir: Path) -> SandboxPaths:
    root = PurePosixPath(run_dir / "grading")
    return SandboxPaths(root=root, grader_dir=root / "grader")


def _layout_name(record: Mapping[str, object]) -> LayoutName:
    """The layout a run was started with (runs indexed before layouts existed: gradeflow)."""
    name = record.get("layout", "gradeflow")
    return (
        "coursera" if name == "coursera" else "gradescope" if name == "gradescope" else "gradeflow"
    )


def _host(run_dir: Path, paths: LayoutPaths, path: PurePosixPath) -> Path:
    """Where an in-sandbox path is on this machine: a mounted tree lives in the run dir."""
    for mount in paths.mounts:
        if path == mount or mount in path.parents:
            return run_dir / mount.name / path.relative_to(mount)
    return Path(path)  # the contract tree: already the run dir's grading/


def _mount_namespace(run_dir: Path, paths: LayoutPaths, assignment: Assignment) -> list[str]:
    """The argv prefix that runs the shim with the layout's fixed paths bind-mounted.

    Empty for the gradeflow layout. Checked before anything is laid out, so a
    refusal leaves nothing behind.

    Raises:
        ConfigurationError: not root, no ``unshare``, or a mountpoint that is
            not a directory.
    """
    if not paths.mounts:
        return []
    where = " and ".join(str(m) for m in paths.mounts)
    if os.geteuid() != 0:
        raise ConfigurationError(
            f"assignment {assignment.id}: the {assignment.layout} layout needs root on the "
            f"local backend (it bind-mounts {where} in a private mount namespace); run "
            "gradeflow as root or use the docker backend"
        )
    unshare = shutil.which("unshare", path=_SAFE_PATH)
    if unshare is None:
        raise ConfigurationError(
            f"the {assignment.layout} layout needs unshare(1) (util-linux) on the local backend"
        )
    pairs: list[str] = []
    for mount in paths.mounts:
        _ensure_mountpoint(Path(mount))
        pairs += [str(run_dir / mount.name), str(mount)]
    return [unshare, "--mount", "--propagation", "private", "--",
            "/bin/sh", "-c", _MOUNT_SCRIPT, "gradeflow-mounts", *pairs, "--"]  # fmt: skip


def _ensure_mountpoint(path: Path) -> None:
    """An empty root-owned 0755 directory for the bind mount, made once per machine."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o755)
    if not stat.S_ISDIR(path.lstat().st_mode):
        raise ConfigurationError(f"{path} exists and is not a directory: cannot mount on it")


def _give_to(tree: Path, uid: int) -> None:
    """Make the grader the owner of ``tree`` (gradescope's source), never following links."""
    for path in [tree, *tree.rglob("*")]:
        os.lchown(path, uid, uid)


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
