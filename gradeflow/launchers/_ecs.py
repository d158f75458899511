"""The ``ecs`` backend: grader tasks on AWS ECS (Fargate or EC2), results through S3.

One grading attempt is one ECS task of three containers (see
:mod:`gradeflow._ecs_taskdef`). The flow never talks to the task: it hands
the agent presigned URLs in ``RunTask``'s overrides and reads what the agent
uploaded from the S3 store, under ``runs/{assignment}/{submission}/attempt-NNNN/``
(give that prefix a lifecycle rule; ``cleanup`` deletes nothing).

Idempotency. ``startedBy`` (at most 36 characters) is derived from the
attempt's ``run_key``, and ``clientToken`` from the run_key, the revision and
the *stable* parts of the overrides (keys, digest, file name -- not the
signatures of the presigned URLs, which change on every signing) plus a
generation: the number of earlier tasks of this attempt that stopped without
leaving a manifest. So a retry of the same step -- in this process or a new
one -- either reattaches (``ListTasks startedBy``, or the task ARNs a
``ConflictException`` names) or resends the very same token, and ECS never
starts a second task; only once a task is known to have died does a retry
get a fresh token. botocore's own default token is a new uuid per call,
which would make every retry a new task.

Throttling and capacity. ``RunTask`` is paced by a per-launcher token bucket
(``GRADEFLOW_ECS_RUN_TASK_RATE``; Fargate allows 20/s per account) and
retried with jittered backoff on ``ThrottlingException``/``ServerException``
and on HTTP-200 answers that carry ``failures[]`` (RESOURCE:CPU/MEMORY,
AGENT, capacity). Waits poll ``DescribeTasks`` quickly at first, then back
off; a task reported MISSING right after ``RunTask`` is eventual consistency,
not an error, for ``_MISSING_GRACE_S``.

Statuses. A task that stopped before the agent uploaded its manifest is an
``InfraError``: ``TaskFailedToStart``, Spot interruption, termination notices
and infrastructure health are retryable; a grader's own exit reaches the
result through the envelope the agent uploaded. Each container's last
CloudWatch log lines are attached to failed runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import random
import tarfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from botocore.exceptions import BotoCoreError, ClientError

from .._assignment import Assignment
from .._ecs_images import ImageConfigSource, grader_program
from .._ecs_taskdef import (
    AGENT_CONTAINER,
    GRADER_CONTAINER,
    SHIM_INIT_CONTAINER,
    TaskDefinitionSpec,
    agent_overrides,
    container_paths,
    render_task_definition,
    split_grader_environment,
    task_definitions_equal,
)
from .._errors import ConfigurationError, GradeflowError, InfraError, InvalidSubmission
from .._layouts import SubmissionInfo, layout_for
from .._models import Backend, GraderIdentity, ShimEnvelope
from .._settings import Settings
from .._shim_image import SHIM_IMAGE_REPOSITORY
from ..storage import ObjectStore, submissions_prefix
from ._base import (
    MAX_RESULT_FILE_BYTES,
    MAX_RESULT_FILES,
    GradingJob,
    Launcher,
    LaunchHandle,
    RunOutput,
)

__all__ = [
    "EcsConfig",
    "EcsLauncher",
    "aws_clients",
    "launcher_from_settings",
    "run_prefix",
    "started_by",
]

_RETRYABLE_CODES = {
    "ThrottlingException", "Throttling", "TooManyRequestsException",
    "ServerException", "ServiceUnavailable", "RequestLimitExceeded",
}  # fmt: skip
_RETRYABLE_FAILURES = ("RESOURCE:", "AGENT", "CAPACITY", "Capacity", "capacity", "throttl")
_RETRYABLE_STOP_CODES = {
    "TaskFailedToStart", "SpotInterruption", "TerminationNotice",
    "InfrastructureHealth", "ServiceSchedulerInitiated", "UserInitiated",
}  # fmt: skip
_MISSING_GRACE_S = 30.0
_MAX_RUN_TASK_S = 120.0
_MAX_MANIFEST_BYTES = 1 << 20
_RESULTS_TAR_BYTES = 40 << 20


@dataclass(frozen=True, slots=True)
class EcsConfig:
    """Where and how grader tasks run; see the ``GRADEFLOW_ECS_*`` settings."""

    cluster: str
    agent_image: str
    shim_repository: str = SHIM_IMAGE_REPOSITORY
    region: str = "us-east-1"
    launch_type: str = "FARGATE"
    capacity_provider: str | None = None
    network_mode: str = "awsvpc"
    subnets: tuple[str, ...] = ()
    security_groups: tuple[str, ...] = ()
    assign_public_ip: bool = False
    platform_version: str | None = None
    log_group: str = "/gradeflow/ecs"
    log_stream_prefix: str = "gradeflow"
    execution_role_arn: str | None = None
    task_role_arn: str | None = None
    shim_capabilities: tuple[str, ...] = ("SETUID", "SETGID", "SETPCAP", "KILL")
    run_task_rate: float = 10.0
    start_timeout_s: float = 600.0
    ready_timeout_s: float = 60.0
    log_tail_lines: int = 20
    presign_slack_s: int = 900

    @classmethod
    def from_settings(cls, settings: Settings, *, region: str) -> EcsConfig:
        missing = [
            name
            for name, value in (
                ("GRADEFLOW_ECS_CLUSTER", settings.ecs_cluster),
                ("GRADEFLOW_ECS_AGENT_IMAGE", settings.ecs_agent_image),
                ("GRADEFLOW_ECS_SHIM_REPOSITORY", settings.ecs_shim_repository),
            )
            if not value
        ]
        if settings.ecs_network_mode == "awsvpc" and not settings.ecs_subnets:
            missing.append("GRADEFLOW_ECS_SUBNETS (awsvpc tasks need subnets)")
        if missing:
            raise ConfigurationError(f"the ecs backend needs {', '.join(missing)}")
        return cls(
            cluster=str(settings.ecs_cluster),
            agent_image=str(settings.ecs_agent_image),
            shim_repository=str(settings.ecs_shim_repository),
            region=region,
            launch_type=settings.ecs_launch_type,
            capacity_provider=settings.ecs_capacity_provider,
            network_mode=settings.ecs_network_mode,
            subnets=tuple(settings.ecs_subnets),
            security_groups=tuple(settings.ecs_security_groups),
            assign_public_ip=settings.ecs_assign_public_ip,
            platform_version=settings.ecs_platform_version,
            log_group=settings.ecs_log_group,
            log_stream_prefix=settings.ecs_log_stream_prefix,
            execution_role_arn=settings.ecs_execution_role_arn,
            task_role_arn=settings.ecs_task_role_arn,
            shim_capabilities=tuple(settings.ecs_shim_capabilities),
            run_task_rate=settings.ecs_run_task_rate,
            start_timeout_s=settings.ecs_start_timeout_s,
            ready_timeout_s=settings.ready_timeout_s,
            log_tail_lines=settings.ecs_log_tail_lines,
        )


def started_by(run_key: str) -> str:
    """ECS ``startedBy`` for an attempt: ``gf-`` + 32 hex digits (ECS allows 36)."""
    return "gf-" + hashlib.sha256(run_key.encode()).hexdigest()[:32]


def run_prefix(job: GradingJob) -> str:
    """Where the agent of ``job`` uploads: one folder per attempt."""
    return f"runs/{job.assignment.id}/{job.submission_id}/attempt-{job.attempt:04d}/"


@dataclass
class _RateLimiter:
    """At most ``rate`` calls per second across threads, measured when the caller leaves.

    The lock is held while sleeping, so a thread that oversleeps delays the
    ones behind it instead of letting them bunch up: consecutive calls are
    always at least ``1/rate`` apart in real time.
    """

    rate: float
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    _last: float = float("-inf")
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def acquire(self) -> None:
        with self._lock:
            wait = self._last + 1.0 / self.rate - self.clock()
            if wait > 0:
                self.sleep(wait)
            self._last = self.clock()


class EcsLauncher(Launcher):
    """Runs graders as ECS tasks (see the module docstring)."""

    name: ClassVar[Backend] = "ecs"

    def __init__(
        self,
        config: EcsConfig,
        *,
        store: ObjectStore,
        ecs: Any,
        logs: Any = None,
        image_configs: ImageConfigSource | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        poll_initial_s: float = 0.25,
        poll_max_s: float = 5.0,
    ) -> None:
        self._config = config
        self._store = store
        self._ecs = ecs
        self._logs = logs
        self._image_configs = image_configs
        self._sleep = sleep
        self._clock = clock
        self._poll_initial_s = poll_initial_s
        self._poll_max_s = poll_max_s
        self._limiter = _RateLimiter(config.run_task_rate, clock=clock, sleep=sleep)
        self._taskdefs: dict[str, str] = {}
        self._taskdefs_lock = threading.Lock()
        self.run_task_calls = 0
        """RunTask requests sent (benches and tests read it)."""

    # -- identity / task definition ------------------------------------------------------

    def grader_identity(self, assignment: Assignment) -> GraderIdentity:
        image = assignment.grader.image
        digest = ""
        if image and self._image_configs is not None and assignment.grader.entrypoint is None:
            with contextlib.suppress(GradeflowError):
                digest = self._image_configs(image).digest
        if not digest:
            spec = [image, assignment.grader.entrypoint, assignment.grader.command]
            digest = hashlib.sha256(json.dumps(spec).encode()).hexdigest()
        return GraderIdentity(image=image, digest=digest, results_format=assignment.results_format)

    def task_definition_spec(self, job: GradingJob) -> TaskDefinitionSpec:
        assignment = job.assignment
        if assignment.grader.image is None:
            raise ConfigurationError(
                f"assignment {assignment.id}: [grader] image is required for the ecs backend"
            )
        c = self._config
        layout = layout_for(assignment)
        static_env, per_run_env = self._grader_environment(job)
        return TaskDefinitionSpec(
            assignment_id=assignment.id,
            grader_image=assignment.grader.image,
            grader_program=grader_program(assignment, self._image_configs),
            shim_image=f"{c.shim_repository}:{job.shim.sha256[:16]}",
            agent_image=c.agent_image,
            limits=assignment.limits,
            launch_type="EC2" if c.launch_type == "EC2" else "FARGATE",
            network_mode=c.network_mode,  # type: ignore[arg-type]
            log_group=c.log_group,
            log_stream_prefix=c.log_stream_prefix,
            region=c.region,
            execution_role_arn=c.execution_role_arn,
            task_role_arn=c.task_role_arn,
            shim_capabilities=c.shim_capabilities,
            ready_timeout_s=max(assignment.limits.timeout_s, c.ready_timeout_s),
            layout=layout,
            grader_environment=static_env,
            grader_pass_env=tuple(per_run_env),
        )

    def _grader_environment(self, job: GradingJob) -> tuple[dict[str, str], dict[str, str]]:
        """The layout's grader environment: (in the revision, in this run's overrides)."""
        layout = layout_for(job.assignment)
        return split_grader_environment(
            layout, layout.paths(container_paths()), SubmissionInfo.for_job(job)
        )

    def ensure_task_definition(self, job: GradingJob) -> str:
        """The ARN of a revision for ``job``: an identical ACTIVE one, else a new one."""
        body = render_task_definition(self.task_definition_spec(job))
        family = body["family"]
        with self._taskdefs_lock:
            if family in self._taskdefs:
                return self._taskdefs[family]
        try:
            existing = self._ecs.describe_task_definition(taskDefinition=family)
            current = existing["taskDefinition"]
            if current.get("status") == "ACTIVE" and task_definitions_equal(body, current):
                arn = str(current["taskDefinitionArn"])
                with self._taskdefs_lock:
                    self._taskdefs[family] = arn
                return arn
        except ClientError as exc:
            if _code(exc) not in {"ClientException", "InvalidParameterException"}:
                raise _translate(exc, f"DescribeTaskDefinition {family}") from exc
        except BotoCoreError as exc:
            raise InfraError(f"DescribeTaskDefinition {family}: {exc}") from exc
        try:
            registered = self._call(self._ecs.register_task_definition, **body)
        except ClientError as exc:
            raise _translate(exc, f"RegisterTaskDefinition {family}") from exc
        arn = str(registered["taskDefinition"]["taskDefinitionArn"])
        with self._taskdefs_lock:
            self._taskdefs[family] = arn
        return arn

    # -- launch ---------------------------------------------------------------------------

    def launch(self, job: GradingJob) -> LaunchHandle:
        taskdef_arn = self.ensure_task_definition(job)
        tag = started_by(job.run_key)
        running, stopped = self._tasks_started_by(tag)
        for arn in running:
            return self._handle(job, arn, taskdef_arn, reattached=True)
        prefix = run_prefix(job)
        for arn in stopped:
            if self._store.exists(prefix + "manifest.json"):
                return self._handle(job, arn, taskdef_arn, reattached=True)
        environment, stable = self._agent_environment(job, prefix)
        _, grader_environment = self._grader_environment(job)
        overrides = agent_overrides(environment, grader_environment)
        stable += json.dumps(grader_environment, sort_keys=True)
        token = _client_token(job.run_key, taskdef_arn, stable, generation=len(stopped))
        request: dict[str, Any] = {
            "cluster": self._config.cluster,
            "taskDefinition": taskdef_arn,
            "count": 1,
            "startedBy": tag,
            "clientToken": token,
            "overrides": overrides,
            "tags": [
                {"key": "gradeflow:assignment", "value": job.assignment.id},
                {"key": "gradeflow:submission", "value": job.submission_id},
                {"key": "gradeflow:attempt", "value": str(job.attempt)},
                {"key": "gradeflow:run-key", "value": job.run_key},
            ],
            "propagateTags": "TASK_DEFINITION",
            "enableECSManagedTags": True,
            **self._placement(),
        }
        arn = self._run_task(request, job.run_key)
        return self._handle(job, arn, taskdef_arn, reattached=False)

    def _placement(self) -> dict[str, Any]:
        c = self._config
        placement: dict[str, Any] = {}
        if c.capacity_provider:
            placement["capacityProviderStrategy"] = [
                {"capacityProvider": c.capacity_provider, "weight": 1}
            ]
        else:
            placement["launchType"] = c.launch_type
        if c.platform_version and c.launch_type == "FARGATE":
            placement["platformVersion"] = c.platform_version
        if c.network_mode == "awsvpc":
            placement["networkConfiguration"] = {
                "awsvpcConfiguration": {
                    "subnets": list(c.subnets),
                    "securityGroups": list(c.security_groups),
                    "assignPublicIp": "ENABLED" if c.assign_public_ip else "DISABLED",
                }
            }
        return placement

    def _agent_environment(self, job: GradingJob, prefix: str) -> tuple[dict[str, str], str]:
        """The agent's env vars, and the part of them that is the same on every signing."""
        if job.submission_url is not None:
            get_url = job.submission_url
        else:
            key = job.labels.get("org.gradeflow.submission-key") or self._submission_key(job)
            get_url = self._store.presign_get(key, expires_s=self._expiry(job))
        limits = job.assignment.limits
        deadline = limits.timeout_s + limits.kill_grace_s + 30
        uploads = {
            name: self._store.presign_put(prefix + _FILE_NAMES[name], expires_s=self._expiry(job))
            for name in _FILE_NAMES
        }
        env = {
            "GRADEFLOW_AGENT_SUBMISSION_URL": get_url,
            "GRADEFLOW_AGENT_SHA256": job.submission_sha256,
            "GRADEFLOW_AGENT_FILENAME": job.submission_filename,
            "GRADEFLOW_AGENT_MAX_BYTES": str(limits.submission_max_mb << 20),
            "GRADEFLOW_AGENT_MAX_FILES": str(limits.submission_max_files),
            "GRADEFLOW_AGENT_DEADLINE_S": f"{deadline:g}",
            "GRADEFLOW_AGENT_UPLOADS": json.dumps(uploads, separators=(",", ":")),
        }
        # Not part of ``stable``: it carries the time it was made (created_at).
        metadata = layout_for(job.assignment).metadata(SubmissionInfo.for_job(job))
        if metadata is not None:
            env["GRADEFLOW_AGENT_METADATA"] = metadata.decode()
        stable = json.dumps(
            {
                "sha256": job.submission_sha256,
                "filename": job.submission_filename,
                "prefix": prefix,
                "get": get_url.split("?", 1)[0],
                "limits": [limits.submission_max_mb, limits.submission_max_files, deadline],
            },
            sort_keys=True,
        )
        return env, stable

    def _submission_key(self, job: GradingJob) -> str:
        """The stored submission: content-addressed, so found by its digest."""
        prefix = submissions_prefix(job.assignment.id, job.submission_id) + job.submission_sha256
        for key in self._store.list_keys(prefix + "."):
            if not key.endswith(".manifest.json"):
                return key
        raise ConfigurationError(
            f"{job.run_key}: the submission {job.submission_sha256} is not in the store "
            f"under {prefix}.*; the ecs backend fetches it from there"
        )

    def _expiry(self, job: GradingJob) -> int:
        limits = job.assignment.limits
        c = self._config
        total = c.start_timeout_s + c.ready_timeout_s + limits.timeout_s + limits.kill_grace_s
        return int(min(7 * 24 * 3600, total + c.presign_slack_s))

    def _run_task(self, request: dict[str, Any], run_key: str) -> str:
        """RunTask with our token; retries throttling and capacity failures with backoff."""
        deadline = self._clock() + _MAX_RUN_TASK_S
        delay = 0.2
        while True:
            self._limiter.acquire()
            self.run_task_calls += 1
            try:
                response = self._ecs.run_task(**request)
            except ClientError as exc:
                code = _code(exc)
                if code == "ConflictException":
                    arns: list[str] = list(exc.response.get("resourceIds") or [])  # type: ignore[call-overload]
                    if arns:
                        return str(arns[0])  # our token, other parameters: that task is ours
                    raise InfraError(f"{run_key}: RunTask conflict without a task: {exc}") from exc
                if code not in _RETRYABLE_CODES or self._clock() + delay > deadline:
                    raise _translate(exc, f"{run_key}: RunTask") from exc
            except BotoCoreError as exc:
                if self._clock() + delay > deadline:
                    raise InfraError(f"{run_key}: RunTask: {exc}") from exc
            else:
                tasks = response.get("tasks") or []
                if tasks:
                    return str(tasks[0]["taskArn"])
                failures = response.get("failures") or []
                reasons = (
                    "; ".join(
                        f"{f.get('reason')}" + (f" ({f['detail']})" if f.get("detail") else "")
                        for f in failures
                    )
                    or "no task and no failure"
                )
                retryable = any(
                    any(mark in str(f.get("reason", "")) for mark in _RETRYABLE_FAILURES)
                    for f in failures
                )
                if not retryable:
                    raise InfraError(f"{run_key}: RunTask failed: {reasons}", retryable=False)
                if self._clock() + delay > deadline:
                    raise InfraError(f"{run_key}: RunTask kept failing: {reasons}")
            self._sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 10.0)

    def _tasks_started_by(self, tag: str) -> tuple[list[str], list[str]]:
        found: dict[str, list[str]] = {}
        for status in ("RUNNING", "STOPPED"):
            try:
                response = self._call(
                    self._ecs.list_tasks,
                    cluster=self._config.cluster, startedBy=tag, desiredStatus=status,
                )  # fmt: skip
            except ClientError as exc:
                raise _translate(exc, f"ListTasks startedBy={tag}") from exc
            found[status] = [str(a) for a in response.get("taskArns", [])]
        return found["RUNNING"], found["STOPPED"]

    def _handle(
        self, job: GradingJob, arn: str, taskdef_arn: str, *, reattached: bool
    ) -> LaunchHandle:
        return LaunchHandle(
            backend="ecs",
            run_key=job.run_key,
            run_id=arn,
            reattached=reattached,
            details={
                "cluster": self._config.cluster,
                "task_arn": arn,
                "task_definition": taskdef_arn,
                "prefix": run_prefix(job),
                "timeout_s": f"{job.assignment.limits.timeout_s:g}",
            },
        )

    # -- ready / wait ---------------------------------------------------------------------

    def make_ready(self, handle: LaunchHandle, job: GradingJob, *, timeout_s: float) -> None:
        """Wait until the agent says the grader started (or it already finished).

        The submission was handed over at launch (a presigned GET); this waits,
        bounded by the start timeout for image pulls plus ``timeout_s``.
        """
        prefix = handle.details["prefix"]
        budget = self._config.start_timeout_s + timeout_s
        for task in self._poll(handle, budget, what="ready"):
            if self._store.exists(prefix + "manifest.json"):
                manifest = self._manifest(handle)
                if manifest.get("outcome") == "invalid_submission":
                    self.stop(handle)
                    raise InvalidSubmission(str(manifest.get("reason")))
                return
            if self._store.exists(prefix + "ready.json"):
                return
            if task is not None and task.get("lastStatus") == "STOPPED":
                self._raise_stopped(handle, task)

    def wait(self, handle: LaunchHandle, *, timeout_s: float) -> None:
        prefix = handle.details["prefix"]
        for task in self._poll(handle, timeout_s, what="finished"):
            if self._store.exists(prefix + "manifest.json"):
                return
            if task is not None and task.get("lastStatus") == "STOPPED":
                if self._store.exists(prefix + "manifest.json"):
                    return  # uploaded between the two looks
                self._raise_stopped(handle, task)

    def _poll(self, handle: LaunchHandle, timeout_s: float, *, what: str) -> Any:
        """Yield the task (None while MISSING) until the caller returns; bounded.

        Short first polls catch fast graders; then the pause doubles up to
        ``poll_max_s``. On expiry the task is stopped and InfraError raised.
        """
        started = self._clock()
        deadline = started + timeout_s
        pause = self._poll_initial_s
        while True:
            task = self._describe(handle)
            if task is None and self._clock() - started > _MISSING_GRACE_S:
                raise InfraError(f"{handle.run_key}: task {handle.run_id} is MISSING")
            yield task
            if self._clock() >= deadline:
                self.stop(handle)
                raise InfraError(
                    f"{handle.run_key}: not {what} within {timeout_s:g} s; stopped the task"
                )
            self._sleep(min(pause, max(0.0, deadline - self._clock())))
            pause = min(pause * 2, self._poll_max_s)

    def _describe(self, handle: LaunchHandle) -> dict[str, Any] | None:
        try:
            response = self._call(
                self._ecs.describe_tasks,
                cluster=handle.details["cluster"], tasks=[handle.run_id],
            )  # fmt: skip
        except ClientError as exc:
            raise _translate(exc, f"DescribeTasks {handle.run_id}") from exc
        tasks = response.get("tasks") or []
        if tasks:
            return dict(tasks[0])
        for failure in response.get("failures") or []:
            if failure.get("reason") != "MISSING":
                raise InfraError(f"DescribeTasks {handle.run_id}: {failure.get('reason')}")
        return None

    def _raise_stopped(self, handle: LaunchHandle, task: Mapping[str, Any]) -> None:
        stop_code = str(task.get("stopCode", ""))
        reason = str(task.get("stoppedReason", "")) or "no reason given"
        exits = ", ".join(
            f"{c.get('name')}={c.get('exitCode')}"
            + (f" ({c['reason']})" if c.get("reason") else "")
            for c in task.get("containers", [])
        )
        tails = self._log_tails(handle)
        message = (
            f"{handle.run_key}: task {handle.run_id} stopped ({stop_code or 'no stopCode'}: "
            f"{reason}; exits: {exits or 'none'}) before the agent uploaded its manifest"
        )
        if tails:
            message += "\n" + "\n".join(tails)
        if stop_code in _RETRYABLE_STOP_CODES or "Spot" in reason:
            raise InfraError(message, retryable=True)
        # The agent exited without a manifest: killed (OOM, 137) may pass on another
        # task; an agent that exited by itself would do the same again.
        agent_exit = next(
            (c.get("exitCode") for c in task.get("containers", []) if c.get("name") == "agent"),
            None,
        )
        raise InfraError(message, retryable=agent_exit in (None, 137))

    # -- collect / stop / cleanup --------------------------------------------------------

    def collect(self, handle: LaunchHandle) -> RunOutput:
        prefix = handle.details["prefix"]
        notes: list[str] = []
        manifest = self._manifest(handle)
        files = manifest.get("files", {})

        def read(name: str) -> bytes:
            info = files.get(name)
            if not isinstance(info, dict):
                return b""
            return self._store.get_bytes(prefix + _FILE_NAMES[name], sha256=info.get("sha256"))

        envelope: ShimEnvelope | None = None
        if manifest.get("outcome") != "completed":
            notes.append(f"agent: {manifest.get('outcome')}: {manifest.get('reason')}")
        raw = read("envelope")
        if raw:
            try:
                envelope = ShimEnvelope.model_validate_json(raw)
            except ValueError as exc:
                notes.append(f"the shim's envelope is unreadable: {exc}")
        else:
            notes.append("the shim wrote no envelope")
        results = _untar_results(read("results"), notes)
        if envelope is None or manifest.get("outcome") != "completed":
            notes.extend(self._log_tails(handle))
        return RunOutput(
            envelope=envelope,
            results_files=results,
            stdout_tail=read("stdout").decode("utf-8", "replace")[-8192:],
            stderr_tail=read("stderr").decode("utf-8", "replace")[-8192:],
            notes=tuple(notes),
        )

    def _manifest(self, handle: LaunchHandle) -> dict[str, Any]:
        key = handle.details["prefix"] + "manifest.json"
        raw = self._store.get_bytes(key)
        if len(raw) > _MAX_MANIFEST_BYTES:
            raise InfraError(f"{key}: manifest is larger than {_MAX_MANIFEST_BYTES} bytes")
        try:
            manifest = json.loads(raw)
        except ValueError as exc:
            raise InfraError(f"{key}: the agent's manifest is not JSON: {exc}") from exc
        if not isinstance(manifest, dict):
            raise InfraError(f"{key}: the agent's manifest is not an object")
        return manifest

    def stop(self, handle: LaunchHandle) -> None:
        try:
            self._call(
                self._ecs.stop_task,
                cluster=handle.details["cluster"], task=handle.run_id,
                reason=f"gradeflow: stop {handle.run_key}"[:255],
            )  # fmt: skip
        except ClientError as exc:
            if _code(exc) not in {"InvalidParameterException", "ClientException"}:
                raise _translate(exc, f"StopTask {handle.run_id}") from exc

    def cleanup(self, handle: LaunchHandle) -> None:
        """Stop the task if it still runs; S3 objects under runs/ expire by lifecycle."""
        task = self._describe(handle)
        if task is not None and task.get("lastStatus") != "STOPPED":
            self.stop(handle)

    # -- helpers --------------------------------------------------------------------------

    def _log_tails(self, handle: LaunchHandle) -> list[str]:
        """The last lines of each container's awslogs stream, best effort."""
        if self._logs is None or self._config.log_tail_lines <= 0:
            return []
        task_id = handle.run_id.rsplit("/", 1)[-1]
        tails: list[str] = []
        for container in (SHIM_INIT_CONTAINER, AGENT_CONTAINER, GRADER_CONTAINER):
            stream = f"{self._config.log_stream_prefix}/{container}/{task_id}"
            try:
                events = self._logs.get_log_events(
                    logGroupName=self._config.log_group,
                    logStreamName=stream,
                    limit=self._config.log_tail_lines,
                    startFromHead=False,
                ).get("events", [])
            except (ClientError, BotoCoreError):
                continue
            if events:
                lines = "\n".join(f"  {e.get('message', '').rstrip()}" for e in events)
                tails.append(f"{container} log:\n{lines}")
        return tails

    def _call(self, method: Callable[..., Any], **kwargs: Any) -> Any:
        """A control-plane call retried on throttling (RunTask has its own loop)."""
        delay = 0.2
        for attempt in range(6):
            try:
                return method(**kwargs)
            except ClientError as exc:
                if _code(exc) not in _RETRYABLE_CODES or attempt == 5:
                    raise
            except BotoCoreError as exc:
                if attempt == 5:
                    raise InfraError(f"{method.__name__}: {exc}") from exc
            self._sleep(delay * (0.5 + random.random()))
            delay *= 2
        raise AssertionError("unreachable")


