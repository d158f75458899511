"""Waiting for the co-process's ready marker before anything else."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RunShim = Callable[..., Any]
DIGEST = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def write_marker_later(path: Path, content: str, delay: float) -> threading.Thread:
    """Atomically place the marker (write temp, rename) after `delay` seconds."""

    def place() -> None:
        time.sleep(delay)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(content + "\n")
        os.rename(tmp, path)

    thread = threading.Thread(target=place)
    thread.start()
    return thread


def test_program_starts_once_the_marker_appears(run_shim: RunShim, workdir: Path) -> None:
    marker = workdir / "ready"
    writer = write_marker_later(marker, DIGEST, 0.3)
    run = run_shim(
        "/bin/true",
        options=[
            "--ready-file",
            str(marker),
            "--expect-digest",
            DIGEST.upper(),
            "--ready-timeout",
            "10",
        ],
    )
    writer.join()
    assert run.returncode == 0, run.stderr
    assert run.envelope["status"] == "exited"
    assert 250 <= run.envelope["ready_wait_ms"] < 5000
    assert run.event("ready")["path"] == str(marker)
    names = [e["event"] for e in run.events]
    assert names.index("ready") < names.index("started") < names.index("exited")


def test_marker_directory_may_not_exist_yet(run_shim: RunShim, workdir: Path) -> None:
    marker = workdir / "not" / "yet" / "ready"
    writer = write_marker_later(marker, DIGEST, 0.2)
    run = run_shim("/bin/true", options=["--ready-file", str(marker), "--ready-timeout", "10"])
    writer.join()
    assert run.returncode == 0, run.stderr
    assert run.envelope["ready_wait_ms"] >= 150


def test_digest_mismatch_is_refused(run_shim: RunShim, workdir: Path) -> None:
    marker = workdir / "ready"
    marker.write_text("deadbeef\n")
    ran = workdir / "ran"
    run = run_shim(
        "/bin/sh",
        "-c",
        f"touch {ran}",
        options=["--ready-file", str(marker), "--expect-digest", DIGEST, "--keep-root"],
    )
    assert run.returncode == 125
    assert run.envelope["status"] == "ready_mismatch"
    assert "deadbeef" in run.envelope["error"]
    assert run.envelope["exit_code"] is None
    assert not ran.exists()


def test_ready_timeout(run_shim: RunShim, workdir: Path) -> None:
    started = time.monotonic()
    run = run_shim(
        "/bin/true", options=["--ready-file", str(workdir / "never"), "--ready-timeout", "0.3"]
    )
    assert run.returncode == 125
    assert run.envelope["status"] == "ready_timeout"
    assert run.envelope["ready_wait_ms"] >= 300
    assert time.monotonic() - started < 5
    assert "started" not in [e["event"] for e in run.events]


def test_sigterm_while_waiting_ends_the_wait(shim_binary: Path, workdir: Path) -> None:
    result = workdir / "result.json"
    proc = subprocess.Popen(
        [
            str(shim_binary),
            "--result",
            str(result),
            "--ready-file",
            str(workdir / "never"),
            "--",
            "/bin/true",
        ],
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 125
    envelope = json.loads(result.read_text())
    assert envelope["status"] == "ready_timeout"
    assert "signal 15" in envelope["error"]
