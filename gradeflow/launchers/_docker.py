"""The ``docker`` backend: each grading attempt in its own hardened container.

The flow host is the co-process and talks to the engine only through the
Docker API (docker SDK), so it works the same against a remote engine:

    launch      a named volume for /grading, then a container named after the
                attempt whose entrypoint is the shim followed by the image's
                original ENTRYPOINT + CMD; started at once, the shim waits for
                the ready marker
    make_ready  unpack + verify the submission on the host, then ONE
                put_archive: the /grading skeleton (owners, modes), the
                submission (root-owned, read-only modes), the marker last;
                wait for the shim's ``{"event":"started"}`` log line
    wait        the engine's wait endpoint, bounded
    collect     ONE get_archive of /grading, read as a tar stream keeping only
                regular files of shim/ and results/ (never following the
                grader's links); the engine's State.OOMKilled decides
                ``oom_killed``
    cleanup     remove the container and its volume(s)

That is the gradeflow layout; the others add a volume each (see Layouts below).

The container: ``network_mode=none``; memory = memory+swap (no swap);
``pids_limit`` and a CPU quota; every capability dropped except SETUID,
SETGID and SETPCAP, which the shim needs to drop to uid 65534 and empty the
bounding set, and KILL: the shim stays root while the grader runs as 65534,
and signalling another uid's processes (timeout, stop forwarding, killing
leftover daemons) needs CAP_KILL -- without it every kill() is EPERM and a
timed-out grader runs on. The grader keeps none of them; no-new-privileges;
read-only root filesystem; the shim bind-mounted read-only from the flow
host's built artifact; ``init=False`` because the shim is PID 1 (it is a
subreaper and kills whatever the grader leaves behind).

Why a volume: put_archive/get_archive act on the container's mounts as the
daemon sees them, which excludes tmpfs mounts. ``/grading`` is therefore a
per-run named volume (submission, results, shim dirs); ``/grading/work`` and
``/tmp`` are tmpfs owned by 65534 (their pages count against the memory
cgroup). Each archive call costs the engine a mount and a re-exec (~100 ms
here), hence one per direction. Until the delivery creates /grading/shim the
shim polls for its marker every 10 ms instead of using inotify; that is the
whole price of not laying out the skeleton before start (another archive
call). The volume is on the engine's disk: a grader can write there up to
``fsize`` per file, so production engines should put ``/var/lib/docker`` on a
filesystem with quotas.

Layouts (``gradeflow._layouts``): the Coursera and Gradescope graders'
fixed directories, ``/shared`` and ``/autograder``, are one more per-run
named volume each (``<container>-shared``, ``<container>-autograder``), so
the root filesystem stays read-only and the archive calls reach them. A new
volume mounted where the image has content starts as a copy of it with its
owners, which is how an image built the Gradescope way (``gradeflow image
build --gradescope``) brings ``/autograder/source`` and ``run_autograder``:
nothing is copied in again. make_ready then puts one archive per volume --
the layout's directories (re-owned: 65534, or 0 with ``run_as_root``), the
read-only submission, ``submission_metadata.json`` -- before the /grading
one that ends with the marker; collect reads the layout's results directory
(only the files it names) with one more get_archive. A copy cannot re-own a
volume's own top directory (the engine skips ``.``), so Coursera's
grader-owned ``/shared`` is re-owned before the grader container exists, by
a never-started helper container mounting the volume (about 0.1 s). With
``run_as_root`` the shim keeps uid 0 (no capabilities, no_new_privs,
seccomp) and the tmpfs scratch belongs to uid 0.

Limits the shim applies as well, and why they differ here: the cgroup is the
real memory bound, so the shim's RLIMIT_AS is only a backstop (twice the
limit plus 1 GiB): virtual memory is far larger than RSS for most runtimes,
and an equal RLIMIT_AS would turn a cgroup OOM kill (``memory_exceeded``)
into a grader's own MemoryError. RLIMIT_NPROC counts every process of uid
65534 on the whole host, so concurrent graders would starve each other; the
per-container pids cgroup is the bound and the shim's RLIMIT_NPROC is lifted.
The shim's own ``--no-network`` is dropped: it needs CAP_SYS_ADMIN, which the
container never gets, and ``network_mode=none`` already leaves only loopback.

Idempotency: the container and volume are named ``gradeflow-<run_key>``; a
create that conflicts reattaches (``handle.reattached``) instead of starting
a second grader. Everything carries ``org.gradeflow.*`` labels with a
creation time, so ``gradeflow sweep`` can remove what crashed flows left.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import re
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import docker
import docker.errors
import requests.exceptions
from docker.models.containers import Container
from docker.models.images import Image
from docker.types import LogConfig, Mount

from .._assignment import Assignment, GraderSpec
from .._errors import ConfigurationError, InfraError, InvalidSubmission
from .._layouts import LAYOUTS, LayoutPaths, SubmissionInfo, layout_for
from .._models import Backend, GraderIdentity, LayoutName, Limits, ShimEnvelope
from .._sandbox import CONTAINER_ROOT, GRADER_UID, SandboxPaths, shim_command
from ._base import (
    MAX_RESULT_FILE_BYTES,
    MAX_RESULT_FILES,
    GradingJob,
    Launcher,
    LaunchHandle,
    RunOutput,
)

__all__ = [
    "CREATED_LABEL",
    "DEFAULT_GRADER_DIR",
    "GRADER_DIR_LABEL",
    "MANAGED_LABEL",
    "DockerLauncher",
    "container_name",
    "original_command",
]

MANAGED_LABEL = "org.gradeflow.managed"
"""Present (value ``1``) on every container and volume this backend makes."""
CREATED_LABEL = "org.gradeflow.created"
"""Unix seconds at creation; what ``gradeflow sweep --older-than`` compares."""
RUN_KEY_LABEL = "org.gradeflow.run-key"
GRADER_DIR_LABEL = "org.gradeflow.grader-dir"
"""An image label naming its grader directory, when it is not /grader."""
DEFAULT_GRADER_DIR = "/grader"

_CAPABILITIES = ["SETUID", "SETGID", "SETPCAP", "KILL"]
_TMPFS_OPTIONS = "rw,nosuid,nodev,uid={uid},gid={uid},mode=0700"
_TAIL_BYTES = 8 << 10
_MAX_ENVELOPE_BYTES = 1 << 20
_MAX_ARCHIVE_BYTES = 512 << 20
"""Stop reading a get_archive stream past this: a grader cannot make the flow host read forever."""
_SHIM_NPROC_BACKSTOP = 65536
_TAILED = frozenset({"stdout", "stderr"})

log = logging.getLogger(__name__)


class DockerLauncher(Launcher):
    """Runs graders in containers on a Docker engine (see the module docstring)."""

    name: ClassVar[Backend] = "docker"

    def __init__(self, client: docker.DockerClient | None = None) -> None:
        self._client = client

    @property
    def client(self) -> docker.DockerClient:
        """The engine, connected on first use (from ``DOCKER_HOST`` & co.)."""
        if self._client is None:
            try:
                self._client = docker.from_env()
            except docker.errors.DockerException as exc:
                raise InfraError(f"no Docker engine answers: {exc}") from exc
        return self._client

    def grader_identity(self, assignment: Assignment) -> GraderIdentity:
        image = self._image(assignment)
        return GraderIdentity(
            image=assignment.grader.image,
            digest=str(image.id),
            results_format=assignment.results_format,
        )

    # -- launch ---------------------------------------------------------------------------

    def launch(self, job: GradingJob) -> LaunchHandle:
        layout = layout_for(job.assignment)
        image = self._image(job.assignment)
        config: Mapping[str, Any] = image.attrs.get("Config") or {}
        spec = job.assignment.grader
        program = original_command(
            config, spec, image=str(spec.image), default=layout.default_command
        )
        labels = {
            **job.labels,
            MANAGED_LABEL: "1",
            CREATED_LABEL: str(int(time.time())),
            RUN_KEY_LABEL: job.run_key,
        }
        name = container_name(job.run_key)
        grader_dir = (config.get("Labels") or {}).get(GRADER_DIR_LABEL, DEFAULT_GRADER_DIR)
        paths = layout.paths(_sandbox(grader_dir))
        argv = shim_command(
            str(paths.sandbox.shim_binary),
            paths.sandbox,
            _shim_limits(job.assignment.limits),
            program,
            digest=job.submission_sha256,
            ready_timeout_s=max(job.assignment.limits.timeout_s, 60.0),
            environment={
                **_image_env(config),
                **layout.environment(paths, SubmissionInfo.for_job(job)),
            },
            workdir=_workdir(layout.name, paths, config),
            keep_root=layout.run_as_root,
        )
        argv.remove("--no-network")
        volumes = _layout_volumes(name, paths)
        reattached = False
        try:
            for volume in (name, *volumes.values()):
                self.client.volumes.create(name=volume, driver="local", labels=labels)
            self._own_mount_roots(str(image.id), name, paths, volumes, labels)
        except docker.errors.DockerException as exc:
            self._discard(name, volumes.values())  # a volume in use (a retry's) stays
            raise InfraError(f"{job.run_key}: cannot prepare the volumes of {name}: {exc}") from exc
        try:
            container = self.client.containers.create(
                str(image.id),
                name=name,
                **_host_options(job, argv, name, labels, paths=paths, volumes=volumes),
            )
        except docker.errors.APIError as exc:
            if exc.status_code != 409:
                self._discard(name, volumes.values())
                raise InfraError(f"{job.run_key}: cannot create container {name}: {exc}") from exc
            container = self._get(name)  # a retry of this attempt: never start a second grader
            reattached = True
        except docker.errors.DockerException as exc:
            self._discard(name, volumes.values())
            raise InfraError(f"{job.run_key}: cannot create container {name}: {exc}") from exc
        handle = LaunchHandle(
            backend="docker", run_key=job.run_key, run_id=name, reattached=reattached,
            details={
                "container": name, "container_id": str(container.id), "volume": name,
                "layout": layout.name, "grader_dir": grader_dir,
                "layout_volumes": ",".join(volumes.values()),
            },
        )  # fmt: skip
        if container.status == "created":
            try:
                container.start()
            except docker.errors.DockerException as exc:
                # No handle reaches the caller's finally yet, so clean up here.
                self.cleanup(handle)
                raise InfraError(f"{job.run_key}: cannot start container {name}: {exc}") from exc
        return handle

    def _discard(self, name: str, layout_volumes: Iterable[str] = ()) -> None:
        """Remove the volumes made for a container that was never created."""
        for volume in (name, *layout_volumes):
            with contextlib.suppress(docker.errors.DockerException):
                self.client.api.remove_volume(volume)

    def _own_mount_roots(
        self,
        image_id: str,
        name: str,
        paths: LayoutPaths,
        volumes: Mapping[PurePosixPath, str],
        labels: Mapping[str, str],
    ) -> None:
        """Give a layout volume's top directory its owner and mode (coursera's /shared).

        A copy into a volume cannot change the volume's own top directory
        (the engine skips a ``.`` entry) and the grader container's root
        filesystem is read-only, so a throwaway container that is never
        started mounts the volume at the same path and takes the directory
        entry at ``/``. About 0.1 s, and only for a layout whose mount root
        is not root-owned 0755 (the engine's default for a new volume).
        """
        roots = [
            d for d in paths.directories
            if d.path in volumes and (paths.uid_of(d), d.mode) != (0, 0o755)
        ]  # fmt: skip
        if not roots:
            return
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            _add_entries(tar, [(d.path.relative_to("/").as_posix(), None, d.mode,
                                paths.uid_of(d)) for d in roots])  # fmt: skip
        helper_name = f"{name}-owner"
        with contextlib.suppress(docker.errors.NotFound):
            self.client.api.remove_container(helper_name, force=True)  # a crashed earlier try
        helper = self.client.containers.create(
            image_id,
            name=helper_name,
            entrypoint=["/nonexistent"],  # never started
            command=[],
            user="0:0",
            network_mode="none",
            labels=dict(labels),
            mounts=[Mount(str(path), volume, type="volume") for path, volume in volumes.items()],
        )
        try:
            helper.put_archive("/", buffer.getvalue())
        finally:
            with contextlib.suppress(docker.errors.NotFound):
                helper.remove(force=True)

    # -- ready ----------------------------------------------------------------------------

    def make_ready(self, handle: LaunchHandle, job: GradingJob, *, timeout_s: float) -> None:
        container = self._get(handle.details["container"])
        logs = self._logs(container)
        if container.status == "running" and b'"event":"ready"' not in logs:
            with tempfile.TemporaryDirectory(prefix="gradeflow-submission-") as scratch:
                submission = Path(scratch) / "submission"
                try:
                    job.unpack_submission(submission)
                except InvalidSubmission:
                    self.stop(handle)
                    raise
                layout = layout_for(job.assignment)
                paths = layout.paths(_sandbox(handle.details.get("grader_dir", DEFAULT_GRADER_DIR)))
                metadata = layout.metadata(SubmissionInfo.for_job(job))
                payloads = _delivery_tars(paths, submission, job.submission_sha256, metadata)
            try:
                for where, payload in payloads:  # the marker's (/grading) is last
                    container.put_archive(str(where), payload)
            except docker.errors.DockerException as exc:
                raise InfraError(f"{handle.run_key}: cannot deliver the submission: {exc}") from exc
        self._wait_started(handle, container, timeout_s)

    def _wait_started(self, handle: LaunchHandle, container: Container, timeout_s: float) -> None:
        """Follow the shim's log stream until it says ``started`` (or the container ends).

        A followed stream, not polling: under concurrency every poll is engine
        work that competes with the other runs. The deadline stops the
        container, which ends the stream.
        """
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            with contextlib.suppress(InfraError):
                self.stop(handle)

        timer = threading.Timer(timeout_s, expire)
        timer.daemon = True
        timer.start()
        try:
            while not expired.is_set():
                if self._follow_until_started(container) and not expired.is_set():
                    return
        finally:
            timer.cancel()
        raise InfraError(f"{handle.run_key}: the grader did not start within {timeout_s:g} s")

    def _follow_until_started(self, container: Container) -> bool:
        """True once the shim logged ``started``/``exited`` or the container ended.

        False when the stream broke off (the client's read timeout): follow again.
        """
        try:
            stream = self.client.api.logs(
                str(container.id), stdout=False, stderr=True, stream=True, follow=True
            )
        except docker.errors.NotFound:
            return True
        except docker.errors.DockerException as exc:
            raise InfraError(f"cannot follow the logs of {container.name}: {exc}") from exc
        seen = b""
        try:
            for chunk in stream:
                seen = seen[-256:] + chunk
                if b'"event":"started"' in seen or b'"event":"exited"' in seen:
                    return True
        except (requests.exceptions.RequestException, OSError):
            return False
        finally:
            stream.close()
        return True  # the stream ended: the container stopped; collect() reports why

    # -- wait / stop ----------------------------------------------------------------------

    def wait(self, handle: LaunchHandle, *, timeout_s: float) -> None:
        try:
            self.client.api.wait(handle.details["container"], timeout=math.ceil(timeout_s))
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            self.stop(handle)
            raise InfraError(
                f"{handle.run_key}: the shim did not finish within {timeout_s:g} s; stopped it"
            ) from None
        except docker.errors.NotFound as exc:
            raise InfraError(f"{handle.run_key}: the container is gone: {exc}") from exc
        except docker.errors.DockerException as exc:
            raise InfraError(f"{handle.run_key}: waiting for the container failed: {exc}") from exc

    def stop(self, handle: LaunchHandle) -> None:
        # SIGTERM to the shim (PID 1): it forwards it to the grader and still writes its
        # envelope; the engine sends SIGKILL after the timeout.
        with contextlib.suppress(docker.errors.NotFound):
            try:
                self.client.api.stop(handle.details["container"], timeout=10)
            except docker.errors.APIError as exc:
                raise InfraError(f"{handle.run_key}: cannot stop the container: {exc}") from exc

    # -- collect / cleanup ----------------------------------------------------------------

    def collect(self, handle: LaunchHandle) -> RunOutput:
        container = self._get(handle.details["container"])
        notes: list[str] = []
        files = self._read_grading(container, notes)
        shim_files = files.get("shim", {})
        envelope: ShimEnvelope | None = None
        raw = shim_files.get("envelope.json")
        if raw is None:
            notes.append("the shim wrote no envelope")
        else:
            try:
                envelope = ShimEnvelope.model_validate_json(raw)
            except ValueError as exc:
                notes.append(f"the shim's envelope is unreadable: {exc}")
        state = self._state(container)
        oom_killed = bool(state.get("OOMKilled"))
        if envelope is not None:
            # The engine knows for sure (cgroup v1 and v2); the shim only on cgroup v2.
            envelope = envelope.model_copy(update={"oom_killed": oom_killed or envelope.oom_killed})
        elif oom_killed:
            notes.append("the container was killed by the out-of-memory killer")
        results = files.get("results", {})
        paths = LAYOUTS[_layout_name(handle.details)].paths(
            _sandbox(handle.details.get("grader_dir", DEFAULT_GRADER_DIR))
        )
        if paths.results != paths.sandbox.results:
            results = self._read_results(container, paths.results, paths.result_files, notes)
        return RunOutput(
            envelope=envelope,
            results_files=results,
            stdout_tail=_decode_tail(shim_files.get("stdout", b"")),
            stderr_tail=_decode_tail(shim_files.get("stderr", b"")),
            notes=tuple(notes) + _shim_warnings(self._logs(container)),
        )

    def cleanup(self, handle: LaunchHandle) -> None:
        """Remove the container, then its volume. Never raises: a leftover is logged for sweep."""
        name = handle.details["container"]
        try:
            self.client.api.remove_container(name, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.DockerException as exc:
            log.warning("%s: cannot remove container %s (gradeflow sweep will): %s",
                        handle.run_key, name, exc)  # fmt: skip
        volumes = [handle.details.get("volume", name)]
        volumes += [v for v in handle.details.get("layout_volumes", "").split(",") if v]
        for volume in volumes:
            self._remove_volume(handle, volume)

    def _remove_volume(self, handle: LaunchHandle, volume: str) -> None:
        for pause in (0.0, 0.1, 0.5, 1.0):
            time.sleep(pause)
            try:
                self.client.api.remove_volume(volume)
                return
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # 409: still in use while the container goes away
                    log.warning("%s: cannot remove volume %s: %s", handle.run_key, volume, exc)
                    return
            except docker.errors.DockerException as exc:
                log.warning("%s: cannot remove volume %s: %s", handle.run_key, volume, exc)
                return
        log.warning("%s: volume %s still in use; gradeflow sweep will remove it",
                    handle.run_key, volume)  # fmt: skip

    # -- engine helpers -------------------------------------------------------------------

    def _image(self, assignment: Assignment) -> Image:
        ref = assignment.grader.image
        if not ref:
            raise ConfigurationError(
                f"assignment {assignment.id}: [grader] image is required for the docker backend"
            )
        try:
            return self.client.images.get(ref)
        except docker.errors.ImageNotFound:
            raise ConfigurationError(
                f"grader image {ref} of assignment {assignment.id} is not on the Docker engine; "
                f"run `gradeflow image build {assignment.root}`"
            ) from None
        except docker.errors.DockerException as exc:
            raise InfraError(f"cannot inspect grader image {ref}: {exc}") from exc

    def _get(self, name: str) -> Container:
        try:
            return self.client.containers.get(name)
        except docker.errors.NotFound as exc:
            raise InfraError(f"container {name} is gone", retryable=False) from exc
        except docker.errors.DockerException as exc:
            raise InfraError(f"cannot inspect container {name}: {exc}") from exc

    def _state(self, container: Container) -> dict[str, Any]:
        try:
            attrs = self.client.api.inspect_container(str(container.id))
        except docker.errors.NotFound:
            return {"Status": "removed"}
        except docker.errors.DockerException as exc:
            raise InfraError(f"cannot inspect container {container.name}: {exc}") from exc
        state: dict[str, Any] = attrs.get("State") or {}
        return state

    def _logs(self, container: Container) -> bytes:
        """The shim's JSON log lines (its stderr; the grader's output goes to files)."""
        try:
            return bytes(container.logs(stdout=False, stderr=True))
        except docker.errors.NotFound:
            return b""
        except docker.errors.DockerException as exc:
            raise InfraError(f"cannot read the logs of {container.name}: {exc}") from exc

    def _read_results(
        self,
        container: Container,
        results: PurePosixPath,
        wanted: tuple[str, ...] | None,
        notes: list[str],
    ) -> dict[str, bytes]:
        """The layout's results files (only ``wanted``), in one get_archive of their directory."""
        try:
            chunks, _ = container.get_archive(str(results))
        except docker.errors.NotFound:
            return {}
        except docker.errors.DockerException as exc:
            raise InfraError(f"cannot copy {results} out of {container.name}: {exc}") from exc
        stream = _ChunkReader(chunks, limit=_MAX_ARCHIVE_BYTES)
        try:
            return _read_results_tar(stream, wanted)
        except (tarfile.TarError, OSError, _TooLarge) as exc:
            notes.append(f"reading {results} stopped early: {exc}")
            return {}
        finally:
            stream.close()

    def _read_grading(self, container: Container, notes: list[str]) -> dict[str, dict[str, bytes]]:
        """Top-level regular files of shim/ and results/, in one get_archive of /grading.

        One archive call, not one per directory: each costs the engine a mount
        and a re-exec (about 80 ms). The submission and the shim binary stream
        past unread.
        """
        try:
            chunks, _ = container.get_archive(str(CONTAINER_ROOT))
        except docker.errors.NotFound:
            return {}
        except docker.errors.DockerException as exc:
            raise InfraError(f"cannot copy /grading out of {container.name}: {exc}") from exc
        stream = _ChunkReader(chunks, limit=_MAX_ARCHIVE_BYTES)
        try:
            return _read_tar(stream)
        except (tarfile.TarError, OSError, _TooLarge) as exc:
            notes.append(f"reading /grading stopped early: {exc}")
            return {}
        finally:
            stream.close()


# -- pure helpers (unit-testable without an engine) ---------------------------------------


def original_command(
    config: Mapping[str, Any],
    spec: GraderSpec,
    *,
    image: str,
    default: Sequence[str] | None = None,
) -> list[str]:
    """The image's ENTRYPOINT + CMD with the assignment's overrides, as Docker would run it.

    Docker semantics: an overridden entrypoint drops the image's CMD unless a
    command is given too. ``default`` (the layout's, e.g. Gradescope's
    ``/autograder/run_autograder``) runs when there is nothing else.

    Raises:
        ConfigurationError: nothing to run (no entrypoint and no command).
    """
    if spec.entrypoint is not None:
        entrypoint = list(spec.entrypoint)
        command = list(spec.command) if spec.command is not None else []
    else:
        entrypoint = _as_list(config.get("Entrypoint"))
        command = list(spec.command) if spec.command is not None else _as_list(config.get("Cmd"))
    program = entrypoint + command or list(default or ())
    if not program:
        raise ConfigurationError(
            f"grader image {image} has neither ENTRYPOINT nor CMD; set one in its Dockerfile "
            "or [grader] entrypoint/command in assignment.toml"
        )
    return program


def container_name(run_key: str) -> str:
    """``gradeflow-<run_key>``, made a valid Docker name; a digest keeps altered keys unique."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "-", run_key)
    if safe != run_key or len(safe) > 200:
        safe = f"{safe[:200]}-{hashlib.sha256(run_key.encode()).hexdigest()[:12]}"
    return f"gradeflow-{safe}"


def _as_list(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(part) for part in value]  # type: ignore[attr-defined]


def _image_env(config: Mapping[str, Any]) -> dict[str, str]:
    """The image's own ENV (instructor-provided, e.g. JAVA_HOME); never the flow host's."""
    env: dict[str, str] = {}
    for item in config.get("Env") or []:
        key, sep, value = str(item).partition("=")
        if sep and key:
            env[key] = value
    return env


def _shim_limits(limits: Limits) -> Limits:
    """The shim's rlimits as backstops behind the cgroup limits (see the module docstring)."""
    return limits.model_copy(
        update={
            "memory_mb": limits.memory_mb * 2 + 1024,
            "nproc": max(limits.nproc, _SHIM_NPROC_BACKSTOP),
        }
    )


def _sandbox(grader_dir: str) -> SandboxPaths:
    return SandboxPaths(root=CONTAINER_ROOT, grader_dir=PurePosixPath(grader_dir))


def _layout_name(details: Mapping[str, str]) -> LayoutName:
    """The layout a container was launched with (handles from before layouts: gradeflow)."""
    name = details.get("layout", "gradeflow")
    return (
        "coursera" if name == "coursera" else "gradescope" if name == "gradescope" else "gradeflow"
    )


def _workdir(layout: LayoutName, paths: LayoutPaths, config: Mapping[str, Any]) -> PurePosixPath:
    """The grader's cwd: the layout's; a Coursera image's own WORKDIR when it sets one."""
    if layout == "coursera" and config.get("WorkingDir"):
        return PurePosixPath(str(config["WorkingDir"]))
    return paths.workdir


def _layout_volumes(name: str, paths: LayoutPaths) -> dict[PurePosixPath, str]:
    """One named volume per fixed directory of the layout (``/shared``, ``/autograder``).

    Volumes, not tmpfs: the archive calls see only what the daemon can mount.
    A new volume mounted where the image has content (Gradescope's
    ``/autograder``) starts as a copy of it, owners and modes included.
    """
    return {mount: f"{name}-{mount.name}" for mount in paths.mounts}


def _host_options(
    job: GradingJob,
    argv: list[str],
    name: str,
    labels: dict[str, str],
    *,
    paths: LayoutPaths | None = None,
    volumes: Mapping[PurePosixPath, str] | None = None,
) -> dict[str, Any]:
    limits = job.assignment.limits
    memory = f"{limits.memory_mb}m"
    tmpfs_size = f"size={limits.memory_mb}m"
    # The grader owns its scratch: uid 65534, or 0 with run_as_root (a capability-less
    # root cannot enter another user's 0700 directory).
    tmpfs = _TMPFS_OPTIONS.format(uid=paths.grader_uid if paths is not None else GRADER_UID)
    return {
        "entrypoint": argv,
        "command": [],
        "user": "0:0",  # the shim starts as root only to drop to 65534 itself
        "working_dir": "/",
        "environment": {},
        "labels": labels,
        "network_mode": "none",
        "mem_limit": memory,
        "memswap_limit": memory,
        "pids_limit": limits.nproc + 1,  # the grader's processes plus the shim
        "nano_cpus": int(limits.cpus * 1e9),
        "cap_drop": ["ALL"],
        "cap_add": list(_CAPABILITIES),
        "security_opt": ["no-new-privileges"],
        "read_only": True,
        "init": False,
        "mounts": [
            Mount(str(CONTAINER_ROOT), name, type="volume"),
            Mount(
                str(CONTAINER_ROOT / "bin" / "gradeflow-shim"),
                os.path.realpath(job.shim.path),
                type="bind",
                read_only=True,
            ),
            *(Mount(str(path), volume, type="volume") for path, volume in (volumes or {}).items()),
        ],
        "tmpfs": {
            "/tmp": f"{tmpfs},{tmpfs_size}",
            str(CONTAINER_ROOT / "work"): f"{tmpfs},{tmpfs_size}",
        },
        "log_config": LogConfig(type="json-file", config={"max-size": "1m", "max-file": "1"}),
        "stdin_open": False,
        "tty": False,
    }


def _add_entries(tar: tarfile.TarFile, entries: list[tuple[str, bytes | None, int, int]]) -> None:
    """Directories (data None) and files, with explicit modes and owner uid=gid."""
    for name, data, mode, owner in entries:
        info = tarfile.TarInfo(name)
        info.mode = mode
        info.uid = info.gid = owner
        info.mtime = int(time.time())
        if data is None:
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        else:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _delivery_tars(
    paths: LayoutPaths, root: Path, digest: str, metadata: bytes | None
) -> list[tuple[PurePosixPath, bytes]]:
    """The archives that lay out the tree, the submission, then the ready marker.

    One archive per top directory (each layout volume, then /grading), put
    in this order, so when the marker appears the layout's directories
    (owners, modes), the whole submission (root-owned, read-only modes) and
    the metadata file are in place; the marker is one small write, so the
    shim reads it whole or finds it empty and waits. For the gradeflow
    layout this is the single archive of /grading. A volume's own top
    directory is never an entry (the engine ignores ``.``): see
    `DockerLauncher._own_mount_roots`.
    """

    def normalise(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if not (info.isdir() or info.isreg()):
            return None  # unpack_submission makes none, but never ship a link into the sandbox
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        executable = info.mode & 0o111
        info.mode = 0o555 if info.isdir() or executable else 0o444
        return info

    def inside(base: PurePosixPath, path: PurePosixPath) -> bool:
        return base in path.parents

    tmpfs = paths.sandbox.work  # mounted over the volume: the archive would land underneath
    payloads: list[tuple[PurePosixPath, bytes]] = []
    for base in (*paths.mounts, CONTAINER_ROOT):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            _add_entries(tar, [
                (d.path.relative_to(base).as_posix(), None, d.mode, paths.uid_of(d))
                for d in paths.directories if inside(base, d.path) and d.path != tmpfs
            ])  # fmt: skip
            if inside(base, paths.submission):
                arcname = paths.submission.relative_to(base).as_posix()
                tar.add(root, arcname=arcname, recursive=True, filter=normalise)
            if metadata is not None and paths.metadata is not None and inside(base, paths.metadata):
                _add_entries(tar, [(paths.metadata.relative_to(base).as_posix(), metadata,
                                    0o444, 0)])  # fmt: skip
            if base == CONTAINER_ROOT:
                marker = paths.sandbox.ready_file.relative_to(base).as_posix()
                _add_entries(tar, [(marker, digest.encode() + b"\n", 0o600, 0)])
        payloads.append((base, buffer.getvalue()))
    return payloads


class _TooLarge(Exception):
    pass


class _ChunkReader(io.RawIOBase):
    """A file over get_archive's chunk iterator, refusing to read past ``limit`` bytes."""

    def __init__(self, chunks: Iterator[bytes], *, limit: int) -> None:
        self._chunks = chunks
        self._buffer = b""
        self._left = limit

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self._buffer:
            try:
                self._buffer = next(self._chunks)
            except StopIteration:
                return 0
            self._left -= len(self._buffer)
            if self._left < 0:
                raise _TooLarge(f"the archive is larger than {_MAX_ARCHIVE_BYTES} bytes")
        size = min(len(target), len(self._buffer))
        target[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]
        return size

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                close()
        super().close()


def _read_tar(stream: io.RawIOBase) -> dict[str, dict[str, bytes]]:
    """``{"shim": {...}, "results": {...}}`` from a get_archive tar of /grading.

    Only regular files directly inside those two directories count; links,
    FIFOs, devices and nested entries are skipped, never followed. Captured
    output keeps only its tail; other files over their cap are left out.
    """
    files: dict[str, dict[str, bytes]] = {"shim": {}, "results": {}}
    with tarfile.open(fileobj=io.BufferedReader(stream), mode="r|") as tar:
        for member in tar:
            parts = PurePosixPath(member.name).parts
            if len(parts) != 3 or parts[1] not in files or not member.isreg():
                continue  # the submission, the shim binary, directories, links, FIFOs
            where, name = files[parts[1]], parts[2]
            if len(where) >= MAX_RESULT_FILES:
                continue
            if parts[1] == "shim" and name in _TAILED:
                where[name] = _tail_of(tar, member)
                continue
            cap = _MAX_ENVELOPE_BYTES if name == "envelope.json" else MAX_RESULT_FILE_BYTES
            if member.size <= cap:
                where[name] = _read_member(tar, member)
    return files


def _read_results_tar(stream: io.RawIOBase, wanted: tuple[str, ...] | None) -> dict[str, bytes]:
    """Regular files directly inside a get_archive of a results directory.

    ``wanted`` names the only files read (Coursera's /shared holds the
    submission and the grader's scratch too); None: any. Links, FIFOs and
    nested entries are skipped, never followed; files over the cap left out.
    """
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BufferedReader(stream), mode="r|") as tar:
        for member in tar:
            parts = PurePosixPath(member.name).parts
            if len(parts) != 2 or not member.isreg() or len(files) >= MAX_RESULT_FILES:
                continue
            if (wanted is None or parts[1] in wanted) and member.size <= MAX_RESULT_FILE_BYTES:
                files[parts[1]] = _read_member(tar, member)
    return files


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = tar.extractfile(member)
    return handle.read() if handle is not None else b""


def _tail_of(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = tar.extractfile(member)
    if handle is None:
        return b""
    tail = b""
    while chunk := handle.read(1 << 16):
        tail = (tail + chunk)[-_TAIL_BYTES:]
    return tail


def _decode_tail(data: bytes) -> str:
    return data[-_TAIL_BYTES:].decode("utf-8", "replace")


def _shim_warnings(logs: bytes) -> tuple[str, ...]:
    warnings: list[str] = []
    for line in logs.decode("utf-8", "replace").splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict) and event.get("event") in {"warning", "error"}:
                warnings.append(str(event.get("message", event)))
    return tuple(warnings)
