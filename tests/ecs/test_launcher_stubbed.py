"""EcsLauncher against a real ``ecs`` client with Stubber responses from the service model.

These are the behaviours moto cannot show: it ignores ``clientToken``, never
answers with ``failures[]`` or a ``stopCode``, and never reports MISSING.
"""

from __future__ import annotations

import copy
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from gradeflow import ConfigurationError, InfraError, InvalidSubmission
from gradeflow._ecs_taskdef import render_task_definition
from gradeflow.launchers import GradingJob, LaunchHandle
from gradeflow.launchers._ecs import EcsLauncher, run_prefix, started_by

TASK = "arn:aws:ecs:us-east-1:123456789012:task/graders/0f0e0d0c0b0a09080706050403020100"
OTHER = "arn:aws:ecs:us-east-1:123456789012:task/graders/ffffffffffffffffffffffffffffffff"


def echoed(body: dict[str, Any]) -> dict[str, Any]:
    td = copy.deepcopy(body)
    td.pop("tags")
    td.update(
        taskDefinitionArn=f"arn:aws:ecs:us-east-1:123456789012:task-definition/{body['family']}:1",
        revision=1,
        status="ACTIVE",
    )
    return td


def expect_launch_preamble(
    stub: Stubber, launcher: EcsLauncher, job: GradingJob, *, running: tuple[str, ...] = (),
    stopped: tuple[str, ...] = (), cached: bool = False,
) -> None:  # fmt: skip
    body = render_task_definition(launcher.task_definition_spec(job))
    if not cached:  # the launcher remembers the revision it found
        stub.add_response("describe_task_definition", {"taskDefinition": echoed(body)})
    tag = started_by(job.run_key)
    for status, arns in (("RUNNING", running), ("STOPPED", stopped)):
        stub.add_response(
            "list_tasks",
            {"taskArns": list(arns)},
            {"cluster": "graders", "startedBy": tag, "desiredStatus": status},
        )


def accepted(arn: str = TASK) -> dict[str, Any]:
    return {"tasks": [{"taskArn": arn, "lastStatus": "PROVISIONING"}], "failures": []}


def task(status: str, **extra: Any) -> dict[str, Any]:
    return {"tasks": [{"taskArn": TASK, "lastStatus": status, **extra}], "failures": []}


MISSING = {"tasks": [], "failures": [{"arn": TASK, "reason": "MISSING"}]}


@pytest.fixture
def tokens(ecs: Any) -> list[dict[str, Any]]:
    """Every RunTask request as botocore built it."""
    seen: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        seen.append(copy.deepcopy(params))

    ecs.meta.events.register("before-parameter-build.ecs.RunTask", record)
    return seen


def handle_for(job: GradingJob) -> LaunchHandle:
    return LaunchHandle(
        backend="ecs",
        run_key=job.run_key,
        run_id=TASK,
        details={"cluster": "graders", "task_arn": TASK, "task_definition": "td",
                 "prefix": run_prefix(job), "timeout_s": "8"},
    )  # fmt: skip


# -- RunTask ------------------------------------------------------------------------------


def test_throttled_then_accepted_sends_one_token_and_starts_one_task(
    make_launcher: Any, stub: Stubber, job_for: Any, tokens: list[dict[str, Any]]
) -> None:
    launcher, job = make_launcher(), job_for()
    expect_launch_preamble(stub, launcher, job)
    stub.add_client_error("run_task", "ThrottlingException", "Rate exceeded", 400)
    stub.add_response("run_task", accepted())
    handle = launcher.launch(job)
    assert handle.run_id == TASK and not handle.reattached
    assert len(tokens) == 2
    assert tokens[0]["clientToken"] == tokens[1]["clientToken"]
    assert len(tokens[0]["clientToken"]) <= 64
    assert tokens[0]["startedBy"] == started_by(job.run_key)
    assert len(tokens[0]["startedBy"]) <= 36
    assert {"key": "gradeflow:submission", "value": "s1"} in tokens[0]["tags"]


def test_capacity_failures_are_retried_with_backoff(
    make_launcher: Any, stub: Stubber, job_for: Any, clock: Any, tokens: list[dict[str, Any]]
) -> None:
    launcher, job = make_launcher(), job_for()
    expect_launch_preamble(stub, launcher, job)
    stub.add_response("run_task", {"tasks": [], "failures": [{"reason": "RESOURCE:MEMORY"}]})
    stub.add_response(
        "run_task",
        {"tasks": [], "failures": [{"reason": "Capacity is unavailable at this time."}]},
    )
    stub.add_response("run_task", accepted())
    assert launcher.launch(job).run_id == TASK
    assert len({t["clientToken"] for t in tokens}) == 1
    assert len([s for s in clock.sleeps if s > 0]) >= 2  # backed off between tries


