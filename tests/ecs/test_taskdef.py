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
from gradeflow._layouts import LAYOUTS, Layout

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


# -- layouts --------------------------------------------------------------------------------


def layout_spec(name: str, *, root: bool = False, **changes: Any) -> TaskDefinitionSpec:
    base = LAYOUTS[name]
    layout = Layout(base.name, base.results_format, base.default_command, run_as_root=root)
    return spec(layout=layout, **changes)


def mounts(container: dict[str, Any]) -> dict[str, str]:
    return {m["containerPath"]: m["sourceVolume"] for m in container["mountPoints"]}


def agent_layout_of(body: dict[str, Any]) -> dict[str, Any]:
    env = {e["name"]: e["value"] for e in containers(body)["agent"]["environment"]}
    return dict(json.loads(env["GRADEFLOW_AGENT_LAYOUT"]))


def test_every_layout_renders_a_valid_definition(ecs: Any) -> None:
    model = ecs.meta.service_model.operation_model("RegisterTaskDefinition")
    for name in ("gradeflow", "coursera", "gradescope"):
        for root in (False, True):
            for variant in ({}, {"launch_type": "EC2", "network_mode": "bridge"}):
                body = render_task_definition(layout_spec(name, root=root, **variant))
                validate_parameters(body, model.input_shape)


def test_the_gradeflow_layout_keeps_the_contract_tree() -> None:
    body = render_task_definition(spec())
    c = containers(body)
    assert set(c) == {"shim-init", "agent", "grader"}
    assert body["volumes"] == [{"name": "grading"}]
    assert mounts(c["grader"]) == {"/grading": "grading"}
    assert c["grader"]["workingDirectory"] == "/grading/work"
    layout = agent_layout_of(body)
    assert layout["submission"] == "/grading/submission"
    assert layout["results"] == "/grading/results" and layout["result_files"] is None
    assert ["/grading/work", 65534, 0o700] in layout["directories"]


def test_coursera_shares_a_shared_volume_between_agent_and_grader() -> None:
    body = render_task_definition(layout_spec("coursera"))
    c = containers(body)
    assert {"name": "shared"} in body["volumes"]
    for name in ("agent", "grader"):
        assert mounts(c[name]) == {"/grading": "grading", "/shared": "shared"}
    assert mounts(c["shim-init"]) == {"/grading": "grading"}
    layout = agent_layout_of(body)
    assert layout["submission"] == "/shared/submission"
    assert layout["results"] == "/shared"
    assert layout["result_files"] == ["feedback.json", "htmlFeedback.html", "txtFeedback.txt"]
    assert ["/shared", 65534, 0o755] in layout["directories"]
    assert layout["metadata"] is None


def test_coursera_per_run_variables_pass_through_the_shim() -> None:
    entry = containers(render_task_definition(layout_spec("coursera")))["grader"]["entryPoint"]
    flags = entry[: entry.index("--")]
    assert "partId=py-fizzbuzz" in flags  # the same on every run: in the revision
    assert "GRADEFLOW_SUBMISSION_DIR=/shared/submission" in flags
    passed = {flags[i + 1] for i, flag in enumerate(flags) if flag == "--pass-env"}
    assert passed == {"filename", "userId"}  # per run: from the overrides
    assert not any(f.startswith(("filename=", "userId=")) for f in flags)
    assert entry[entry.index("--workdir") + 1] == "/grader"
    assert "--keep-root" not in flags


