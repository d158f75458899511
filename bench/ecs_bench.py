"""Regrade throughput of the ecs launcher against an in-memory ECS with injected faults.

    .venv/bin/python bench/ecs_bench.py                     # 10,000 submissions, prints a table
    .venv/bin/python bench/ecs_bench.py --write             # ... and updates bench/RESULTS.md
    .venv/bin/python bench/ecs_bench.py -n 2000 --rate 100  # smaller / slower

Drives the real ``EcsLauncher.launch`` -> ``wait`` -> ``collect`` path from a
thread pool against ``FakeEcs``, an in-memory stand-in for the ECS API that
behaves like AWS where it matters here:

- ``RunTask`` is idempotent per ``clientToken`` (a repeated token returns the
  task it already started), answers ``ThrottlingException`` on a share of
  calls, ``failures[]`` (RESOURCE:CPU) on another, and on a third *starts the
  task but loses the response* (``ServerException``), so a retry that did not
  reuse the token would double-launch;
- ``DescribeTasks`` reports a new task MISSING once (eventual consistency),
  then RUNNING, then STOPPED after a few polls, when the "agent" has put the
  manifest into the in-memory store.

Reported: launches per second sustained, the highest RunTask rate seen in any
one-second window (must stay within ``--rate``), flow-process CPU ms per
submission (``time.process_time``, which includes the fake's own work, so it
is an upper bound), duplicates (tasks beyond one per attempt; must be 0) and
lost results (attempts without a readable manifest; must be 0).
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import os
import random
import sys
import textwrap
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gradeflow import load_assignment  # noqa: E402
from gradeflow._shim_build import ShimArtifact  # noqa: E402
from gradeflow.launchers import GradingJob  # noqa: E402
from gradeflow.launchers._ecs import EcsConfig, EcsLauncher  # noqa: E402
from gradeflow.storage import ObjectStore, StoredObject  # noqa: E402

RESULTS = REPO / "bench" / "RESULTS.md"
SECTION = "## ECS backend"


def _error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, "RunTask")


class MemoryStore(ObjectStore):
    """Just enough of an object store for the launcher: exists, get, presign."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put_bytes(self, key: str, data: bytes, *, overwrite: bool = False) -> StoredObject:
        with self._lock:
            self.objects[key] = data
        digest = hashlib.sha256(data).hexdigest()
        return StoredObject(key=key, sha256=digest, size=len(data), created=True)

    def put_file(self, key: str, path: Path, *, sha256: str) -> StoredObject:
        return self.put_bytes(key, path.read_bytes())

    def get_bytes(self, key: str, *, sha256: str | None = None) -> bytes:
        return self.objects[key]

    def get_file(self, key: str, dest: Path, *, sha256: str | None = None) -> StoredObject:
        dest.write_bytes(self.objects[key])
        return self.put_bytes(key, self.objects[key])

    def head(self, key: str) -> StoredObject | None:
        return None

    def list_keys(self, prefix: str) -> Iterator[str]:
        return iter([k for k in list(self.objects) if k.startswith(prefix)])

    def presign_get(self, key: str, *, expires_s: int = 3600) -> str:
        return f"https://bucket.s3.us-east-1.amazonaws.com/{key}?X-Amz-Signature={'0' * 600}"

    def presign_put(self, key: str, *, sha256: str | None = None, expires_s: int = 3600) -> str:
        return self.presign_get(key)

    def exists(self, key: str) -> bool:
        return key in self.objects

    def url(self) -> str:
        return "memory://"


