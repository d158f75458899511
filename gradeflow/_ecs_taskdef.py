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

Revisions are reused: the family is named by the assignment and a hash of the
rendered definition, and an ACTIVE revision is compared after normalising the
defaults AWS fills in (as prefect-aws's ECS worker does) before registering.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Literal

from ._errors import ConfigurationError
from ._models import Limits
from ._sandbox import CONTAINER_ROOT, SandboxPaths, grader_environment, shim_command

__all__ = [
    "AGENT_CONTAINER",
    "DOCKER_DEFAULT_CAPABILITIES",
    "GRADER_CONTAINER",
    "MAX_OVERRIDES_BYTES",
    "SHIM_INIT_CONTAINER",
    "TaskDefinitionSpec",
    "agent_overrides",
    "container_paths",
    "fargate_size",
    "normalise_task_definition",
    "render_task_definition",
    "task_definitions_equal",
]

SHIM_INIT_CONTAINER = "shim-init"
AGENT_CONTAINER = "agent"
GRADER_CONTAINER = "grader"
VOLUME = "grading"
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


def render_task_definition(spec: TaskDefinitionSpec) -> dict[str, Any]:
    """The ``register_task_definition`` arguments for ``spec`` (family included)."""
    paths = container_paths()
    limits = spec.limits
    mount = [{"sourceVolume": VOLUME, "containerPath": str(CONTAINER_ROOT), "readOnly": False}]
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
        environment={**grader_environment(paths), "TMPDIR": str(paths.work)},
    )
    entry_point = _without_digest_check(entry_point)
    fargate = spec.launch_type == "FARGATE"
    if fargate:
        caps = {"drop": sorted(set(DOCKER_DEFAULT_CAPABILITIES) - set(spec.shim_capabilities))}
    else:
        caps = {"drop": ["ALL"], "add": sorted(spec.shim_capabilities)}
    grader: dict[str, Any] = {
        "name": GRADER_CONTAINER,
        "image": spec.grader_image,
        "essential": False,
        "entryPoint": entry_point,
        "command": [],
        "user": "0",  # only so the shim can switch to 65534 and drop the bounding set
        "workingDirectory": str(paths.work),
        "readonlyRootFilesystem": True,
        "memory": limits.memory_mb + _SHIM_OVERHEAD_MB,
        "cpu": math.ceil(limits.cpus * 1024),
        "mountPoints": mount,
        "dependsOn": [
            {"containerName": SHIM_INIT_CONTAINER, "condition": "SUCCESS"},
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
        "user": "0",  # creates work/ and results/ owned by 65534, shim/ owned by root
        "readonlyRootFilesystem": True,
        "memory": _AGENT_MEMORY_MB,
        "mountPoints": mount,
        "dependsOn": [{"containerName": SHIM_INIT_CONTAINER, "condition": "SUCCESS"}],
        "linuxParameters": {"capabilities": {"drop": ["ALL"], "add": _AGENT_CAPS}}
        if not fargate
        else {"capabilities": {"drop": ["MKNOD", "NET_RAW", "SETFCAP", "SYS_CHROOT"]}},
        "logConfiguration": _logs(spec),
    }
    body: dict[str, Any] = {
        "networkMode": spec.network_mode,
        "containerDefinitions": [shim_init, agent, grader],
        "volumes": [{"name": VOLUME}],
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
        *({"key": k, "value": v} for k, v in sorted(spec.extra_tags.items())),
    ]
    return body


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


def agent_overrides(environment: Mapping[str, str]) -> dict[str, Any]:
    """The ``RunTask`` ``overrides`` carrying per-run data to the agent, size-checked.

    Raises:
        ConfigurationError: the overrides exceed ECS's 8 KiB (long bucket
            names or prefixes make presigned URLs long).
    """
    overrides = {
        "containerOverrides": [
            {
                "name": AGENT_CONTAINER,
                "environment": [{"name": k, "value": v} for k, v in sorted(environment.items())],
            }
        ]
    }
    size = len(json.dumps(overrides, separators=(",", ":")).encode())
    if size > MAX_OVERRIDES_BYTES:
        raise ConfigurationError(
            f"RunTask overrides are {size} bytes, over ECS's limit of {MAX_OVERRIDES_BYTES}: "
            "shorten GRADEFLOW_S3_PREFIX or the bucket name"
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