def test_gradescope_copies_the_images_autograder_into_its_volume() -> None:
    ec2 = {"launch_type": "EC2", "network_mode": "bridge"}
    body = render_task_definition(layout_spec("gradescope", **ec2))
    c = containers(body)
    assert set(c) == {"shim-init", "grader-files", "agent", "grader"}
    files = c["grader-files"]
    assert files["image"] == c["grader"]["image"] and files["essential"] is False
    assert files["entryPoint"][:2] == ["/bin/sh", "-c"]
    script = files["entryPoint"][2]
    assert "cp -a /autograder/source/. /gradeflow-volumes/autograder/source/" in script
    assert "/gradeflow-volumes/autograder/run_autograder" in script
    assert "chown -R 65534:65534 /gradeflow-volumes/autograder/source" in script
    assert mounts(files) == {"/gradeflow-volumes/autograder": "autograder"}
    assert files["linuxParameters"]["capabilities"] == {
        "drop": ["ALL"], "add": ["CHOWN", "DAC_OVERRIDE", "FOWNER"],
    }  # fmt: skip
    assert files["disableNetworking"] is True
    grader = c["grader"]
    assert {"containerName": "grader-files", "condition": "SUCCESS"} in grader["dependsOn"]
    assert mounts(grader) == {"/grading": "grading", "/autograder": "autograder"}
    assert grader["readonlyRootFilesystem"] is True
    assert grader["workingDirectory"] == "/autograder"
    entry = grader["entryPoint"]
    assert entry[entry.index("--workdir") + 1] == "/autograder"
    assert entry[entry.index("--") + 1 :] == list(PROGRAM)
    layout = agent_layout_of(body)
    assert layout["metadata"] == "/autograder/submission_metadata.json"
    assert layout["results"] == "/autograder/results" and layout["result_files"] == ["results.json"]
    assert ["/autograder/source", 65534, 0o755] in layout["directories"]


def test_run_as_root_keeps_uid_0_and_gives_the_grader_directories_to_root() -> None:
    body = render_task_definition(layout_spec("gradescope", root=True))
    grader = containers(body)["grader"]
    assert "--keep-root" in grader["entryPoint"][: grader["entryPoint"].index("--")]
    assert (
        grader["linuxParameters"]
        == containers(render_task_definition(spec()))["grader"]["linuxParameters"]
    )  # still only what the shim needs, which it drops before exec
    owners = {path: uid for path, uid, _ in agent_layout_of(body)["directories"]}
    assert owners["/grading/work"] == 0 and owners["/autograder/source"] == 0
    assert "chown -R 0:0" in containers(body)["grader-files"]["entryPoint"][2]


def test_the_layout_is_part_of_the_family_hash() -> None:
    families = {
        render_task_definition(layout_spec(name, root=root))["family"]
        for name in ("gradeflow", "coursera", "gradescope")
        for root in (False, True)
    }
    assert len(families) == 6
    tags = {t["key"]: t["value"] for t in render_task_definition(layout_spec("coursera"))["tags"]}
    assert tags["gradeflow:layout"] == "coursera"


def test_per_run_grader_variables_ride_in_the_grader_overrides() -> None:
    overrides = agent_overrides({"A": "1"}, {"userId": "alice", "filename": "fib.py"})
    by_name = {o["name"]: o for o in overrides["containerOverrides"]}
    assert by_name["grader"]["environment"] == [
        {"name": "filename", "value": "fib.py"},
        {"name": "userId", "value": "alice"},
    ]
    assert [o["name"] for o in agent_overrides({"A": "1"}, {})["containerOverrides"]] == ["agent"]


def test_a_coursera_launch_sets_the_students_variables_on_the_grader(
    make_launcher: Any, job_for: Any
) -> None:
    launcher = make_launcher()
    job = job_for(assignment="coursera-pyfib")
    static, per_run = launcher._grader_environment(job)
    assert static["partId"] == "fib"
    assert per_run == {"filename": "fizzbuzz.py", "userId": ""}
    body = render_task_definition(launcher.task_definition_spec(job))
    entry = containers(body)["grader"]["entryPoint"]
    assert "partId=fib" in entry and "--pass-env" in entry


def test_a_gradescope_launch_hands_the_agent_its_metadata(make_launcher: Any, job_for: Any) -> None:
    launcher = make_launcher()
    job = job_for(assignment="gradescope-pyprimes")
    env, _ = launcher._agent_environment(job, "runs/x/")
    metadata = json.loads(env["GRADEFLOW_AGENT_METADATA"])
    assert metadata["assignment"]["id"] == "gradescope-pyprimes"
    assert metadata["gradeflow"]["attempt"] == job.attempt
    overrides = agent_overrides(env)
    assert len(json.dumps(overrides)) < MAX_OVERRIDES_BYTES