class FakeEcs:
    """The ECS calls the launcher makes, in memory, with AWS's idempotency and faults."""

    def __init__(self, store: MemoryStore, *, throttle: float, failures: float,
                 lost: float, seed: int = 7) -> None:  # fmt: skip
        self._store = store
        self._throttle, self._failures, self._lost = throttle, failures, lost
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self.by_token: dict[str, str] = {}
        self.tasks: dict[str, dict[str, Any]] = {}
        self.started_by: Counter[str] = Counter()
        self.by_started_by: dict[str, list[str]] = {}
        self.call_times: list[float] = []
        self.faults: Counter[str] = Counter()

    def describe_task_definition(self, **_: Any) -> dict[str, Any]:
        raise ClientError({"Error": {"Code": "ClientException", "Message": "none"}}, "Describe")

    def register_task_definition(self, **body: Any) -> dict[str, Any]:
        arn = f"arn:aws:ecs:us-east-1:123456789012:task-definition/{body['family']}:1"
        return {"taskDefinition": {**body, "taskDefinitionArn": arn, "revision": 1}}

    def list_tasks(self, *, startedBy: str, desiredStatus: str, **_: Any) -> dict[str, Any]:
        with self._lock:
            arns = [a for a in self.by_started_by.get(startedBy, [])
                    if self.tasks[a]["desired"] == desiredStatus]  # fmt: skip
        return {"taskArns": arns}

    def run_task(self, **request: Any) -> dict[str, Any]:
        with self._lock:
            self.call_times.append(time.monotonic())
            roll = self._random.random()
            if roll < self._throttle:
                self.faults["throttled"] += 1
                raise _error("ThrottlingException")
            if roll < self._throttle + self._failures:
                self.faults["failures[]"] += 1
                return {"tasks": [], "failures": [{"reason": "RESOURCE:CPU"}]}
            token = request["clientToken"]
            arn = self.by_token.get(token)
            if arn is None:
                arn = f"arn:aws:ecs:us-east-1:123456789012:task/c/{uuid.uuid4().hex}"
                self.by_token[token] = arn
                self.started_by[request["startedBy"]] += 1
                self.by_started_by.setdefault(request["startedBy"], []).append(arn)
                env = request["overrides"]["containerOverrides"][0]["environment"]
                upload = next(e["value"] for e in env if e["name"] == "GRADEFLOW_AGENT_UPLOADS")
                self.tasks[arn] = {"startedBy": request["startedBy"], "polls": 0,
                                   "desired": "RUNNING", "upload": upload}  # fmt: skip
            if roll < self._throttle + self._failures + self._lost:
                self.faults["response lost"] += 1
                raise _error("ServerException")  # started, but the caller never hears
            return {"tasks": [{"taskArn": arn, "lastStatus": "PROVISIONING"}], "failures": []}

    def describe_tasks(self, *, tasks: list[str], **_: Any) -> dict[str, Any]:
        arn = tasks[0]
        with self._lock:
            task = self.tasks[arn]
            task["polls"] += 1
            polls = task["polls"]
        if polls == 1:
            return {"tasks": [], "failures": [{"arn": arn, "reason": "MISSING"}]}
        if polls < 4:
            return {"tasks": [{"taskArn": arn, "lastStatus": "RUNNING"}], "failures": []}
        prefix = task["upload"].split('"manifest":"https://bucket.s3.us-east-1.amazonaws.com/')[1]
        key = prefix.split("?", 1)[0]
        self._store.put_bytes(key, b'{"outcome": "completed", "files": {}}')
        task["desired"] = "STOPPED"
        return {"tasks": [{"taskArn": arn, "lastStatus": "STOPPED",
                           "stopCode": "EssentialContainerExited"}], "failures": []}  # fmt: skip

    def stop_task(self, **_: Any) -> dict[str, Any]:
        return {"task": {}}

    def max_rate(self) -> int:
        """Most RunTask calls in any one-second window."""
        times = sorted(self.call_times)
        return max(
            (bisect.bisect_right(times, t + 1.0) - i for i, t in enumerate(times)), default=0
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=10_000, help="submissions")
    parser.add_argument("--rate", type=float, default=200.0, help="configured RunTask calls/s")
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--throttle", type=float, default=0.05)
    parser.add_argument("--failures", type=float, default=0.02)
    parser.add_argument("--lost", type=float, default=0.01, help="responses lost after start")
    parser.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = parser.parse_args()

    store = MemoryStore()
    ecs = FakeEcs(store, throttle=args.throttle, failures=args.failures, lost=args.lost)
    config = EcsConfig(
        cluster="c", agent_image="agent:1", shim_repository="shim", subnets=("subnet-1",),
        execution_role_arn="arn:aws:iam::123456789012:role/x", run_task_rate=args.rate,
    )  # fmt: skip
    launcher = EcsLauncher(config, store=store, ecs=ecs, poll_initial_s=0.01, poll_max_s=0.05)
    assignment = load_assignment(REPO / "examples" / "py-fizzbuzz")
    assignment = assignment.model_copy(
        update={"grader": assignment.grader.model_copy(
            update={"entrypoint": ("python3", "/grader/run_tests.py")})}
    )  # fmt: skip
    shim = ShimArtifact(path="/x", sha256="a" * 64, size=1, target="x", source_hash="0" * 64)

    def one(i: int) -> bool:
        sub = f"s{i:06d}"
        job = GradingJob(
            run_key=f"{assignment.id}.{sub}.a1", assignment=assignment, submission_id=sub,
            attempt=1, submission_file=Path("/dev/null"), submission_filename="fizzbuzz.py",
            submission_sha256=hashlib.sha256(sub.encode()).hexdigest(), shim=shim,
            submission_url=store.presign_get(f"submissions/{assignment.id}/{sub}/x.py"),
        )  # fmt: skip
        handle = launcher.launch(job)
        launcher.wait(handle, timeout_s=60)
        output = launcher.collect(handle)
        return "agent: completed" not in " ".join(output.notes)

    cpu0, wall0 = time.process_time(), time.perf_counter()
    with ThreadPoolExecutor(args.threads) as pool:
        outcomes = list(pool.map(one, range(args.n)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0

    duplicates = sum(count - 1 for count in ecs.started_by.values())
    lost = args.n - sum(outcomes)
    rows = [
        ("submissions", f"{args.n:,}", ""),
        ("RunTask calls (incl. retries)", f"{launcher.run_task_calls:,}",
         ", ".join(f"{k} {v}" for k, v in sorted(ecs.faults.items()))),
        ("launches/s sustained", f"{args.n / wall:.1f}", f"configured rate {args.rate:g}/s"),
        ("max RunTask calls in any 1 s", str(ecs.max_rate()), f"must be <= {args.rate:g}"),
        ("flow-process CPU per submission", f"{1000 * cpu / args.n:.2f} ms",
         "incl. the in-memory fake"),
        ("duplicates (tasks beyond one per attempt)", str(duplicates), "must be 0"),
        ("lost results", str(lost), "must be 0"),
        ("wall time", f"{wall:.1f} s", f"{args.threads} threads"),
    ]  # fmt: skip
    table = "\n".join(
        ["| measure | value | note |", "|---|---|---|"]
        + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    )
    print(table)
    if args.write:
        _write(table, args)
    if duplicates or lost or ecs.max_rate() > args.rate + 1:
        sys.exit(1)


def _write(table: str, args: argparse.Namespace) -> None:
    command = "`.venv/bin/python bench/ecs_bench.py --write`"
    section = (
        f"{SECTION}\n\nGenerated by {command} ({time.strftime('%Y-%m-%d')}; "
        f"{os.cpu_count()} cores): a regrade of {args.n:,} submissions through the real "
        "`EcsLauncher` launch -> wait -> collect path against an in-memory ECS "
        f"(`FakeEcs` in the bench) with {args.throttle:.0%} ThrottlingException, "
        f"{args.failures:.0%} `failures[]` (RESOURCE:CPU) and {args.lost:.0%} RunTask "
        "responses lost after the task started; a task is MISSING on its first "
        "describe, RUNNING for two more, then STOPPED with its manifest in place.\n\n"
        f"{table}\n\nThe rate is the launcher's own token bucket "
        "(`GRADEFLOW_ECS_RUN_TASK_RATE`; Fargate allows 20/s per account, the bench "
        "uses a higher one to finish quickly). Lost responses are where a "
        "uuid-per-call token would double-launch: the derived clientToken makes "
        "the retry return the task already started.\n"
    )
    section = (
        "\n\n".join(
            block if block.startswith("|") else textwrap.fill(block, 78)
            for block in section.rstrip("\n").split("\n\n")
        )
        + "\n"
    )
    text = RESULTS.read_text() if RESULTS.exists() else "# Bench results\n"
    if SECTION in text:
        head, _, rest = text.partition(SECTION)
        tail = rest.split("\n## ", 1)
        text = head + section + ("\n## " + tail[1] if len(tail) > 1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
