"""``gradeflow image`` and ``gradeflow sweep``: the docker backend's housekeeping.

    gradeflow image base [--rebuild]        debootstrap + docker import of
                                            gradeflow/base-python:bookworm
    gradeflow image build ASSIGNMENT_DIR    the assignment's Dockerfile, tagged
                                            as its [grader] image
    gradeflow image build --gradescope AUTOGRADER.zip --tag TAG [--base IMAGE]
                                            a Gradescope autograder, built the
                                            way Gradescope builds it
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

__all__ = ["docker_client_or_exit", "exit_for", "image_app", "register"]

image_app = typer.Typer(no_args_is_help=True, help="Grader images for the docker backend.")
_out = Console()
_err = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Add ``image`` and ``sweep`` to the main CLI."""
    app.add_typer(image_app, name="image")
    app.command("sweep")(sweep)


def docker_client_or_exit() -> Any:
    """A docker SDK client, or exit 2 saying no engine answers."""
    import docker
    import docker.errors

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        _err.print(f"[red]error:[/] no Docker engine answers: {exc}")
        raise typer.Exit(2) from None
    return client


def exit_for(exc: GradeflowError) -> typer.Exit:
    """Report ``exc``; exit 2 for configuration errors, 1 for the rest."""
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
        built = build_base_image(docker_client_or_exit(), mirror=mirror, rebuild=rebuild)
    except GradeflowError as exc:
        raise exit_for(exc) from None
    _out.print(f"{built.tag}: {'built' if built.built else 'exists'} ({built.image_id[:19]})")


@image_app.command("build")
def image_build(
    assignment_dir: Annotated[
        Path | None, typer.Argument(help="Directory with assignment.toml (not with --gradescope).")
    ] = None,
    rebuild: Annotated[bool, typer.Option(help="Ignore the engine's layer cache.")] = False,
    gradescope: Annotated[
        Path | None,
        typer.Option(
            "--gradescope",
            metavar="AUTOGRADER.zip",
            help="Build a Gradescope autograder.zip the way Gradescope does.",
        ),
    ] = None,
    tag: Annotated[
        str | None, typer.Option(help="The image's tag (required with --gradescope).")
    ] = None,
    base: Annotated[
        str | None,
        typer.Option(
            metavar="IMAGE",
            help="Base image for --gradescope (default: GRADEFLOW_GRADESCOPE_BASE_IMAGE, "
            "else gradeflow/base-python:bookworm).",
        ),
    ] = None,
) -> None:
    """Build the assignment's grader image from its Dockerfile, or an autograder.zip's."""
    from gradeflow._images import build_assignment_image

    if gradescope is not None:
        if assignment_dir is not None or tag is None:
            _err.print("[red]error:[/] --gradescope takes --tag TAG and no ASSIGNMENT_DIR")
            raise typer.Exit(2)
        _build_gradescope(gradescope, tag, base, rebuild=rebuild)
        return
    if assignment_dir is None:
        _err.print("[red]error:[/] give ASSIGNMENT_DIR, or --gradescope AUTOGRADER.zip --tag TAG")
        raise typer.Exit(2)
    try:
        built = build_assignment_image(docker_client_or_exit(), assignment_dir, rebuild=rebuild)
    except GradeflowError as exc:
        raise exit_for(exc) from None
    _out.print(f"{built.tag}: built ({built.image_id[:19]})")


def _build_gradescope(autograder_zip: Path, tag: str, base: str | None, *, rebuild: bool) -> None:
    from gradeflow import Settings
    from gradeflow._gradescope_image import build_gradescope_image

    base_image = base or Settings().gradescope_base_image
    try:
        built = build_gradescope_image(
            docker_client_or_exit(), autograder_zip, tag=tag, base_image=base_image, rebuild=rebuild
        )
    except GradeflowError as exc:
        raise exit_for(exc) from None
    _out.print(f"{built.tag}: built from {autograder_zip.name} on {base_image} "
               f"({built.image_id[:19]})")  # fmt: skip


def sweep(
    older_than: Annotated[
        float, typer.Option("--older-than", min=0, help="Only resources older than SECS.")
    ] = 3600.0,
) -> None:
    """Remove gradeflow's containers and volumes older than a bound (crashed or killed runs)."""
    from gradeflow.launchers._docker_sweep import sweep as sweep_core

    try:
        report = sweep_core(docker_client_or_exit(), older_than_s=older_than)
    except GradeflowError as exc:
        raise exit_for(exc) from None
    _out.print(f"removed {len(report.containers)} container(s), {len(report.volumes)} volume(s)")
    for name in (*report.containers, *report.volumes):
        _out.print(f"  {name}")
