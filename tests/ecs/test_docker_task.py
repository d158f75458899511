"""The rendered task definition's three containers, run on the real Docker engine.

Real: the task definition the EcsLauncher registers (on moto), its container
definitions translated one-to-one into ``docker run`` options (image,
entryPoint/command, user, read-only root, capabilities, memory, ulimits,
working directory, environment, and every task volume -- ``grading`` at
/grading and a layout's ``shared`` or ``autograder`` -- at its mount points), the shim image
(``shim-init`` installs the shim into the volume), the agent image (running
``gradeflow.agent`` on the host network, talking to moto's S3 through
presigned URLs), the example grader images with network ``none``, and for
gradescope ``grader-files``, the grader image copying its /autograder files
into the task volume.

Simulated: the ECS scheduler. ``DockerTaskRuntime`` watches moto's cluster
and starts the containers in the order ``dependsOn`` gives (shim-init and
grader-files to SUCCESS, then agent, then grader), and stops the task on moto when the
essential agent exits, as ECS would. The expected results are the same
``expected.toml`` every other backend is held to.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gradeflow import GradeRequest, GradeStatus, Settings
from gradeflow._pipeline import grade
from gradeflow.launchers._ecs import EcsLauncher
from gradeflow.storage import S3Store

from .conftest import CLUSTER, EXAMPLES, ecs_config
from .test_flow_moto import EXAMPLE_ASSIGNMENTS, entrypoint_from_dockerfile, expectations

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def engine() -> Any:
    docker = pytest.importorskip("docker")
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.skip(f"no Docker engine answers: {exc}")
    return client


@pytest.fixture(scope="module")
def images(engine: Any, shim_artifact: Any) -> dict[str, str]:
    """shim, agent and example grader images; built here when missing (never pulled)."""
    from gradeflow._ecs_agent_image import build_agent_image
    from gradeflow._images import BASE_IMAGE, build_assignment_image, image_exists
    from gradeflow._shim_image import package_shim_image

    if not image_exists(engine, BASE_IMAGE):
        pytest.skip(f"{BASE_IMAGE} is missing (build it with `gradeflow image base`)")
    for assignment in EXAMPLE_ASSIGNMENTS:
        if not image_exists(engine, f"gradeflow-examples/{assignment}:latest"):
            try:
                build_assignment_image(engine, EXAMPLES / assignment)
            except Exception as exc:  # a layout example's image that cannot be built here
                pytest.skip(f"gradeflow-examples/{assignment} is missing and did not build: {exc}")
    return {
        "shim": package_shim_image(shim_artifact, engine),
        "agent": build_agent_image(engine)[0],
    }


class DockerTaskRuntime:
    """Runs each new moto task's containers on the engine (see the module docstring)."""

    def __init__(self, ecs: Any, engine: Any) -> None:
        self._ecs, self._engine = ecs, engine
        self._seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self.errors: list[str] = []
        self.exits: dict[str, int] = {}
        self._workers: list[threading.Thread] = []

    def __enter__(self) -> DockerTaskRuntime:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)
        for worker in self._workers:  # the flow may return before the agent has exited
            worker.join(120)

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            for arn in self._ecs.list_tasks(cluster=CLUSTER, desiredStatus="RUNNING")["taskArns"]:
                if arn not in self._seen:
                    self._seen.add(arn)
                    worker = threading.Thread(target=self._run, args=(arn,), daemon=True)
                    self._workers.append(worker)
                    worker.start()

    def _run(self, arn: str) -> None:
        volumes: dict[str, Any] = {}
        started: list[Any] = []
        try:
            task = self._ecs.describe_tasks(cluster=CLUSTER, tasks=[arn])["tasks"][0]
            taskdef = self._ecs.describe_task_definition(taskDefinition=task["taskDefinitionArn"])[
                "taskDefinition"
            ]
            for volume in taskdef["volumes"]:
                name = f"gradeflow-ecs-test-{volume['name']}-{uuid.uuid4().hex[:12]}"
                volumes[volume["name"]] = self._engine.volumes.create(name)
            defs = {c["name"]: c for c in taskdef["containerDefinitions"]}
            env = {
                o["name"]: {e["name"]: e["value"] for e in o.get("environment", [])}
                for o in task["overrides"]["containerOverrides"]
            }
            for name in ("shim-init", "grader-files"):
                if name in defs:
                    init = self._start(defs[name], volumes, {}, "none")
                    started.append(init)
                    assert init.wait(timeout=60)["StatusCode"] == 0, init.logs()
            agent = self._start(defs["agent"], volumes, env.get("agent", {}), "host")
            started.append(agent)
            grader = self._start(defs["grader"], volumes, env.get("grader", {}), "none")
            started.append(grader)
            self.exits["agent"] = agent.wait(timeout=180)["StatusCode"]
        except Exception as exc:
            self.errors.append(f"{arn}: {type(exc).__name__}: {exc}")
        finally:
            for container in started:
                container.remove(force=True)
            for volume in volumes.values():
                volume.remove(force=True)
            self._ecs.stop_task(cluster=CLUSTER, task=arn, reason="Essential container exited")

    def _start(
        self, spec: dict[str, Any], volumes: dict[str, Any], env: dict[str, str], net: str
    ) -> Any:
        """``docker run`` with exactly what the container definition says."""
        from docker.types import Ulimit

        caps = spec.get("linuxParameters", {}).get("capabilities", {})
        return self._engine.containers.run(
            spec["image"],
            entrypoint=spec.get("entryPoint") or None,
            command=spec.get("command") or None,
            user=spec.get("user"),
            working_dir=spec.get("workingDirectory"),
            read_only=spec.get("readonlyRootFilesystem", False),
            cap_drop=caps.get("drop"),
            cap_add=caps.get("add"),
            mem_limit=f"{spec['memory']}m",
            ulimits=[
                Ulimit(name=u["name"], soft=u["softLimit"], hard=u["hardLimit"])
                for u in spec.get("ulimits", [])
            ],
            volumes={
                volumes[m["sourceVolume"]].name: {
                    "bind": m["containerPath"],
                    "mode": "ro" if m.get("readOnly") else "rw",
                }
                for m in spec.get("mountPoints", [])
            },
            environment={
                **{e["name"]: e["value"] for e in spec.get("environment", [])},
                **env,
            },
            network_mode="none" if spec.get("disableNetworking") else net,
            labels={"org.gradeflow.test": "ecs"},
            detach=True,
        )


