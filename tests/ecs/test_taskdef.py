"""The rendered task definition: its structure, its validity, and revision reuse."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from botocore.stub import Stubber
from botocore.validate import validate_parameters

from gradeflow import ConfigurationError, Limits
from gradeflow._ecs_taskdef import (
    DOCKER_DEFAULT_CAPABILITIES,
    MAX_OVERRIDES_BYTES,
    TaskDefinitionSpec,
    agent_overrides,
    fargate_size,
    render_task_definition,
    task_definitions_equal,
)

PROGRAM = ("python3", "/grader/run_tests.py")
ROLE = "arn:aws:iam::123456789012:role/gradeflow-execution"


def spec(**changes: Any) -> TaskDefinitionSpec:
    base: dict[str, Any] = {
        "assignment_id": "py-fizzbuzz",
        "grader_image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/py-fizzbuzz:1",
        "grader_program": PROGRAM,
        "shim_image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/gradeflow/shim:0123abcd",
        "agent_image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/gradeflow/agent:1",
        "limits": Limits(timeout_s=8, memory_mb=256, nproc=64),
        "execution_role_arn": ROLE,
    }
    base.update(changes)
    return TaskDefinitionSpec(**base)


def containers(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in body["containerDefinitions"]}


def test_three_containers_with_the_dependency_order_ecs_allows() -> None:
    c = containers(render_task_definition(spec()))
    assert set(c) == {"shim-init", "agent", "grader"}
    assert c["shim-init"]["essential"] is False  # SUCCESS may not target an essential one
    assert c["shim-init"]["command"] == ["install", "/grading/bin/gradeflow-shim"]
    assert c["agent"]["essential"] is True
    assert c["grader"]["essential"] is False
    assert {"containerName": "shim-init", "condition": "SUCCESS"} in c["grader"]["dependsOn"]
    assert {"containerName": "agent", "condition": "START"} in c["grader"]["dependsOn"]


def test_grader_entry_point_is_the_shim_then_the_original_program() -> None:
    grader = containers(render_task_definition(spec()))["grader"]
    entry = grader["entryPoint"]
    assert entry[0] == "/grading/bin/gradeflow-shim"
    assert entry[entry.index("--") + 1 :] == list(PROGRAM)
    assert "--expect-digest" not in entry  # per-run; the agent verifies the digest
    assert entry[entry.index("--timeout") + 1] == "8"
    assert entry[entry.index("--memory") + 1] == str(256 << 20)
    assert entry[entry.index("--ready-file") + 1] == "/grading/shim/ready"
    assert grader["user"] == "0"
    assert grader["readonlyRootFilesystem"] is True
    assert grader["mountPoints"] == [
        {"sourceVolume": "grading", "containerPath": "/grading", "readOnly": False}
    ]
    assert grader["memory"] == 256 + 64


def test_fargate_grader_drops_every_default_capability_but_what_the_shim_needs() -> None:
    caps = containers(render_task_definition(spec()))["grader"]["linuxParameters"]["capabilities"]
    assert "add" not in caps  # Fargate accepts no add but SYS_PTRACE
    assert set(caps["drop"]) == set(DOCKER_DEFAULT_CAPABILITIES) - {
        "SETUID",
        "SETGID",
        "SETPCAP",
        "KILL",
    }


def test_ec2_grader_drops_all_and_adds_only_the_shims_capabilities() -> None:
    body = render_task_definition(spec(launch_type="EC2", network_mode="bridge"))
    grader = containers(body)["grader"]
    assert grader["linuxParameters"]["capabilities"] == {
        "drop": ["ALL"],
        "add": ["KILL", "SETGID", "SETPCAP", "SETUID"],
    }
    assert grader["disableNetworking"] is True
    assert "cpu" not in body and body["requiresCompatibilities"] == ["EC2"]


def test_every_container_logs_to_the_configured_group() -> None:
    body = render_task_definition(spec(log_group="/g/x", log_stream_prefix="pfx"))
    for container in body["containerDefinitions"]:
        assert container["logConfiguration"] == {
            "logDriver": "awslogs",
            "options": {
                "awslogs-group": "/g/x",
                "awslogs-region": "us-east-1",
                "awslogs-stream-prefix": "pfx",
            },
        }


def test_rendering_is_valid_for_register_task_definition(ecs: Any) -> None:
    model = ecs.meta.service_model.operation_model("RegisterTaskDefinition")
    for variant in (spec(), spec(launch_type="EC2", network_mode="bridge")):
        validate_parameters(render_task_definition(variant), model.input_shape)


def test_family_names_the_assignment_and_changes_with_the_content() -> None:
    a = render_task_definition(spec())
    assert a["family"].startswith("gradeflow-py-fizzbuzz-")
    assert a["family"] == render_task_definition(spec())["family"]
    assert a["family"] != render_task_definition(spec(limits=Limits(timeout_s=9)))["family"]


def test_fargate_size_is_the_smallest_valid_pair() -> None:
    assert fargate_size(Limits(memory_mb=256, cpus=0.25)) == (256, 512)
    assert fargate_size(Limits(memory_mb=512, cpus=1)) == (1024, 2048)
    assert fargate_size(Limits(memory_mb=3000, cpus=0.5)) == (512, 4096)
    with pytest.raises(ConfigurationError):
        fargate_size(Limits(memory_mb=65536, cpus=64))


def test_fargate_without_an_execution_role_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="EXECUTION_ROLE"):
        render_task_definition(spec(execution_role_arn=None))


def as_aws_returns_it(body: dict[str, Any], revision: int = 3) -> dict[str, Any]:
    """What DescribeTaskDefinition echoes: defaults filled, lists reordered, extras added."""
    echoed = copy.deepcopy(body)
    echoed.pop("tags")
    for c in echoed["containerDefinitions"]:
        c.setdefault("cpu", 0)
        c["portMappings"] = []
        c["environment"] = list(reversed(c.get("environment", [])))
    echoed["containerDefinitions"].reverse()
    echoed.update(
        taskDefinitionArn=f"arn:aws:ecs:us-east-1:123456789012:task-definition/{body['family']}:{revision}",
        revision=revision,
        status="ACTIVE",
        compatibilities=["EC2", "FARGATE"],
        requiresAttributes=[{"name": "com.amazonaws.ecs.capability.logging-driver.awslogs"}],
    )
    return echoed


def test_an_echoed_definition_compares_equal_after_normalising() -> None:
    body = render_task_definition(spec())
    assert task_definitions_equal(body, as_aws_returns_it(body))
    changed = as_aws_returns_it(body)
    changed["containerDefinitions"][0]["image"] = "other:1"
    assert not task_definitions_equal(body, changed)


def test_an_identical_active_revision_is_reused(
    make_launcher: Any, stub: Stubber, job_for: Any
) -> None:
    launcher = make_launcher()
    job = job_for()
    body = render_task_definition(launcher.task_definition_spec(job))
    stub.add_response(
        "describe_task_definition",
        {"taskDefinition": as_aws_returns_it(body)},
        {"taskDefinition": body["family"]},
    )
    arn = launcher.ensure_task_definition(job)
    assert arn.endswith(f"{body['family']}:3")
    assert launcher.ensure_task_definition(job) == arn  # cached: no second call


def test_a_different_revision_makes_a_new_one(
    make_launcher: Any, stub: Stubber, job_for: Any
) -> None:
    launcher = make_launcher()
    job = job_for()
    body = render_task_definition(launcher.task_definition_spec(job))
    stale = as_aws_returns_it(body)
    stale["containerDefinitions"][0]["memory"] = 999
    stub.add_response("describe_task_definition", {"taskDefinition": stale})
    stub.add_response(
        "register_task_definition", {"taskDefinition": as_aws_returns_it(body, revision=4)}, body
    )
    assert launcher.ensure_task_definition(job).endswith(":4")


def test_overrides_over_8_kib_are_refused() -> None:
    small = agent_overrides({"A": "x" * 100})
    assert small["containerOverrides"][0]["name"] == "agent"
    with pytest.raises(ConfigurationError, match="8192"):
        agent_overrides({"A": "x" * MAX_OVERRIDES_BYTES})
    assert len(json.dumps(small)) < MAX_OVERRIDES_BYTES
