"""``gradeflow regrade`` and ``gradeflow results``: an assignment's stored submissions.

    gradeflow regrade ASSIGNMENT [--backend B] [--force] [--all]
        regrade in this process (the regrade-assignment flow), with a progress
        bar; resumable: run it again after Ctrl-C and it grades what is left
    gradeflow results ASSIGNMENT [--csv]
        the latest result of every submission, as a table or CSV

Exit codes: 0 done, 2 bad arguments or configuration, 1 infrastructure failed
(or, for regrade, some submissions could not be graded).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from gradeflow import ConfigurationError, GradeflowError, Settings
from gradeflow._models import ID_PATTERN, Backend
from gradeflow._regrade import RegradeSummary, latest_results, results_csv
from gradeflow._runtime import open_store

__all__ = ["register"]

_out = Console()
_err = Console(stderr=True)
_BACKENDS = ("local", "docker", "ecs")


def register(app: typer.Typer) -> None:
    """Add ``regrade`` and ``results`` to the ``gradeflow`` app."""
    app.command("regrade")(regrade)
    app.command("results")(results)


def regrade(
    assignment: Annotated[str, typer.Argument(help="Assignment id.")],
    backend: Annotated[
        str, typer.Option("--backend", "-b", help="Where the graders run: local, docker or ecs.")
    ] = "local",
    force: Annotated[
        bool, typer.Option(help="Grade even what this grader and shim already graded.")
    ] = False,
    all_submissions: Annotated[
        bool, typer.Option("--all", help="Every submission, not only each student's latest.")
    ] = False,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Grades in flight.")] = 4,
    assignment_dir: Annotated[
        str | None, typer.Option(help="Assignment directory (default: configured root / id).")
    ] = None,
) -> None:
    """Regrade an assignment's stored submissions and show what changed."""
    chosen = _check(assignment, backend)
    summary = _run(chosen, assignment, force, all_submissions, concurrency, assignment_dir)
    table = Table(title=f"regrade of {assignment}")
    for column in ("submission", "student", "old", "new", "status", "change"):
        table.add_column(column)
    for change in summary.changes:
        table.add_row(
            change.submission, change.student or "", _num(change.old_score),
            _num(change.new_score), change.status, change.change,
        )  # fmt: skip
    _out.print(table)
    _out.print(
        f"selected {summary.selected}, skipped {summary.skipped}, graded {summary.graded}: "
        f"{summary.up} up, {summary.down} down, {summary.same} same, {summary.new} new, "
        f"{summary.error} error"
    )
    if summary.error:
        raise typer.Exit(1)


def results(
    assignment: Annotated[str, typer.Argument(help="Assignment id.")],
    csv_output: Annotated[bool, typer.Option("--csv", help="CSV on stdout.")] = False,
) -> None:
    """The latest result of every submission of an assignment."""
    _check(assignment, "local")
    try:
        found = latest_results(open_store(Settings()), assignment)
    except GradeflowError as exc:
        _err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    if csv_output:
        sys.stdout.write(results_csv(found))
        return
    table = Table(title=f"{assignment}: latest results ({len(found)})")
    for column in ("submission", "student", "attempt", "status", "score", "graded at"):
        table.add_column(column)
    for r in found:
        score = f"{_num(r.score)}/{_num(r.max_score)}" if r.score is not None else "—"
        table.add_row(r.submission, r.student or "", str(r.attempt), str(r.status), score,
                      r.graded_at.strftime("%Y-%m-%d %H:%M"))  # fmt: skip
    _out.print(table)


def _run(
    backend: Backend,
    assignment: str,
    force: bool,
    all_submissions: bool,
    concurrency: int,
    assignment_dir: str | None,
) -> RegradeSummary:
    from flows._regrade import progress_hook, regrade_assignment

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=_err) as progress:
        bar = progress.add_task(f"regrading {assignment}", total=None)

        def advance(done: int, total: int, submission: str) -> None:
            progress.update(bar, completed=done, total=total,
                            description=f"{assignment} {submission}".rstrip())  # fmt: skip

        token = progress_hook.set(advance)
        try:
            return asyncio.run(
                regrade_assignment(
                    assignment=assignment, backend=backend, all_submissions=all_submissions,
                    force=force, concurrency=concurrency, fan_out=False,
                    assignment_dir=assignment_dir,
                )
            )  # fmt: skip
        except ConfigurationError as exc:
            _err.print(f"[red]configuration error:[/] {exc}")
            raise typer.Exit(2) from None
        except GradeflowError as exc:
            _err.print(f"[red]infrastructure failed:[/] {exc}")
            raise typer.Exit(1) from None
        finally:
            progress_hook.reset(token)


def _check(assignment: str, backend: str) -> Backend:
    import re

    if not re.match(ID_PATTERN, assignment):
        _err.print(f"[red]error:[/] not an assignment id: {assignment!r}")
        raise typer.Exit(2)
    if backend not in _BACKENDS:
        _err.print(f"[red]error:[/] unknown backend {backend!r}; choose one of "
                   f"{', '.join(_BACKENDS)}")  # fmt: skip
        raise typer.Exit(2)
    return backend  # type: ignore[return-value]


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:g}"
