"""The whole ecs path on moto's server: upload -> RunTask -> agent -> shim -> parsed result.

Real: the pipeline (``gradeflow._pipeline.grade``), the EcsLauncher, boto3 over
HTTP to moto's ECS and S3, the rendered task definition (registered on moto
and reused), presigned SigV4 URLs, the agent's own code, the built shim and
the example graders.

Simulated, and only this: the container runtime. ``TaskRuntime`` watches
moto's cluster for new tasks, then does what ECS would with the registered
revision -- "shim-init" copies the shim into the task's /grading directory,
the "agent" runs ``gradeflow.agent.run_agent`` with the environment from the
task's overrides, and the "grader" runs the revision's ``entryPoint`` argv as
a local process, with /grading and /grader mapped to directories on this
host -- and finally stops the task on moto, as the essential agent's exit
would. A layout's task volumes (coursera's /shared, gradescope's /autograder)
are directories on this host: the agent is handed their host paths, the
grader runs in a private mount namespace with each bind-mounted on its
container path (its graders hard-code those paths), and "grader-files" runs
its rendered script against the example's autograder tree laid out as its
Dockerfile lays it out in the image. moto's own limits shape the rest:
awsvpc RunTask crashes in moto 5.2.5, so the tasks here use the EC2 launch
type with ``bridge`` networking on a registered container instance; moto
ignores ``clientToken`` and never sets a stopCode (the Stubber tests cover
those).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gradeflow import GradeRequest, GradeStatus, Settings
from gradeflow._ecs_images import ImageConfig
from gradeflow._pipeline import grade
from gradeflow.agent import AgentConfig, run_agent
from gradeflow.launchers._ecs import EcsLauncher
from gradeflow.storage import S3Store

from .conftest import CLUSTER, EXAMPLES, ecs_config


class TaskRuntime:
    """Plays ECS's container runtime for tasks that moto scheduled (see module docstring)."""

    def __init__(self, ecs: Any, shim_path: str, work: Path) -> None:
        self._ecs = ecs
        self._shim = shim_path
        self._work = work
        self._seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self.started: list[str] = []
        self.errors: list[str] = []
        self._workers: list[threading.Thread] = []

    def __enter__(self) -> TaskRuntime:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)
        for worker in self._workers:  # the flow may return before the agent has exited
            worker.join(120)

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            arns = self._ecs.list_tasks(cluster=CLUSTER, desiredStatus="RUNNING")["taskArns"]
            for arn in arns:
                if arn not in self._seen:
                    self._seen.add(arn)
                    worker = threading.Thread(target=self._run, args=(arn,), daemon=True)
                    self._workers.append(worker)
                    worker.start()

    def _run(self, arn: str) -> None:
        try:
            self.started.append(arn)
            task = self._ecs.describe_tasks(cluster=CLUSTER, tasks=[arn])["tasks"][0]
            taskdef = self._ecs.describe_task_definition(taskDefinition=task["taskDefinitionArn"])[
                "taskDefinition"
            ]
            defs = {c["name"]: c for c in taskdef["containerDefinitions"]}
            grader = defs["grader"]
            assignment = grader["image"].split("/")[-1].split(":")[0]
            overrides = {
                o["name"]: {e["name"]: e["value"] for e in o.get("environment", [])}
                for o in task["overrides"]["containerOverrides"]
            }
            task_id = arn.rsplit("/", 1)[-1]
            root = self._work / task_id
            root.mkdir(mode=0o755)
            # The layout's task volumes: host directories, by container path.
            volumes: dict[str, Path] = {}
            for point in grader["mountPoints"]:
                if point["sourceVolume"] != "grading":
                    volumes[point["containerPath"]] = (
                        self._work / f"{task_id}-{point['sourceVolume']}"
                    )
                    volumes[point["containerPath"]].mkdir(mode=0o755)
            # shim-init: `gradeflow-shim install /grading/bin/gradeflow-shim`
            subprocess.run([self._shim, "install", str(root / "bin" / "gradeflow-shim")],
                           check=True, capture_output=True)  # fmt: skip
            if "grader-files" in defs:
                self._grader_files(defs["grader-files"], assignment, volumes)
            env = {e["name"]: e["value"] for e in defs["agent"].get("environment", [])}
            env.update(overrides.get("agent", {}))
            env["GRADEFLOW_AGENT_LAYOUT"] = _to_host(env["GRADEFLOW_AGENT_LAYOUT"], root, volumes)
            agent = threading.Thread(
                target=run_agent, args=(AgentConfig({**env, "GRADEFLOW_AGENT_ROOT": str(root)}),)
            )
            agent.start()
            while not (root / "shim").exists():
                threading.Event().wait(0.01)
            grader_dir = EXAMPLES / assignment / "grader"
            argv = [_remap(a, root, grader_dir) for a in grader["entryPoint"]]
            with open(root / "grader-events.log", "wb") as events:
                subprocess.run(_in_mount_namespace(volumes) + argv, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=events, timeout=120,
                               check=False, env={"PATH": SAFE_PATH, **overrides.get("grader", {})},
                               )  # fmt: skip
            agent.join(120)
        except Exception as exc:  # surfaced by the test
            self.errors.append(f"{arn}: {type(exc).__name__}: {exc}")
        finally:
            self._ecs.stop_task(cluster=CLUSTER, task=arn, reason="Essential container exited")

    def _grader_files(
        self, spec: dict[str, Any], assignment: str, volumes: dict[str, Path]
    ) -> None:
        """Run grader-files' rendered script against the image's tree, as its Dockerfile has it."""
        image = self._work / f"image-{uuid.uuid4().hex[:8]}"
        image.mkdir(mode=0o755)
        shutil.copytree(EXAMPLES / assignment / "autograder", image / "source")
        shutil.copy(image / "source" / "run_autograder", image / "run_autograder")
        (point,) = spec["mountPoints"]
        seed = volumes["/" + point["sourceVolume"]]
        script = (
            spec["entryPoint"][2]
            .replace(point["containerPath"], "@SEED@")
            .replace("/autograder", str(image))
            .replace("@SEED@", str(seed))
        )
        done = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True,
                              check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr


SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _to_host(layout: str, root: Path, volumes: dict[str, Path]) -> str:
    """The agent's layout JSON with container paths replaced by this host's directories."""
    spec = json.loads(layout)

    def host(path: str) -> str:
        for mount, where in volumes.items():
            if path == mount or path.startswith(mount + "/"):
                return str(where) + path[len(mount) :]
        return path.replace("/grading", str(root), 1)

    for key in ("submission", "results", "metadata"):
        if spec.get(key):
            spec[key] = host(spec[key])
    spec["directories"] = [[host(p), uid, mode] for p, uid, mode in spec["directories"]]
    return json.dumps(spec)


def _in_mount_namespace(volumes: dict[str, Path]) -> list[str]:
    """A prefix that runs the grader with each volume bind-mounted on its container path."""
    if not volumes:
        return []
    pairs: list[str] = []
    for mount, where in volumes.items():
        with contextlib.suppress(FileExistsError):
            Path(mount).mkdir(mode=0o755)
        pairs += [str(where), mount]
    script = (
        'while [ "$1" != -- ]; do mount --bind "$1" "$2" || exit 125; shift 2; done; '
        'shift; exec "$@"'
    )
    return ["unshare", "--mount", "--propagation", "private", "--",
            "/bin/sh", "-c", script, "mounts", *pairs, "--"]  # fmt: skip


def _remap(arg: str, root: Path, grader_dir: Path) -> str:
    if arg == "/grader":
        return str(grader_dir)
    return (
        arg.replace("/grading", str(root))
        .replace("/grader/", f"{grader_dir}/")
        .replace("=/grader", f"={grader_dir}")
    )


def entrypoint_from_dockerfile(image: str) -> ImageConfig:
    """Stands in for ECR: the example images' ENTRYPOINT and CMD, as their Dockerfiles say."""
    if "coursera-pyfib" in image:
        return ImageConfig(entrypoint=("python3", "/grader/grader.py"), cmd=(), digest="sha256:1")
    if "gradescope-pyprimes" in image:
        return ImageConfig(entrypoint=(), cmd=("/autograder/run_autograder",), digest="sha256:2")
    return ImageConfig(entrypoint=("python3", "/grader/run_tests.py"), cmd=(), digest="sha256:0")


@pytest.fixture
def runtime(moto_ecs: Any, shim_artifact: Any, session_dir: Path) -> Iterator[TaskRuntime]:
    work = session_dir / f"ecs-tasks-{uuid.uuid4().hex[:8]}"
    work.mkdir(mode=0o755)
    with TaskRuntime(moto_ecs, shim_artifact.path, work) as rt:
        yield rt
    shutil.rmtree(work, ignore_errors=True)


