"""The ECS task definition of a grading run, rendered from settings and limits.

ECS cannot override a container's ENTRYPOINT or image per ``RunTask``, so
everything that shapes the sandbox lives in a task-definition revision and
only per-run data (presigned URLs, the digest, the file name) travels in the
``RunTask`` overrides of the agent container. One task has three containers
sharing the ephemeral task volume ``grading`` at ``/grading``:

    shim-init   the shim's ``FROM scratch`` image; ``install`` copies the static
                binary to /grading/bin/gradeflow-shim and exits 0.
                essential=false, because ``dependsOn ... SUCCESS`` may not
                target an essential container.
    agent       the co-process (gradeflow.agent, stdlib only): fetches the
                submission by presigned GET, verifies and unpacks it, writes
                the ready marker, waits for the envelope, uploads by presigned
                PUTs, exits. essential=true: its exit ends the task, so a hung
                grader never outlives the agent's own deadline.
    grader      the instructor's image with ``entryPoint`` = the shim, its
                flags from ``Limits``, ``--``, then the image's original
                ENTRYPOINT + CMD (Docker drops CMD once an entrypoint is set).
                essential=false (the agent decides when the task is over);
                ``dependsOn`` shim-init SUCCESS and agent START.

Capabilities of the grader container: the shim starts as uid 0 only so it
can switch to 65534 and empty the bounding set (SETUID, SETGID, SETPCAP) and,
staying root while the grader runs as 65534, signal the grader's process tree
on timeout (KILL) -- nothing else (``shim_capabilities``). On EC2 the
container drops ALL and adds exactly those. Fargate accepts no ``add`` but
SYS_PTRACE, so there the container drops every Docker default *except* those
four; the shim then drops them for the grader itself before exec.

Network: on Fargate (``awsvpc``) every container of a task shares one network
namespace, and the shim's ``unshare(CLONE_NEWNET)`` needs CAP_SYS_ADMIN, which
Fargate never grants (the shim logs a warning and goes on). So on Fargate the
grader's network isolation comes from the task's security group -- allow
egress only to the S3 endpoint the agent needs (a VPC gateway endpoint) --
not from the shim. On EC2 with ``bridge`` networking the grader container
gets ``disableNetworking`` and the agent keeps the network.

Layouts (``gradeflow._layouts``). The agent gets the layout's tree as JSON in
its task-definition environment (``GRADEFLOW_AGENT_LAYOUT``: submission and
results directories, the result files it may carry out, the metadata path,
the directories to create with owner and mode), so only the per-run metadata
content (gradescope's ``submission_metadata.json``) rides in the 8 KiB
overrides. Each fixed tree outside ``/grading`` (coursera's ``/shared``,
gradescope's ``/autograder``) is its own task volume, mounted at that path
in the agent and the grader. A volume at ``/autograder`` hides the image's
``/autograder/source`` and ``run_autograder``, so for gradescope a fourth,
non-essential container ``grader-files`` -- the grader image itself, with
the volume mounted elsewhere -- copies them in (chowned to the grader) and
the grader ``dependsOn`` it with SUCCESS; the grader's root filesystem stays
read-only. The grader's variables that change per submission (coursera's
``filename`` and ``userId``) cannot live in a shared revision: they are set
on the grader container by ``RunTask`` overrides and passed through by the
shim's ``--pass-env``. ``run_as_root`` adds ``--keep-root`` and gives the
grader's directories to uid 0.

Revisions are reused: the family is named by the assignment and a hash of the
rendered definition (the layout included), and an ACTIVE revision is compared after normalising the
defaults AWS fills in (as prefect-aws's ECS worker does) before registering.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Literal

from ._errors import ConfigurationError
from ._layouts import LAYOUTS, Layout, LayoutPaths, SubmissionInfo
from ._models import Limits
from ._sandbox import CONTAINER_ROOT, SandboxPaths, shim_command

__all__ = [
    "AGENT_CONTAINER",
    "DOCKER_DEFAULT_CAPABILITIES",
    "GRADER_CONTAINER",
    "GRADER_FILES_CONTAINER",
    "MAX_OVERRIDES_BYTES",
    "SHIM_INIT_CONTAINER",
    "TaskDefinitionSpec",
    "agent_overrides",
    "container_paths",
    "fargate_size",
    "layout_volume",
    "normalise_task_definition",
    "render_task_definition",
    "split_grader_environment",
    "task_definitions_equal",
]

SHIM_INIT_CONTAINER = "shim-init"
AGENT_CONTAINER = "agent"
GRADER_CONTAINER = "grader"
GRADER_FILES_CONTAINER = "grader-files"
VOLUME = "grading"
SEED_ROOT = PurePosixPath("/gradeflow-volumes")
"""Where ``grader-files`` mounts the layout's volumes (the image's own tree stays visible)."""
MAX_OVERRIDES_BYTES = 8192
"""RunTask rejects ``overrides`` whose JSON exceeds 8 KiB."""

DOCKER_DEFAULT_CAPABILITIES = (
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
    "NET_BIND_SERVICE", "NET_RAW", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
)  # fmt: skip
"""What Docker (and so Fargate) grants a root container unless told otherwise."""

_AGENT_MEMORY_MB = 128
_AGENT_CAPS = ["CHOWN", "DAC_OVERRIDE", "FOWNER"]
"""The agent (uid 0) hands work/ and results/ to 65534 and later reads what the grader left."""
_GRADER_FILES_CAPS = ["CHOWN", "DAC_OVERRIDE", "FOWNER"]
"""``grader-files`` (uid 0) copies the image's grader files, whatever their modes, and chowns."""
_SHIM_OVERHEAD_MB = 64
"""The shim's own pages beside the grader's RLIMIT_AS, inside the container limit."""
_FARGATE_MEMORY = {
    256: (512, 1024, 2048),
    512: tuple(range(1024, 4096 + 1, 1024)),
    1024: tuple(range(2048, 8192 + 1, 1024)),
    2048: tuple(range(4096, 16384 + 1, 1024)),
    4096: tuple(range(8192, 30720 + 1, 1024)),
    8192: tuple(range(16384, 61440 + 1, 4096)),
    16384: tuple(range(32768, 122880 + 1, 8192)),
}
"""Fargate's valid task cpu units and, for each, the memory sizes it accepts (MiB)."""
_POST_REGISTRATION = (
    "compatibilities", "taskDefinitionArn", "revision", "status", "requiresAttributes",
    "registeredAt", "registeredBy", "deregisteredAt",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class TaskDefinitionSpec:
    """Everything a revision depends on; equal specs render equal definitions.

    Args:
        assignment_id: names the family.
        grader_image: the instructor's image, as ECS pulls it.
        grader_program: the image's original ENTRYPOINT + CMD (or assignment.toml's).
        shim_image: the shim's scratch image (tagged by the binary's digest).
        agent_image: the agent's image.
        limits: the assignment's limits.
        launch_type: FARGATE or EC2; decides capabilities and networking.
        network_mode: awsvpc (Fargate's only mode), bridge or none on EC2.
        log_group, log_stream_prefix, region: awslogs for every container.
        execution_role_arn: lets ECS pull images and write logs (required on Fargate).
        task_role_arn: normally None: nothing in the task needs AWS credentials.
        shim_capabilities: what the shim needs to drop privileges itself.
        ready_timeout_s: how long the shim waits for the agent's ready marker.
        layout: the assignment's layout (with its ``run_as_root`` opt-in):
            decides the task volumes, the agent's tree, the grader's cwd and
            environment, and ``--keep-root``.
        grader_environment: the grader's variables that are the same on every
            run (see `split_grader_environment`); None: the layout's, with
            the assignment id standing for a part id.
        grader_pass_env: the grader's per-run variables (Coursera's
            ``filename``, ``userId``): the shim copies them (``--pass-env``)
            from the grader container's environment, which ``RunTask``
            overrides set per run; None: the layout's.
    """

    assignment_id: str
    grader_image: str
    grader_program: tuple[str, ...]
    shim_image: str
    agent_image: str
    limits: Limits
    launch_type: Literal["FARGATE", "EC2"] = "FARGATE"
    network_mode: Literal["awsvpc", "bridge", "host", "none"] = "awsvpc"
    log_group: str = "/gradeflow/ecs"
    log_stream_prefix: str = "gradeflow"
    region: str = "us-east-1"
    execution_role_arn: str | None = None
    task_role_arn: str | None = None
    shim_capabilities: tuple[str, ...] = ("SETUID", "SETGID", "SETPCAP", "KILL")
    ready_timeout_s: float = 60.0
    extra_tags: Mapping[str, str] = field(default_factory=dict)
    layout: Layout = LAYOUTS["gradeflow"]
    grader_environment: Mapping[str, str] | None = None
    grader_pass_env: tuple[str, ...] | None = None


def container_paths() -> SandboxPaths:
    """The contract's paths inside the task (the grader directory is baked into the image)."""
    return SandboxPaths(root=CONTAINER_ROOT, grader_dir=PurePosixPath("/grader"))


def fargate_size(limits: Limits) -> tuple[int, int]:
    """The smallest valid Fargate (cpu units, MiB) that holds the grader and the agent."""
    need_cpu = math.ceil(limits.cpus * 1024)
    need_mem = limits.memory_mb + _SHIM_OVERHEAD_MB + _AGENT_MEMORY_MB
    for cpu, sizes in _FARGATE_MEMORY.items():
        if cpu < need_cpu:
            continue
        for mem in sizes:
            if mem >= need_mem:
                return cpu, mem
    raise ConfigurationError(
        f"no Fargate task size holds {limits.cpus:g} vCPU and {need_mem} MiB "
        "(grader memory + shim + agent); lower [limits] cpus or memory_mb"
    )


def layout_volume(mount: PurePosixPath) -> str:
    """The task volume holding a layout's fixed directory (``/shared`` -> ``shared``)."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", mount.name)


def split_grader_environment(
    layout: Layout, paths: LayoutPaths, info: SubmissionInfo
) -> tuple[dict[str, str], dict[str, str]]:
    """The grader's environment as (the same on every run, this run's own).

    A revision is shared by every submission of an assignment, so only the
    first part can be baked into its ``entryPoint``; the second travels in
    the grader container's ``RunTask`` overrides and reaches the grader
    through the shim's ``--pass-env``. A variable is per-run when its value
    changes with the submission (id, student, attempt, file name).
    """
    env = layout.environment(paths, info)
    probe = layout.environment(
        paths,
        dataclasses.replace(
            info,
            submission_id=info.submission_id + "-probe",
            student=(info.student or "") + "-probe",
            attempt=info.attempt + 1,
            filename=info.filename + "-probe",
        ),
    )
    per_run = {k for k in env.keys() | probe.keys() if env.get(k) != probe.get(k)}
    static = {k: v for k, v in env.items() if k not in per_run}
    return static, {k: env[k] for k in sorted(per_run) if k in env}


def render_task_definition(spec: TaskDefinitionSpec) -> dict[str, Any]:
    """The ``register_task_definition`` arguments for ``spec`` (family included)."""
    layout = spec.layout
    layout_paths = layout.paths(container_paths())
    paths = layout_paths.sandbox
    limits = spec.limits
    grading = {"sourceVolume": VOLUME, "containerPath": str(CONTAINER_ROOT), "readOnly": False}
    mount = [grading]
    # The layout's fixed trees (/shared, /autograder) outside /grading: task volumes
    # the agent fills and the grader reads and writes.
    layout_mounts = [
        {"sourceVolume": layout_volume(m), "containerPath": str(m), "readOnly": False}
        for m in layout_paths.mounts
    ]
    if spec.grader_environment is None:
        # No job at hand (tests, previews): the assignment's id stands for its part id.
        placeholder = SubmissionInfo(spec.assignment_id, "", "-", None, 1, "-", spec.assignment_id)
        environment, per_run = split_grader_environment(layout, layout_paths, placeholder)
        pass_env = tuple(per_run) if spec.grader_pass_env is None else spec.grader_pass_env
    else:
        environment = dict(spec.grader_environment)
        pass_env = spec.grader_pass_env or ()
    entry_point = shim_command(
        str(paths.shim_binary),
        paths,
        limits,
        list(spec.grader_program),
        # The digest varies per run, so the ready marker carries it and the shim
        # is told to accept whatever the agent verified: the agent checks the
        # sha256 before it writes the marker (see gradeflow.agent).
        digest="-",
        ready_timeout_s=spec.ready_timeout_s,
        environment={**environment, "TMPDIR": str(paths.work)},
        workdir=layout_paths.workdir,
        keep_root=layout.run_as_root,
    )
    entry_point = _with_pass_env(_without_digest_check(entry_point), pass_env)
    fargate = spec.launch_type == "FARGATE"
    if fargate:
        caps = {"drop": sorted(set(DOCKER_DEFAULT_CAPABILITIES) - set(spec.shim_capabilities))}
    else:
        caps = {"drop": ["ALL"], "add": sorted(spec.shim_capabilities)}
    seeded = _seeded_mount(layout_paths)
    grader: dict[str, Any] = {
        "name": GRADER_CONTAINER,
        "image": spec.grader_image,
        "essential": False,
        "entryPoint": entry_point,
        "command": [],
        "user": "0",  # only so the shim can switch to 65534 and drop the bounding set
        "workingDirectory": str(layout_paths.workdir),
        "readonlyRootFilesystem": True,
        "memory": limits.memory_mb + _SHIM_OVERHEAD_MB,
        "cpu": math.ceil(limits.cpus * 1024),
        "mountPoints": mount + layout_mounts,
        "dependsOn": [
            {"containerName": SHIM_INIT_CONTAINER, "condition": "SUCCESS"},
            *(
                [{"containerName": GRADER_FILES_CONTAINER, "condition": "SUCCESS"}]
                if seeded is not None
                else []
            ),
            {"containerName": AGENT_CONTAINER, "condition": "START"},
        ],
        "linuxParameters": {"capabilities": caps},
        "ulimits": [
            {"name": "nofile", "softLimit": limits.nofile, "hardLimit": limits.nofile},
            {"name": "core", "softLimit": 0, "hardLimit": 0},
        ],
        # The shim's own budget: grader timeout + kill grace, then ECS's SIGKILL.
        "stopTimeout": int(min(120, max(2, math.ceil(limits.kill_grace_s) + 2))),
        "logConfiguration": _logs(spec),
    }
    if not fargate and spec.network_mode == "bridge":
        grader["disableNetworking"] = True
    shim_init: dict[str, Any] = {
        "name": SHIM_INIT_CONTAINER,
        "image": spec.shim_image,
        "essential": False,
        "command": ["install", str(paths.shim_binary)],
        "user": "0",
        "readonlyRootFilesystem": True,
        "memory": 32,
        "mountPoints": mount,
        "linuxParameters": {"capabilities": {"drop": ["ALL"]}},
        "logConfiguration": _logs(spec),
    }
    agent: dict[str, Any] = {
        "name": AGENT_CONTAINER,
        "image": spec.agent_image,
        "essential": True,
        "command": ["python3", "-I", "-m", "gradeflow.agent"],
        "user": "0",  # creates the layout's directories with their owners (65534 or root)
        "readonlyRootFilesystem": True,
        "memory": _AGENT_MEMORY_MB,
        "mountPoints": mount + layout_mounts,
        "environment": [
            {"name": "GRADEFLOW_AGENT_LAYOUT", "value": agent_layout(layout_paths)},
        ],
        "dependsOn": [{"containerName": SHIM_INIT_CONTAINER, "condition": "SUCCESS"}],
        "linuxParameters": {"capabilities": {"drop": ["ALL"], "add": _AGENT_CAPS}}
        if not fargate
        else {"capabilities": {"drop": ["MKNOD", "NET_RAW", "SETFCAP", "SYS_CHROOT"]}},
        "logConfiguration": _logs(spec),
    }
    containers = [shim_init, agent, grader]
    if seeded is not None:
        containers.insert(1, _grader_files(spec, layout_paths, seeded, fargate))
    body: dict[str, Any] = {
        "networkMode": spec.network_mode,
        "containerDefinitions": containers,
        "volumes": [{"name": VOLUME}, *({"name": m["sourceVolume"]} for m in layout_mounts)],
        "requiresCompatibilities": [spec.launch_type],
    }
    if fargate:
        cpu, memory = fargate_size(limits)
        body["cpu"] = str(cpu)
        body["memory"] = str(memory)
        body["runtimePlatform"] = {"cpuArchitecture": "X86_64", "operatingSystemFamily": "LINUX"}
    if spec.execution_role_arn:
        body["executionRoleArn"] = spec.execution_role_arn
    elif fargate:
        raise ConfigurationError(
            "Fargate needs an execution role to pull images and write logs: "
            "set GRADEFLOW_ECS_EXECUTION_ROLE_ARN"
        )
    if spec.task_role_arn:
        body["taskRoleArn"] = spec.task_role_arn
    digest = content_hash(body)
    body["family"] = family_name(spec.assignment_id, digest)
    body["tags"] = [
        {"key": "gradeflow:assignment", "value": spec.assignment_id},
        {"key": "gradeflow:content", "value": digest[:32]},
        {"key": "gradeflow:layout", "value": layout.name + ("+root" if layout.run_as_root else "")},
        *({"key": k, "value": v} for k, v in sorted(spec.extra_tags.items())),
    ]
    return body


def agent_layout(paths: LayoutPaths) -> str:
    """``GRADEFLOW_AGENT_LAYOUT``: the layout's tree as the agent creates and reads it."""
    return json.dumps(
        {
            "submission": str(paths.submission),
            "results": str(paths.results),
            "result_files": None if paths.result_files is None else list(paths.result_files),
            "metadata": None if paths.metadata is None else str(paths.metadata),
            "directories": [[str(d.path), paths.uid_of(d), d.mode] for d in paths.directories],
        },
        separators=(",", ":"),
    )


