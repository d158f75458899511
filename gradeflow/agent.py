"""The ECS task's co-process: deliver the submission, then carry the results out.

Runs as the ``agent`` container of a grading task (``python3 -I -m
gradeflow.agent``) from a small image holding only this module,
``gradeflow/_archives.py`` and ``gradeflow/_errors.py`` (both stdlib-only) and
an empty ``gradeflow/__init__.py``. It imports nothing but the standard
library and that real unpacker, so the agent unpacks exactly as every other
backend does.

No AWS credentials ever enter the task. Everything arrives in environment
variables that the flow put into ``RunTask``'s container overrides:

    GRADEFLOW_AGENT_SUBMISSION_URL   presigned GET of the submission
    GRADEFLOW_AGENT_SHA256           its sha256 (hex), checked before unpacking
    GRADEFLOW_AGENT_FILENAME         name of a single-file submission
    GRADEFLOW_AGENT_MAX_BYTES        archive and unpacked size limit
    GRADEFLOW_AGENT_MAX_FILES        files an archive may hold
    GRADEFLOW_AGENT_DEADLINE_S       how long to wait for the shim's envelope
    GRADEFLOW_AGENT_UPLOADS          JSON {name: presigned PUT URL} for
                                     ready, envelope, stdout, stderr, results, manifest
    GRADEFLOW_AGENT_ROOT             the contract's root (default /grading)
    GRADEFLOW_AGENT_LAYOUT           JSON: where the assignment's layout wants the
                                     submission, the results and the metadata, and
                                     which directories to create (owner, mode); set
                                     in the task definition (the same for every run)
    GRADEFLOW_AGENT_METADATA         the layout's submission-metadata file (gradescope's
                                     submission_metadata.json), written 0444 before
                                     the ready marker

The steps, in order: lay out ``/grading`` (and the layout's own tree,
``/shared`` or ``/autograder``, on task volumes); download, hash and verify the
submission; unpack it with the safe unpacker into the layout's submission directory;
write the layout's metadata file; write the ready marker (the
shim in the grader container is waiting for it); PUT ``ready`` once the shim
has started the grader; wait, bounded, for the envelope; PUT the envelope,
the output tails and a tar of the results files; PUT the manifest last, so
its presence tells the flow that everything it lists is there. Any failure
still ends with a manifest whose ``outcome`` says what happened. The agent is
the task's only essential container, so its exit ends the task.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from gradeflow._archives import ArchiveLimits, unpack_submission
from gradeflow._errors import InvalidSubmission
from gradeflow._result_files import MAX_RESULT_FILE_BYTES, read_result_files

__all__ = ["AgentConfig", "AgentLayout", "main", "run_agent"]

MANIFEST_VERSION = 1
UPLOAD_NAMES = ("ready", "envelope", "stdout", "stderr", "results", "manifest")
GRADER_UID = 65534
_TAIL_BYTES = 64 << 10
_STARTED_WAIT_S = 15.0
_HTTP_TIMEOUT_S = 60.0


class AgentLayout:
    """Where the assignment's layout puts things in the task (see gradeflow._layouts).

    Without ``GRADEFLOW_AGENT_LAYOUT`` (task definitions rendered before
    layouts): gradeflow's contract under ``root``, grader uid 65534.
    """

    def __init__(self, spec: Mapping[str, Any] | None, root: Path) -> None:
        if spec is None:
            spec = {
                "submission": str(root / "submission"),
                "results": str(root / "results"),
                "result_files": None,
                "metadata": None,
                "directories": [
                    [str(root / "shim"), 0, 0o700],
                    [str(root / "work"), GRADER_UID, 0o700],
                    [str(root / "results"), GRADER_UID, 0o700],
                ],
            }
        self.submission = Path(str(spec["submission"]))
        self.results = Path(str(spec["results"]))
        files = spec.get("result_files")
        self.result_files: tuple[str, ...] | None = (
            None if files is None else tuple(str(f) for f in files)
        )
        metadata = spec.get("metadata")
        self.metadata: Path | None = None if metadata is None else Path(str(metadata))
        self.directories: list[tuple[Path, int, int]] = [
            (Path(str(path)), int(uid), int(mode)) for path, uid, mode in spec["directories"]
        ]
        for path in (self.submission, self.results, *(d for d, _, _ in self.directories)):
            if not path.is_absolute():
                raise ValueError(f"GRADEFLOW_AGENT_LAYOUT: {path} is not absolute")


class AgentConfig:
    """The agent's inputs, read and checked from the environment."""

    def __init__(self, env: Mapping[str, str]) -> None:
        def need(name: str) -> str:
            value = env.get(name)
            if not value:
                raise ValueError(f"{name} is not set")
            return value

        self.submission_url = need("GRADEFLOW_AGENT_SUBMISSION_URL")
        self.sha256 = need("GRADEFLOW_AGENT_SHA256").lower()
        self.filename = need("GRADEFLOW_AGENT_FILENAME")
        self.max_bytes = int(need("GRADEFLOW_AGENT_MAX_BYTES"))
        self.max_files = int(need("GRADEFLOW_AGENT_MAX_FILES"))
        self.deadline_s = float(need("GRADEFLOW_AGENT_DEADLINE_S"))
        uploads = json.loads(need("GRADEFLOW_AGENT_UPLOADS"))
        missing = [n for n in UPLOAD_NAMES if not isinstance(uploads.get(n), str)]
        if missing:
            raise ValueError(f"GRADEFLOW_AGENT_UPLOADS lacks {', '.join(missing)}")
        self.uploads: dict[str, str] = {n: uploads[n] for n in UPLOAD_NAMES}
        self.root = Path(env.get("GRADEFLOW_AGENT_ROOT", "/grading"))
        layout = env.get("GRADEFLOW_AGENT_LAYOUT")
        try:
            self.layout = AgentLayout(json.loads(layout) if layout else None, self.root)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"GRADEFLOW_AGENT_LAYOUT is malformed: {exc!r}") from exc
        metadata = env.get("GRADEFLOW_AGENT_METADATA")
        self.metadata: bytes | None = metadata.encode() if metadata is not None else None
        if self.metadata is not None and self.layout.metadata is None:
            raise ValueError("GRADEFLOW_AGENT_METADATA is set but the layout has no metadata path")


