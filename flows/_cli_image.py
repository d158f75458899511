"""``gradeflow image`` and ``gradeflow sweep``: the docker backend's housekeeping.

    gradeflow image base [--rebuild]        debootstrap + docker import of
                                            gradeflow/base-python:bookworm
    gradeflow image build ASSIGNMENT_DIR    the assignment's Dockerfile, tagged
                                            as its [grader] image
    gradeflow sweep [--older-than SECS]     remove gradeflow-labelled containers
                                            and volumes left by crashed runs

No registry is involved anywhere. Exit codes: 0 done, 2 configuration (no
engine, no Dockerfile, not root), 1 the build or the engine failed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from gradeflow import ConfigurationError, GradeflowError

__all__ = ["image_app", "register"]

image_app = typer.Typer(no_args_is_help=True, help="Grader images for the docker backend.")
_out = Console()
_err = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Add ``image`` and ``sweep`` to the main CLI."""
    app.add_typer(image_app, name="image")
    app.command("sweep")(sweep)


def _client() -> Any:
    import docker
    import docker.errors

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        _err.print(f"[red]error:[/] no Docker engine answers: {exc}")
        raise typer.Exit(2) from None
    return client


def _fail(exc: GradeflowError) -> typer.Exit:
    _err.print(f"[red]error:[/] {exc}")
    return typer.Exit(2 if isinstance(exc, ConfigurationError) else 1)


@image_app.command("base")
def image_base(
    rebuild: Annotated[bool, typer.Option(help="Build even if the image exists.")] = False,
    mirror: Annotated[
        str | None, typer.Option(help="Debian mirror (default: apt's own sources).")
    ] = None,
) -> None:
    """Build gradeflow/base-python:bookworm offline-style: debootstrap, then docker import."""
    from gradeflow._images import build_base_image

    try:
        built = build_base_image(_client(), mirror=mirror, rebuild=rebuild)
    except GradeflowError as exc:
        raise _fail(exc) from None
    _out.print(f"{built.tag}: {'built' if built.built else 'exists'} ({built.image_id[:19]})")


@image_app.command("build")
def image_build(
    assignment_dir: Annotated[Path, typer.Argument(help="Directory with assignment.toml.")],
    rebuild: Annotated[bool, typer.Option(help="Ignore the engine's layer cache.")] = False,
) -> None:
    """Build the assignment's grader image from its Dockerfile."""
    from gradeflow._images import build_assignment_image

    try:
        built = build_assignment_image(_client(), assignment_dir, rebuild=rebuild)
    except GradeflowError as exc:
        raise _fail(exc) from None
    _out.print(f"{built.tag}: built ({built.image_id[:19]})")


def sweep(
    older_than: Annotated[
        float, typer.Option("--older-than", min=0, help="Only resources older than SECS.")
    ] = 3600.0,
) -> None:
    """Remove gradeflow's containers and volumes older than a bound (crashed or killed runs)."""
    from gradeflow.launchers._docker_sweep import sweep as sweep_core

    try:
        report = sweep_core(_client(), older_than_s=older_than)
    except GradeflowError as exc:
        raise _fail(exc) from None
    _out.print(f"removed {len(report.containers)} container(s), {len(report.volumes)} volume(s)")
    for name in (*report.containers, *report.volumes):
        _out.print(f"  {name}")
