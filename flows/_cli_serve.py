"""``gradeflow serve``: the whole local stack in one command, for staff who want the UI.

    prefect server start (127.0.0.1, UI on)     unless --no-server / PREFECT_API_URL
    prefect work-pool create gradeflow-local    a `process` pool, if missing
    prefect deploy --all (deployments/prefect.yaml)
    prefect worker start --pool gradeflow-local runs until Ctrl-C, then all stop

It uses the same prefect.yaml and the same kind of worker as production (only
the pool type differs), so what staff click in the UI is what the platform
triggers. The worker inherits this shell's ``GRADEFLOW_*`` settings, so runs
use the same store as ``gradeflow grade`` and ``gradeflow results``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

__all__ = ["register"]

_err = Console(stderr=True)
PROJECT = Path(__file__).resolve().parents[1]
PREFECT_FILE = PROJECT / "deployments" / "prefect.yaml"


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the ``gradeflow`` app."""
    app.command("serve")(serve)


def serve(
    port: Annotated[int, typer.Option(min=1, max=65535, help="The server's port.")] = 4200,
    pool: Annotated[str, typer.Option(help="The process work pool to create and poll.")] = (
        "gradeflow-local"
    ),
    server: Annotated[
        bool, typer.Option(help="Start a server (off: use PREFECT_API_URL's).")
    ] = True,
) -> None:
    """Start a Prefect server, apply the deployments and run a worker until Ctrl-C."""
    prefect = str(Path(sys.executable).parent / "prefect")
    env = dict(os.environ)
    children: list[subprocess.Popen[bytes]] = []
    signal.signal(signal.SIGTERM, _interrupt)  # stop the same way when a supervisor asks
    try:
        if server and "PREFECT_API_URL" not in os.environ:
            api = f"http://127.0.0.1:{port}/api"
            children.append(subprocess.Popen(
                [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env,
            ))  # fmt: skip
            _wait_healthy(api, children[0])
            env["PREFECT_API_URL"] = api
        _err.print(f"[bold]API[/] {env.get('PREFECT_API_URL', '(from the Prefect profile)')}")
        if subprocess.run([prefect, "work-pool", "inspect", pool], env=env,
                          capture_output=True).returncode != 0:  # fmt: skip
            _step([prefect, "work-pool", "create", pool, "--type", "process"], env)
        env["GRADEFLOW_WORK_POOL"] = pool  # prefect.yaml names its pool through this
        _step([prefect, "--no-prompt", "deploy", "--all", "--prefect-file", str(PREFECT_FILE)],
              env)  # fmt: skip
        worker = subprocess.Popen(
            [prefect, "worker", "start", "--pool", pool, "--type", "process"], env=env,
            cwd=PROJECT,
        )  # fmt: skip
        children.append(worker)
        _err.print("[green]ready[/]: the UI is at the API's host; Ctrl-C stops everything")
        worker.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for child in reversed(children):
            if child.poll() is None:
                child.terminate()
                try:
                    child.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    child.kill()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _step(argv: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(argv, env=env, cwd=PROJECT, capture_output=True, text=True)
    if done.returncode != 0:
        _err.print(f"[red]error:[/] {' '.join(argv[1:4])} failed:\n{done.stdout}{done.stderr}")
        raise typer.Exit(1)


def _wait_healthy(api: str, process: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    """A fresh server answers slowly for its first minute (migrations, services)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _err.print("[red]error:[/] prefect server exited during start-up")
            raise typer.Exit(1)
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    _err.print(f"[red]error:[/] no healthy server at {api} after {timeout_s:.0f}s")
    raise typer.Exit(1)