def main() -> int:
    """Entry point of the container; the exit code says whether the manifest got out."""
    try:
        config = AgentConfig(os.environ)
    except (ValueError, json.JSONDecodeError) as exc:
        _log("error", f"bad configuration: {exc}")
        return 2
    return run_agent(config)


def run_agent(config: AgentConfig, *, put: Callable[[str, bytes], None] | None = None) -> int:
    """Run every step; returns 0 once a manifest (successful or not) was uploaded."""
    send = put or _http_put
    manifest: dict[str, Any] = {"version": MANIFEST_VERSION, "files": {}, "timings_ms": {}}
    started_at = time.monotonic()
    try:
        manifest["outcome"], manifest["reason"] = _grade(config, send, manifest)
    except Exception as exc:  # the manifest must always go out
        manifest["outcome"], manifest["reason"] = "failed", f"agent: {type(exc).__name__}: {exc}"
    manifest["timings_ms"]["total"] = _ms_since(started_at)
    _log("info", f"outcome {manifest['outcome']}: {manifest['reason'] or 'ok'}")
    try:
        send(config.uploads["manifest"], json.dumps(manifest, sort_keys=True).encode())
    except OSError as exc:
        _log("error", f"uploading the manifest failed: {exc}")
        return 1
    return 0


def _grade(
    config: AgentConfig, send: Callable[[str, bytes], None], manifest: dict[str, Any]
) -> tuple[str, str | None]:
    root = config.root
    layout = config.layout
    shim_dir = root / "shim"
    _lay_out(layout)
    t0 = time.monotonic()
    incoming = Path(tempfile.mkdtemp(prefix=".incoming-", dir=root))
    try:
        archive = incoming / "submission"
        try:
            _download(config.submission_url, archive, config.sha256, config.max_bytes)
            manifest["timings_ms"]["download"] = _ms_since(t0)
            unpack_submission(
                archive,
                layout.submission,
                filename=config.filename,
                limits=ArchiveLimits(max_total_bytes=config.max_bytes, max_files=config.max_files),
            )
        except InvalidSubmission as exc:
            return "invalid_submission", str(exc)
    finally:
        _remove(incoming)
    if config.metadata is not None and layout.metadata is not None:
        _write_atomically(layout.metadata, config.metadata)
        os.chmod(layout.metadata, 0o444)
    _write_atomically(shim_dir / "ready", config.sha256.encode())
    manifest["timings_ms"]["ready"] = _ms_since(t0)
    started = _wait_for_any(
        [shim_dir / "stdout", shim_dir / "envelope.json"], min(_STARTED_WAIT_S, config.deadline_s)
    )
    send(config.uploads["ready"], json.dumps({"started": started}).encode())

    envelope_path = shim_dir / "envelope.json"
    if not _wait_for_any([envelope_path], config.deadline_s):
        reason = f"the shim wrote no envelope within {config.deadline_s:g} s"
        _upload_outputs(config, send, manifest, shim_dir, envelope=False)
        return "failed", reason
    manifest["timings_ms"]["finished"] = _ms_since(t0)
    _upload_outputs(config, send, manifest, shim_dir, envelope=True)
    return "completed", None