EXAMPLE_ASSIGNMENTS = ("py-fizzbuzz", "py-wordfreq", "coursera-pyfib", "gradescope-pyprimes")


def expectations() -> list[tuple[str, str, dict[str, Any]]]:
    cases = []
    for assignment in EXAMPLE_ASSIGNMENTS:
        expected = tomllib.loads((EXAMPLES / assignment / "expected.toml").read_text())
        for name, want in expected["submissions"].items():
            cases.append((assignment, name, want))
    return cases


@pytest.mark.skipif(os.geteuid() != 0, reason="the shim drops to uid 65534 only as root")
@pytest.mark.parametrize(("assignment", "name", "want"), expectations())
def test_example_submissions_grade_as_expected_on_ecs(
    assignment: str,
    name: str,
    want: dict[str, Any],
    moto_ecs: Any,
    s3_store: S3Store,
    runtime: TaskRuntime,
    shim_artifact: Any,
    gradeflow_home: Path,
) -> None:
    launcher = EcsLauncher(
        ecs_config(launch_type="EC2", network_mode="bridge", subnets=(), execution_role_arn=None),
        store=s3_store,
        ecs=moto_ecs,
        image_configs=entrypoint_from_dockerfile,
        poll_initial_s=0.05,
        poll_max_s=0.25,
    )
    settings = Settings(home=gradeflow_home, assignments_root=EXAMPLES)
    submission = f"{Path(name).stem.replace('_', '-')}-{uuid.uuid4().hex[:6]}"
    request = GradeRequest(
        assignment=assignment,
        submission=submission,
        submission_path=str(EXAMPLES / assignment / "submissions" / name),
        backend="ecs",
    )
    result = grade(request, settings=settings, store=s3_store, launcher=launcher,
                   shim=shim_artifact)  # fmt: skip
    assert runtime.errors == []
    assert result.status == GradeStatus(want["status"]), result.reason
    for field in ("score", "max_score"):
        if field in want:
            assert getattr(result, field) == pytest.approx(want[field])
    assert result.backend == "ecs" and result.run_id.startswith("arn:aws:ecs:")
    if result.status is not GradeStatus.INVALID_SUBMISSION:
        assert len(runtime.started) == 1  # one task per attempt


def test_a_retried_launch_in_a_new_process_reattaches_and_reuses_the_revision(
    moto_ecs: Any, s3_store: S3Store, runtime: TaskRuntime, shim_artifact: Any,
    gradeflow_home: Path,
) -> None:  # fmt: skip
    """A second launcher (empty caches, as in a new process) finds the task and revision."""
    import hashlib

    from gradeflow import load_assignment
    from gradeflow.launchers import GradingJob
    from gradeflow.storage import submission_key

    data = (EXAMPLES / "py-fizzbuzz" / "submissions" / "full.py").read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    sub = f"again-{uuid.uuid4().hex[:6]}"
    s3_store.put_bytes(submission_key("py-fizzbuzz", sub, sha, "py"), data)
    job = GradingJob(
        run_key=f"py-fizzbuzz.{sub}.a1", assignment=load_assignment(EXAMPLES / "py-fizzbuzz"),
        submission_id=sub, attempt=1, submission_file=Path("/nonexistent"),
        submission_filename="fizzbuzz.py", submission_sha256=sha, shim=shim_artifact,
    )  # fmt: skip

    def new_launcher() -> EcsLauncher:
        return EcsLauncher(
            ecs_config(launch_type="EC2", network_mode="bridge", subnets=(),
                       execution_role_arn=None),
            store=s3_store, ecs=moto_ecs, image_configs=entrypoint_from_dockerfile,
            poll_initial_s=0.05, poll_max_s=0.25,
        )  # fmt: skip

    first = new_launcher().launch(job)
    second_launcher = new_launcher()
    second = second_launcher.launch(job)
    assert second.run_id == first.run_id and second.reattached
    second_launcher.wait(second, timeout_s=60)
    output = second_launcher.collect(second)
    assert output.envelope is not None and output.envelope.status == "exited"
    assert "results.json" in output.results_files
    assert runtime.started == [first.run_id]
    family = first.details["task_definition"].rsplit("/", 1)[1].split(":")[0]
    revisions = moto_ecs.list_task_definitions(familyPrefix=family)["taskDefinitionArns"]
    assert len(revisions) == 1