def test_a_non_retryable_failure_is_not_retried(
    make_launcher: Any, stub: Stubber, job_for: Any
) -> None:
    launcher, job = make_launcher(), job_for()
    expect_launch_preamble(stub, launcher, job)
    stub.add_response("run_task", {"tasks": [], "failures": [{"reason": "MISSING"}]})
    with pytest.raises(InfraError, match="MISSING") as info:
        launcher.launch(job)
    assert info.value.retryable is False


def test_a_conflict_reattaches_to_the_task_it_names(
    make_launcher: Any, stub: Stubber, job_for: Any
) -> None:
    launcher, job = make_launcher(), job_for()
    expect_launch_preamble(stub, launcher, job)
    stub.add_client_error(
        "run_task",
        "ConflictException",
        "token reused",
        400,
        modeled_fields={"resourceIds": [OTHER]},
    )
    assert launcher.launch(job).run_id == OTHER


def test_a_running_task_of_the_attempt_is_reattached_without_run_task(
    make_launcher: Any, stub: Stubber, job_for: Any, tokens: list[dict[str, Any]]
) -> None:
    launcher, job = make_launcher(), job_for()
    expect_launch_preamble(stub, launcher, job, running=(TASK,))
    handle = launcher.launch(job)
    assert handle.reattached and handle.run_id == TASK
    assert tokens == []


def test_a_retry_in_a_new_process_sends_the_same_token(
    make_launcher: Any, stub: Stubber, job_for: Any, tokens: list[dict[str, Any]]
) -> None:
    """Presigned URLs differ on every signing; the token must not."""
    job_a = job_for(url="https://b.s3.amazonaws.com/submissions/k?X-Amz-Signature=aaa")
    job_b = job_for(url="https://b.s3.amazonaws.com/submissions/k?X-Amz-Signature=bbb")
    for job in (job_a, job_b):
        launcher = make_launcher()
        expect_launch_preamble(stub, launcher, job)
        stub.add_response("run_task", accepted())
        launcher.launch(job)
    assert tokens[0]["overrides"] != tokens[1]["overrides"]
    assert tokens[0]["clientToken"] == tokens[1]["clientToken"]


def test_a_task_that_died_without_results_gets_a_fresh_token(
    make_launcher: Any, stub: Stubber, job_for: Any, tokens: list[dict[str, Any]]
) -> None:
    job = job_for()
    launcher = make_launcher()
    expect_launch_preamble(stub, launcher, job)
    stub.add_response("run_task", accepted())
    launcher.launch(job)
    expect_launch_preamble(stub, launcher, job, stopped=(TASK,), cached=True)
    stub.add_response("run_task", accepted(OTHER))
    assert launcher.launch(job).run_id == OTHER
    assert tokens[0]["clientToken"] != tokens[1]["clientToken"]


def test_the_agent_gets_presigned_urls_and_no_credentials(
    make_launcher: Any, stub: Stubber, job_for: Any, tokens: list[dict[str, Any]]
) -> None:
    launcher, job = make_launcher(), job_for()
    expect_launch_preamble(stub, launcher, job)
    stub.add_response("run_task", accepted())
    launcher.launch(job)
    (override,) = tokens[0]["overrides"]["containerOverrides"]
    env = {e["name"]: e["value"] for e in override["environment"]}
    assert override["name"] == "agent"
    assert env["GRADEFLOW_AGENT_SHA256"] == job.submission_sha256
    assert not any("AWS_" in name for name in env)
    assert "taskRoleArn" not in tokens[0].get("overrides", {})


# -- waits --------------------------------------------------------------------------------


def test_missing_right_after_run_task_is_eventual_consistency(
    make_launcher: Any, stub: Stubber, job_for: Any, store: Any
) -> None:
    launcher, job = make_launcher(), job_for()
    handle = handle_for(job)
    stub.add_response("describe_tasks", MISSING, {"cluster": "graders", "tasks": [TASK]})
    stub.add_response("describe_tasks", task("PENDING"))
    stub.add_response("describe_tasks", task("RUNNING"))

    calls = {"n": 0}
    real_exists = store.exists

    def exists(key: str) -> bool:
        if key.endswith("ready.json"):
            calls["n"] += 1
            if calls["n"] == 3:
                store.put_bytes(key, b'{"started": true}')
        return bool(real_exists(key))

    store.exists = exists
    launcher.make_ready(handle, job, timeout_s=60)