def _seeded_mount(paths: LayoutPaths) -> PurePosixPath | None:
    """The layout volume that hides grader files the image has (gradescope's /autograder).

    A volume mounted at ``/autograder`` hides the image's ``/autograder/source``
    and ``run_autograder`` from the grader, so ``grader-files`` copies them in.
    """
    for mount in paths.mounts:
        if mount in paths.grader_dir.parents:
            return mount
    return None


def _grader_files(
    spec: TaskDefinitionSpec, paths: LayoutPaths, mount: PurePosixPath, fargate: bool
) -> dict[str, Any]:
    """``grader-files``: the grader image, copying its own grader files into the layout volume.

    It mounts the volume away from ``mount`` (at ``SEED_ROOT/<volume>``), so
    it still sees the image's tree there, and copies the grader directory
    (and, for gradescope, ``run_autograder``, from where the image has it or
    else from the grader directory) into the volume, handing it to the
    grader when the layout says the grader writes there. Needs ``/bin/sh``
    and ``cp`` in the image (every Gradescope base image has them).
    """
    volume = layout_volume(mount)
    seed = SEED_ROOT / volume

    def seeded(path: PurePosixPath) -> str:
        return shlex.quote(str(seed / path.relative_to(mount)))

    source, dest = shlex.quote(str(paths.grader_dir)), seeded(paths.grader_dir)
    lines = ["set -eu", f"mkdir -p {dest}", f"cp -a {source}/. {dest}/"]
    if paths.program_copy is not None:
        program, target = paths.program_copy
        image_copy = shlex.quote(str(target))
        lines.append(
            f"if [ -f {image_copy} ]; then cp {image_copy} {seeded(target)}; "
            f"else cp {shlex.quote(str(program))} {seeded(target)}; fi"
        )
        lines.append(f"chmod 0755 {seeded(target)}")
    if paths.grader_writable:
        lines.append(f"chown -R {paths.grader_uid}:{paths.grader_uid} {dest}")
    else:
        lines.append(f"chown -R 0:0 {dest} && chmod -R a-w {dest}")
    container: dict[str, Any] = {
        "name": GRADER_FILES_CONTAINER,
        "image": spec.grader_image,
        "essential": False,
        "entryPoint": ["/bin/sh", "-c", "\n".join(lines)],
        "command": [],
        "user": "0",
        "readonlyRootFilesystem": True,
        "memory": 64,
        "mountPoints": [{"sourceVolume": volume, "containerPath": str(seed), "readOnly": False}],
        "linuxParameters": {
            "capabilities": {
                "drop": sorted(set(DOCKER_DEFAULT_CAPABILITIES) - set(_GRADER_FILES_CAPS))
            }
            if fargate
            else {"drop": ["ALL"], "add": _GRADER_FILES_CAPS}
        },
        "logConfiguration": _logs(spec),
    }
    if not fargate and spec.network_mode == "bridge":
        container["disableNetworking"] = True
    return container


