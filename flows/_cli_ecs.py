"""``gradeflow aws check`` and ``gradeflow image agent``: the ecs backend's housekeeping.

    gradeflow aws check          verify the configured cluster, bucket, log group,
                                 roles, images and subnets exist; each missing one
                                 is named with the setting it came from
    gradeflow image agent        build gradeflow/agent:<hash> (FROM
                                 gradeflow/base-python:bookworm + the agent's
                                 three stdlib-only modules); push it to ECR yourself
                                 and set GRADEFLOW_ECS_AGENT_IMAGE

Exit codes: 0 all present / built, 1 something is missing or failed, 2 bad
configuration (no engine, no base image).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from flows._cli_image import docker_client_or_exit, exit_for, image_app
from gradeflow import GradeflowError, Settings

__all__ = ["aws_app", "register"]

aws_app = typer.Typer(no_args_is_help=True, help="The ecs backend's AWS resources.")
_out = Console()
_err = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Add ``aws`` to the main CLI and ``agent`` to the ``image`` group."""
    app.add_typer(aws_app, name="aws")
    image_app.command("agent")(image_agent)


@aws_app.command("check")
def check() -> None:
    """Check that every AWS resource the ecs backend is configured with exists."""
    from gradeflow._ecs_check import check_aws
    from gradeflow.launchers._ecs import aws_clients

    settings = Settings()
    cache: dict[str, Any] = {}

    def clients(service: str) -> Any:
        if service not in cache:
            cache[service] = aws_clients(settings, service)[0]
        return cache[service]

    try:
        checks = check_aws(settings, clients)
    except GradeflowError as exc:
        _err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    table = Table("resource", "", "detail")
    for item in checks:
        table.add_row(item.name, "[green]ok[/]" if item.ok else "[red]missing[/]", item.detail)
    _out.print(table)
    missing = [c for c in checks if not c.ok]
    if missing:
        _err.print(f"[red]{len(missing)} missing:[/] " + "; ".join(c.name for c in missing))
        raise typer.Exit(1)


def image_agent(
    rebuild: Annotated[bool, typer.Option(help="Build even if the tag exists.")] = False,
) -> None:
    """Build the ecs agent's image (no registry involved; push it to ECR yourself)."""
    from gradeflow._ecs_agent_image import build_agent_image

    client = docker_client_or_exit()
    try:
        tag, built = build_agent_image(client, rebuild=rebuild)
    except GradeflowError as exc:
        raise exit_for(exc) from None
    _out.print(f"{tag}: {'built' if built else 'exists'}")