def test_task_failed_to_start_is_a_retryable_infra_error_with_log_tails(
    make_launcher: Any, stub: Stubber, job_for: Any
) -> None:
    logs = boto3.client("logs", region_name="us-east-1")
    launcher, job = make_launcher(logs=logs), job_for()
    handle = handle_for(job)
    stub.add_response("describe_tasks", task("PENDING"))
    stub.add_response(
        "describe_tasks",
        task("STOPPED", stopCode="TaskFailedToStart",
             stoppedReason="CannotPullContainerError: pull image manifest has been retried 5 times",
             containers=[{"name": "grader", "reason": "CannotPullContainerError"}]),
    )  # fmt: skip
    task_id = TASK.rsplit("/", 1)[-1]
    with Stubber(logs) as logs_stub:
        logs_stub.add_response(
            "get_log_events",
            {"events": [{"timestamp": 1, "message": "installed /grading/bin/gradeflow-shim"}]},
            {"logGroupName": "/gradeflow/ecs", "logStreamName": f"gradeflow/shim-init/{task_id}",
             "limit": 5, "startFromHead": False},
        )  # fmt: skip
        logs_stub.add_client_error("get_log_events", "ResourceNotFoundException", "no stream")
        logs_stub.add_client_error("get_log_events", "ResourceNotFoundException", "no stream")
        with pytest.raises(InfraError, match="TaskFailedToStart") as info:
            launcher.make_ready(handle, job, timeout_s=60)
    assert info.value.retryable is True
    assert "CannotPullContainerError" in str(info.value)
    assert "shim-init log:" in str(info.value) and "installed" in str(info.value)


def test_timeout_stops_the_task(make_launcher: Any, stub: Stubber, job_for: Any) -> None:
    launcher, job = make_launcher(), job_for()
    handle = handle_for(job)
    for _ in range(6):  # polls at t=0, .25, .75, 1.75, 3.75, 5
        stub.add_response("describe_tasks", task("RUNNING"))
    stub.add_response(
        "stop_task",
        {"task": {"taskArn": TASK, "lastStatus": "RUNNING", "desiredStatus": "STOPPED"}},
        {"cluster": "graders", "task": TASK, "reason": ANY},
    )
    with pytest.raises(InfraError, match="within 5 s; stopped"):
        launcher.wait(handle, timeout_s=5)


def test_spot_interruption_is_a_retryable_infra_error(
    make_launcher: Any, stub: Stubber, job_for: Any
) -> None:
    launcher, job = make_launcher(), job_for()
    handle = handle_for(job)
    stub.add_response("describe_tasks", task("RUNNING"))
    stub.add_response(
        "describe_tasks",
        task("STOPPED", stopCode="SpotInterruption",
             stoppedReason="Your Spot Task was interrupted.",
             containers=[{"name": "grader", "exitCode": 137}, {"name": "agent", "exitCode": 143}]),
    )  # fmt: skip
    with pytest.raises(InfraError, match="SpotInterruption") as info:
        launcher.wait(handle, timeout_s=60)
    assert info.value.retryable is True
    assert "grader=137" in str(info.value)


def test_a_manifest_ends_the_wait_before_the_task_stops(
    make_launcher: Any, stub: Stubber, job_for: Any, store: Any
) -> None:
    launcher, job = make_launcher(), job_for()
    handle = handle_for(job)
    store.put_bytes(run_prefix(job) + "manifest.json", b'{"outcome": "completed", "files": {}}')
    stub.add_response("describe_tasks", task("RUNNING"))
    launcher.wait(handle, timeout_s=60)


def test_an_invalid_submission_stops_the_task_and_says_why(
    make_launcher: Any, stub: Stubber, job_for: Any, store: Any
) -> None:
    launcher, job = make_launcher(), job_for()
    handle = handle_for(job)
    store.put_bytes(
        run_prefix(job) + "manifest.json",
        b'{"outcome": "invalid_submission", "reason": "member ../x: escapes", "files": {}}',
    )
    stub.add_response("describe_tasks", task("RUNNING"))
    stub.add_response("stop_task", {"task": {"taskArn": TASK}})
    with pytest.raises(InvalidSubmission, match="escapes"):
        launcher.make_ready(handle, job, timeout_s=60)


def test_stop_on_a_vanished_task_is_quiet(make_launcher: Any, stub: Stubber, job_for: Any) -> None:
    launcher, job = make_launcher(), job_for()
    stub.add_client_error(
        "stop_task", "InvalidParameterException", "The referenced task was not found."
    )
    launcher.stop(handle_for(job))


def test_a_missing_cluster_is_a_configuration_error(
    make_launcher: Any, stub: Stubber, job_for: Any
) -> None:
    launcher, job = make_launcher(), job_for()
    body = render_task_definition(launcher.task_definition_spec(job))
    stub.add_response("describe_task_definition", {"taskDefinition": echoed(body)})
    stub.add_client_error("list_tasks", "ClusterNotFoundException", "Cluster not found.")
    with pytest.raises(ConfigurationError, match="ClusterNotFoundException"):
        launcher.launch(job)


def test_the_ecs_backend_refuses_a_local_store(tmp_path: Any) -> None:
    from gradeflow import Settings
    from gradeflow._runtime import launcher_for

    settings = Settings(home=tmp_path, store="local", ecs_cluster="graders")
    with pytest.raises(ConfigurationError, match="GRADEFLOW_STORE=s3"):
        launcher_for("ecs", settings)
