"""Remove what crashed or killed grading runs left on a Docker engine.

A flow's ``finally`` removes its container and volume, but a flow host that
is SIGKILLed, loses power or loses the engine mid-run cannot. Everything the
docker backend makes carries ``org.gradeflow.managed`` and a creation time,
so this sweep (``gradeflow sweep``, or a schedule) removes only gradeflow's
own resources, and only those older than a bound that no live run can reach
(a run's timeout plus its grace).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import docker
import docker.errors

from .._errors import InfraError
from ._docker import CREATED_LABEL, MANAGED_LABEL

__all__ = ["SweepReport", "sweep"]


@dataclass(frozen=True, slots=True)
class SweepReport:
    """Names of what was removed, and of what could not be (e.g. a volume still in use)."""

    containers: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def sweep(
    client: docker.DockerClient, *, older_than_s: float = 3600.0, now: float | None = None
) -> SweepReport:
    """Remove gradeflow-labelled containers, then volumes, created over ``older_than_s`` ago.

    A resource without a readable creation label counts as old: it is ours and
    nothing can tell how long it has been there.

    Raises:
        InfraError: the engine could not be listed.
    """
    cutoff = (time.time() if now is None else now) - older_than_s
    report = SweepReport()
    selector: dict[str, str | list[str] | bool] = {"label": MANAGED_LABEL}
    try:
        containers = client.containers.list(all=True, filters=selector)
    except docker.errors.DockerException as exc:
        raise InfraError(f"cannot list containers: {exc}") from exc
    for container in containers:
        if not _is_old(container.labels, cutoff):
            continue
        try:
            container.remove(force=True)
            report.containers.append(str(container.name))
        except docker.errors.NotFound:
            pass
        except docker.errors.DockerException as exc:
            report.skipped.append(f"container {container.name}: {exc}")
    try:
        volumes = client.volumes.list(filters=selector)
    except docker.errors.DockerException as exc:
        raise InfraError(f"cannot list volumes: {exc}") from exc
    for volume in volumes:
        if not _is_old(volume.attrs.get("Labels") or {}, cutoff):
            continue
        try:
            volume.remove()
            report.volumes.append(str(volume.name))
        except docker.errors.NotFound:
            pass
        except docker.errors.DockerException as exc:  # in use by a container we kept
            report.skipped.append(f"volume {volume.name}: {exc}")
    return report


def _is_old(labels: dict[str, str], cutoff: float) -> bool:
    try:
        return float(labels.get(CREATED_LABEL, "")) <= cutoff
    except ValueError:
        return True