_FILE_NAMES = {
    "ready": "ready.json",
    "envelope": "envelope.json",
    "stdout": "stdout.txt",
    "stderr": "stderr.txt",
    "results": "results.tar",
    "manifest": "manifest.json",
}


def _client_token(run_key: str, taskdef_arn: str, stable: str, *, generation: int) -> str:
    """≤64 ASCII characters; equal inputs give the same token in any process."""
    material = "\0".join([run_key, taskdef_arn, stable, str(generation)])
    return "gf" + hashlib.sha256(material.encode()).hexdigest()[:62]


def _untar_results(data: bytes, notes: list[str]) -> dict[str, bytes]:
    """Regular files from the agent's results tar, bounded like the other backends."""
    files: dict[str, bytes] = {}
    if not data:
        return files
    if len(data) > _RESULTS_TAR_BYTES:
        notes.append("results archive too large; ignored")
        return files
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar:
                if len(files) >= MAX_RESULT_FILES:
                    break
                if not member.isreg() or "/" in member.name or member.size > MAX_RESULT_FILE_BYTES:
                    continue
                extracted = tar.extractfile(member)
                if extracted is not None:
                    files[member.name] = extracted.read(MAX_RESULT_FILE_BYTES)
    except tarfile.TarError as exc:
        notes.append(f"results archive unreadable: {exc}")
    return files


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _translate(exc: ClientError, what: str) -> GradeflowError:
    """botocore's error, by code, as a gradeflow error that says whether to retry."""
    code = _code(exc)
    message = exc.response.get("Error", {}).get("Message", "")
    if code in {"ClusterNotFoundException", "AccessDeniedException", "UnsupportedFeatureException",
                "PlatformUnknownException", "PlatformTaskDefinitionIncompatibilityException",
                "InvalidParameterException", "ClientException"}:  # fmt: skip
        return ConfigurationError(f"{what}: {code}: {message}")
    if code == "BlockedException":
        return InfraError(f"{what}: the AWS account is blocked: {message}", retryable=False)
    return InfraError(f"{what}: {code}: {message}", retryable=code in _RETRYABLE_CODES | {""})