def _lay_out(layout: AgentLayout) -> None:
    """The layout's directories, parents first, each with its owner and mode.

    A directory may already exist (a task volume's mount point, or one the
    grader-files container is filling): it is given its owner and mode all
    the same. Owners change only when the agent runs as root (in the task).
    """
    as_root = os.geteuid() == 0
    for path, uid, mode in layout.directories:
        path.mkdir(mode=mode, exist_ok=True)
        os.chmod(path, mode)  # not narrowed by the umask, and fixed on a mount point
        if as_root:
            os.chown(path, uid, uid)


def _download(url: str, dest: Path, sha256: str, max_bytes: int) -> None:
    """GET ``url`` into ``dest``, hashing as it streams; never trust the length header."""
    digest = hashlib.sha256()
    size = 0
    request = urllib.request.Request(url, method="GET")
    with (
        _retrying(lambda: urllib.request.urlopen(request, timeout=_HTTP_TIMEOUT_S)) as response,
        open(dest, "wb") as out,
    ):
        while chunk := response.read(64 << 10):
            size += len(chunk)
            if size > max_bytes:
                raise InvalidSubmission(f"submission is over the limit of {max_bytes} bytes")
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != sha256:
        raise OSError(
            f"downloaded submission has sha256 {digest.hexdigest()}, expected {sha256} "
            f"({size} bytes)"
        )


def _upload_outputs(
    config: AgentConfig,
    send: Callable[[str, bytes], None],
    manifest: dict[str, Any],
    shim_dir: Path,
    *,
    envelope: bool,
) -> None:
    blobs: dict[str, bytes] = {
        "stdout": _tail(shim_dir / "stdout"),
        "stderr": _tail(shim_dir / "stderr"),
        "results": _results_tar(config.layout.results, config.layout.result_files),
    }
    if envelope:
        blobs["envelope"] = (shim_dir / "envelope.json").read_bytes()[:MAX_RESULT_FILE_BYTES]
    for name, data in blobs.items():
        send(config.uploads[name], data)
        manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def _results_tar(results_dir: Path, wanted: tuple[str, ...] | None = None) -> bytes:
    """The results files (read as the flow host would read them) as one tar."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in read_result_files(results_dir, wanted).items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            member.mode = 0o444
            tar.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


def _http_put(url: str, data: bytes) -> None:
    request = urllib.request.Request(
        url,
        data=data,
        method="PUT",
        # Not signed, so free to set; without it urllib says form-urlencoded.
        headers={"Content-Length": str(len(data)), "Content-Type": "application/octet-stream"},
    )
    with _retrying(lambda: urllib.request.urlopen(request, timeout=_HTTP_TIMEOUT_S)) as response:
        response.read()


@contextlib.contextmanager
def _retrying(call: Callable[[], Any], attempts: int = 4) -> Iterator[Any]:
    """A response from ``call``; 5xx, 429 and network errors are retried with backoff."""
    delay = 0.5
    for attempt in range(1, attempts + 1):
        try:
            response = call()
        except urllib.error.HTTPError as exc:
            if (exc.code < 500 and exc.code != 429) or attempt == attempts:
                body = exc.read(500).decode("utf-8", "replace")
                raise OSError(f"HTTP {exc.code} {exc.reason}: {body}") from exc
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            if attempt == attempts:
                raise OSError(f"request failed: {exc}") from exc
        else:
            with response:
                yield response
            return
        time.sleep(delay)
        delay *= 2


def _wait_for_any(paths: list[Path], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    pause = 0.01
    while True:
        if any(p.exists() for p in paths):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(pause)
        pause = min(pause * 2, 0.25)


def _tail(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - _TAIL_BYTES))
            return handle.read()
    except FileNotFoundError:
        return b""


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _remove(path: Path) -> None:
    for child in sorted(path.rglob("*"), reverse=True):
        with contextlib.suppress(OSError):
            child.chmod(0o700) if child.is_dir() else None
            child.rmdir() if child.is_dir() else child.unlink()
    with contextlib.suppress(OSError):
        path.rmdir()


def _ms_since(start: float) -> int:
    return round((time.monotonic() - start) * 1000)


def _log(level: str, message: str) -> None:
    """One JSON line on stderr, the format the shim logs in (CloudWatch keeps both)."""
    line = {"agent": "gradeflow-agent", "level": level, "message": message, "ts": time.time()}
    print(json.dumps(line), file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
