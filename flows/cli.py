"""The ``gradeflow`` command line: grade and regrade submissions, build the shim and images.

Exit codes of ``gradeflow grade``: 0 when a GradeResult was produced (whatever
its status), 2 for bad arguments or configuration, 1 when infrastructure
failed after retries. With ``--json`` stdout carries exactly one JSON
GradeResult; logs go to stderr.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import sys
import tomllib
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from gradeflow import (
    ConfigurationError,
    GradeflowError,
    GradeRequest,
    GradeResult,
    load_assignment,
)
from gradeflow._models import Backend

from . import _cli_ecs, _cli_image, _cli_regrade, _cli_serve

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
shim_app = typer.Typer(no_args_is_help=True, help="The static entrypoint shim.")
app.add_typer(shim_app, name="shim")
_cli_image.register(app)  # gradeflow image base|build, gradeflow sweep
_cli_regrade.register(app)  # gradeflow regrade, gradeflow results
_cli_serve.register(app)  # gradeflow serve
_cli_ecs.register(app)  # gradeflow aws check, gradeflow image agent

out = Console()
err = Console(stderr=True)

BackendOption = Annotated[
    str, typer.Option("--backend", "-b", help="Where the grader runs: local, docker or ecs.")
]
_BACKENDS = ("local", "docker", "ecs")


def main() -> None:
    app()


def _backend(value: str) -> Backend:
    if value not in _BACKENDS:
        err.print(f"[red]error:[/] unknown backend {value!r}; choose one of {', '.join(_BACKENDS)}")
        raise typer.Exit(2)
    return value  # type: ignore[return-value]


def submission_id_for(path: Path) -> str:
    """A stable id from the file name and content: new bytes, new submission."""
    stem = re.sub(r"[^a-z0-9._-]+", "-", path.name.lower()).strip("-._") or "submission"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:10]
    return f"{stem[:100]}-{digest}"


@app.command()
def grade(
    assignment_dir: Annotated[Path, typer.Argument(help="Directory with assignment.toml.")],
    submission: Annotated[
        Path, typer.Argument(help="The submission file (zip, tar, or one file).")
    ],
    backend: BackendOption = "local",
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON GradeResult.")
    ] = False,
    submission_id: Annotated[
        str | None, typer.Option(help="Submission id (default: from name and content).")
    ] = None,
    student: Annotated[str | None, typer.Option(help="Student id.")] = None,
    attempt: Annotated[int, typer.Option(min=1, help="Grading attempt.")] = 1,
    force: Annotated[bool, typer.Option(help="Grade again even if already graded.")] = False,
) -> None:
    """Grade one submission and print its result."""
    try:
        assignment = load_assignment(assignment_dir)
        if not submission.is_file():
            raise ConfigurationError(f"submission file not found: {submission}")
        request = GradeRequest(
            assignment=assignment.id,
            submission=submission_id or submission_id_for(submission),
            student=student,
            submission_path=str(submission.resolve()),
            assignment_dir=str(assignment.root),
            backend=_backend(backend),
            attempt=attempt,
            force=force,
        )
    except (ConfigurationError, ValueError) as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    result = _run_grade(request)
    if json_output:
        sys.stdout.write(result.model_dump_json() + "\n")
    else:
        _print_result(result)


def _run_grade(request: GradeRequest) -> GradeResult:
    from flows._grade import grade_submission

    try:
        return asyncio.run(grade_submission(request=request))
    except ConfigurationError as exc:
        err.print(f"[red]configuration error:[/] {exc}")
        raise typer.Exit(2) from None
    except GradeflowError as exc:
        err.print(f"[red]infrastructure failed:[/] {exc}")
        raise typer.Exit(1) from None


def _print_result(result: GradeResult) -> None:
    score = _summary("", result.score, result.max_score).strip() or "—"
    out.print(f"[bold]{result.assignment}/{result.submission}[/]: {result.status}  score {score}")
    if result.reason:
        out.print(f"reason: {result.reason}")
    for test in result.tests:
        out.print(f"  {test.status or '?':6} {test.name}")
    t = result.timings
    out.print(
        f"timings ms: upload {t.upload_ms}, launch {t.launch_ms}, ready {t.ready_ms}, "
        f"run {t.run_ms}, parse {t.parse_ms}, total {t.total_ms}"
    )


@app.command()
def demo(
    examples: Annotated[Path, typer.Option(help="The examples directory.")] = Path("examples"),
    backend: BackendOption = "local",
) -> None:
    """Grade every example submission and print a table (exit 1 if any differs from expected)."""
    chosen = _backend(backend)
    cases = _example_cases(examples)
    if not cases:
        err.print(f"[red]error:[/] no examples with assignment.toml under {examples}")
        raise typer.Exit(2)
    results = asyncio.run(_grade_all(cases, chosen))
    table = Table(title=f"gradeflow demo ({chosen} backend)")
    for column in ("assignment", "submission", "status", "score", "expected", "run ms", "total ms"):
        table.add_column(column)
    mismatches = 0
    for (assignment_dir, path, expected), result in zip(cases, results, strict=True):
        want = (
            _summary(expected.get("status"), expected.get("score"), expected.get("max_score"))
            if expected
            else "?"
        )
        if isinstance(result, GradeflowError):
            mismatches += 1
            table.add_row(assignment_dir.name, path.name, "[red]error[/]", "—",
                          f"[red]✗ {want}: {result}[/]", "—", "—")  # fmt: skip
            continue
        got = _summary(result.status, result.score, result.max_score)
        ok = not expected or got == want
        mismatches += not ok
        table.add_row(
            assignment_dir.name, path.name, str(result.status),
            got.split(" ", 1)[1] if " " in got else "—",
            "[green]✓[/]" if ok else f"[red]✗ {want}[/]",
            str(result.timings.run_ms), str(result.timings.total_ms),
        )  # fmt: skip
    out.print(table)
    if mismatches:
        err.print(f"[red]{mismatches} result(s) differ from expected.toml[/]")
        raise typer.Exit(1)


def _summary(status: Any, score: Any, max_score: Any) -> str:
    if score is None:
        return str(status)
    of = "?" if max_score is None else f"{float(max_score):g}"
    return f"{status} {float(score):g}/{of}"


def _example_cases(examples: Path) -> list[tuple[Path, Path, dict[str, Any]]]:
    cases: list[tuple[Path, Path, dict[str, Any]]] = []
    for assignment_dir in sorted(p.parent for p in examples.glob("*/assignment.toml")):
        expected_file = assignment_dir / "expected.toml"
        expected = (
            tomllib.loads(expected_file.read_text()).get("submissions", {})
            if expected_file.is_file()
            else {}
        )
        for path in sorted((assignment_dir / "submissions").glob("*")):
            if path.is_file():
                cases.append((assignment_dir, path, expected.get(path.name, {})))
    return cases


async def _grade_all(
    cases: list[tuple[Path, Path, dict[str, Any]]], backend: Backend
) -> list[GradeResult | GradeflowError]:
    from flows._grade import grade_submission

    results: list[GradeResult | GradeflowError] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=err) as progress:
        bar = progress.add_task("grading examples", total=len(cases))
        for assignment_dir, path, _ in cases:
            assignment = load_assignment(assignment_dir)
            progress.update(bar, description=f"{assignment.id}/{path.name}")
            request = GradeRequest(
                assignment=assignment.id,
                submission=submission_id_for(path),
                submission_path=str(path.resolve()),
                assignment_dir=str(assignment.root),
                backend=backend,
            )
            try:
                results.append(await grade_submission(request=request))
            except GradeflowError as exc:  # one broken case must not hide the others
                results.append(exc)
            progress.advance(bar)
    return results


@shim_app.command("build")
def shim_build(
    image: Annotated[
        bool | None,
        typer.Option(
            "--image/--no-image",
            help="Package the FROM scratch image (default: where a Docker engine answers).",
        ),
    ] = None,
) -> None:
    """Build the static shim (reused when its sources are unchanged)."""
    from flows._grade import build_shim_flow

    try:
        artifact = asyncio.run(build_shim_flow(package_image=image))
    except GradeflowError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    out.print(f"shim: {artifact.path}")
    out.print(f"sha256: {artifact.sha256}  size: {artifact.size} bytes  target: {artifact.target}")
    if artifact.image:
        out.print(f"image: {artifact.image}")


if __name__ == "__main__":
    main()