def aws_clients(settings: Settings, *services: str) -> tuple[Any, ...]:
    """boto3 clients from a prefect-aws AwsCredentials block (lazy import) or the default chain."""
    if settings.ecs_aws_credentials_block:
        from prefect_aws import AwsCredentials  # Prefect only when a block is configured

        try:
            # ``load`` dispatches to its async twin inside an event loop; force sync.
            credentials: Any = AwsCredentials.load(
                settings.ecs_aws_credentials_block,
                _sync=True,  # type: ignore[call-arg]
            )
        except ValueError as exc:
            raise ConfigurationError(
                f"cannot load AwsCredentials block {settings.ecs_aws_credentials_block!r}: {exc}"
            ) from exc
        session = credentials.get_boto3_session()
    else:
        import boto3

        session = boto3.session.Session(region_name=settings.ecs_region)
    region = settings.ecs_region or session.region_name
    if not region:
        raise ConfigurationError("the ecs backend needs GRADEFLOW_ECS_REGION (or an AWS region)")
    return tuple(
        session.client(
            name,
            region_name=region,
            endpoint_url=settings.ecs_endpoint_url if name == "ecs" else None,
        )
        for name in services
    )


def launcher_from_settings(settings: Settings, store: ObjectStore) -> EcsLauncher:
    """The ecs launcher the settings describe; results must come back through S3."""
    from ..storage import S3Store

    if settings.store != "s3" or not isinstance(store, S3Store):
        raise ConfigurationError(
            "the ecs backend needs GRADEFLOW_STORE=s3: the task fetches the submission and "
            "returns results only through presigned S3 URLs (a local store is unreachable "
            "from ECS)"
        )
    from .._ecs_images import EcrImageConfigSource

    ecs, ecr, logs = aws_clients(settings, "ecs", "ecr", "logs")
    config = EcsConfig.from_settings(settings, region=str(ecs.meta.region_name))
    return EcsLauncher(
        config, store=store, ecs=ecs, logs=logs, image_configs=EcrImageConfigSource(ecr)
    )