def content_hash(body: Mapping[str, Any]) -> str:
    """sha256 of the normalised definition: the same sandbox, the same hash."""
    canonical = json.dumps(normalise_task_definition(body), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def family_name(assignment_id: str, digest: str) -> str:
    """``gradeflow-{assignment}-{hash}``, within ECS's ``[A-Za-z0-9_-]{1,255}``."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "-", assignment_id)[:180]
    return f"gradeflow-{safe}-{digest[:16]}"


def normalise_task_definition(taskdef: Mapping[str, Any]) -> dict[str, Any]:
    """A comparable form: AWS's defaults filled in, empties and registration fields dropped.

    Mirrors prefect-aws's ``_task_definitions_equal``: ``essential`` defaults
    to true, ``networkMode`` to bridge, environment lists are unordered, and
    AWS echoes back fields (arn, revision, status...) that are not part of
    what we asked for. Tags are not part of a revision's content.
    """
    td = copy.deepcopy(dict(taskdef))
    for name in (*_POST_REGISTRATION, "family", "tags"):
        td.pop(name, None)
    td.setdefault("networkMode", "bridge")
    for key in ("cpu", "memory"):
        if key in td and td[key] is not None:
            td[key] = str(td[key])
    for container in td.get("containerDefinitions", []):
        container.setdefault("essential", True)
        container.setdefault("cpu", 0)  # AWS echoes an unset container cpu as 0
        for key in ("environment", "secrets"):
            if key in container:
                container[key] = sorted(container[key], key=lambda x: x.get("name", ""))
        for dep in container.get("mountPoints", []):
            dep.setdefault("readOnly", False)
        container.setdefault("portMappings", [])
        container.setdefault("volumesFrom", [])
    td["containerDefinitions"] = sorted(
        td.get("containerDefinitions", []), key=lambda c: c.get("name", "")
    )
    _drop_empty(td)
    return td


def task_definitions_equal(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether ``b`` (e.g. from DescribeTaskDefinition) runs the same sandbox as ``a``."""
    return normalise_task_definition(a) == normalise_task_definition(b)


def agent_overrides(
    environment: Mapping[str, str], grader_environment: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The ``RunTask`` ``overrides`` carrying per-run data to the agent, size-checked.

    ``grader_environment``: the grader's per-run variables (see
    `split_grader_environment`), set on the grader container for the shim's
    ``--pass-env``.

    Raises:
        ConfigurationError: the overrides exceed ECS's 8 KiB (long bucket
            names or prefixes make presigned URLs long).
    """
    containers: list[dict[str, Any]] = [
        {
            "name": AGENT_CONTAINER,
            "environment": [{"name": k, "value": v} for k, v in sorted(environment.items())],
        }
    ]
    if grader_environment:
        containers.append(
            {
                "name": GRADER_CONTAINER,
                "environment": [
                    {"name": k, "value": v} for k, v in sorted(grader_environment.items())
                ],
            }
        )
    overrides = {"containerOverrides": containers}
    size = len(json.dumps(overrides, separators=(",", ":")).encode())
    if size > MAX_OVERRIDES_BYTES:
        raise ConfigurationError(
            f"RunTask overrides are {size} bytes, over ECS's limit of {MAX_OVERRIDES_BYTES}: "
            "shorten GRADEFLOW_S3_PREFIX or the bucket name (a layout's metadata counts too)"
        )
    return overrides


def _logs(spec: TaskDefinitionSpec) -> dict[str, Any]:
    return {
        "logDriver": "awslogs",
        "options": {
            "awslogs-group": spec.log_group,
            "awslogs-region": spec.region,
            "awslogs-stream-prefix": spec.log_stream_prefix,
        },
    }


def _without_digest_check(argv: Sequence[str]) -> list[str]:
    """Drop ``--expect-digest`` from a shim argv rendered for a reusable revision.

    The submission's digest differs on every run and the entry point cannot
    be overridden per run; the agent verifies the sha256 before it writes the
    marker, which is the check ``--expect-digest`` makes locally.
    """
    out: list[str] = []
    skip = False
    split = list(argv).index("--")
    for i, part in enumerate(argv):
        if skip:
            skip = False
            continue
        if i < split and part == "--expect-digest":
            skip = True
            continue
        out.append(part)
    return out


def _with_pass_env(argv: Sequence[str], names: Sequence[str]) -> list[str]:
    """Add ``--pass-env NAME`` for each per-run variable, before the ``--``."""
    out = list(argv)
    split = out.index("--")
    extra = [part for name in names for part in ("--pass-env", name)]
    return out[:split] + extra + out[split:]


def _drop_empty(value: dict[str, Any]) -> None:
    for key, item in tuple(value.items()):
        if isinstance(item, dict):
            _drop_empty(item)
        elif isinstance(item, list):
            for element in item:
                if isinstance(element, dict):
                    _drop_empty(element)
        if not item and item is not False and item != 0:
            value.pop(key)