@pytest.fixture
def docker_runtime(moto_ecs: Any, engine: Any, images: dict[str, str]) -> Iterator[Any]:
    with DockerTaskRuntime(moto_ecs, engine) as rt:
        yield rt


@pytest.mark.parametrize(("assignment", "name", "want"), expectations())
def test_example_submissions_grade_as_expected_in_the_rendered_containers(
    assignment: str,
    name: str,
    want: dict[str, Any],
    moto_ecs: Any,
    s3_store: S3Store,
    docker_runtime: DockerTaskRuntime,
    images: dict[str, str],
    shim_artifact: Any,
    gradeflow_home: Path,
) -> None:
    shim_repo = images["shim"].split(":")[0]
    launcher = EcsLauncher(
        ecs_config(launch_type="EC2", network_mode="bridge", subnets=(), execution_role_arn=None,
                   agent_image=images["agent"], shim_repository=shim_repo),
        store=s3_store, ecs=moto_ecs, image_configs=entrypoint_from_dockerfile,
        poll_initial_s=0.1, poll_max_s=0.5,
    )  # fmt: skip
    settings = Settings(home=gradeflow_home, assignments_root=EXAMPLES)
    request = GradeRequest(
        assignment=assignment,
        submission=f"{Path(name).stem.replace('_', '-')}-{uuid.uuid4().hex[:6]}",
        submission_path=str(EXAMPLES / assignment / "submissions" / name),
        backend="ecs",
    )
    result = grade(request, settings=settings, store=s3_store, launcher=launcher,
                   shim=shim_artifact)  # fmt: skip
    assert docker_runtime.errors == []
    assert result.status == GradeStatus(want["status"]), (result.reason, result.stderr_tail)
    for field in ("score", "max_score"):
        if field in want:
            assert getattr(result, field) == pytest.approx(want[field])
