"""Throughput of the grade-submission deployment: server + process worker vs in-process.

Run from the repository root (needs cargo for the shim; ~3 minutes):

    .venv/bin/python bench/deploy_bench.py [--count 12] [--database-url URL]

It starts its own ``prefect server`` on 127.0.0.1 (SQLite unless
``--database-url``), applies deployments/prefect.yaml with ``prefect deploy``,
and for each worker limit (2, 4) starts ``prefect worker start --type process
--limit N``, creates ``--count`` runs of py-fizzbuzz/full.py through the HTTP
API at once and times until the last is COMPLETED. The baseline grades the same
number in this process with ``grade_submission`` in a loop (same server).

Reported per mode: submissions per minute and the flow runs' own timestamps:
created → running (queueing for a worker slot, the server's scheduling and the
worker's 1 s poll) and running → done (a fresh Python process importing Prefect
and the flow, then the grade). A last phase sends 4 runs one at a time to an
idle worker, which isolates the per-run overhead against the in-process loop.
Printed as markdown for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
PREFECT = str(Path(sys.executable).parent / "prefect")
POOL = "gradeflow-bench"


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _call(api: str, method: str, path: str, body: object = None) -> object:
    """One API call; a 503 (the server shedding load) is retried with backoff."""
    data = None if body is None else json.dumps(body).encode()
    for attempt in range(8):
        request = urllib.request.Request(f"{api}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                raw = response.read()
                return json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            if exc.code != 503 or attempt == 7:
                raise
            time.sleep(0.25 * 2**attempt)
    raise AssertionError("unreachable")


def _time(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=12, help="Submissions per mode.")
    parser.add_argument("--database-url", default=None, help="The server's database.")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="gradeflow-deploy-bench-"))
    work.chmod(0o755)
    port = _port()
    api = f"http://127.0.0.1:{port}/api"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "GRADEFLOW_"))}
    database = args.database_url or f"sqlite+aiosqlite:///{work}/prefect.db"
    server = subprocess.Popen(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env={**base, "PREFECT_HOME": str(work / "server"), "PREFECT_UI_ENABLED": "false",
             "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
             "PREFECT_API_DATABASE_CONNECTION_URL": database},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    env = {**base, "PREFECT_API_URL": api, "PREFECT_HOME": str(work / "client"),
           "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "2",
           "GRADEFLOW_HOME": str(work / "home"), "GRADEFLOW_WORK_POOL": POOL,
           "GRADEFLOW_ASSIGNMENTS_ROOT": str(EXAMPLES)}  # fmt: skip
    try:
        for _ in range(240):
            try:
                _call(api, "GET", "/health")
                break
            except OSError:
                time.sleep(0.5)
        # (fails harmlessly when a reused database already has the pool)
        subprocess.run([PREFECT, "work-pool", "create", POOL, "--type", "process"], env=env,
                       capture_output=True)  # fmt: skip
        subprocess.run([PREFECT, "--no-prompt", "deploy", "--all", "--prefect-file",
                        "deployments/prefect.yaml"],
                       env=env, cwd=REPO, check=True, capture_output=True)  # fmt: skip
        found = _call(api, "POST", "/deployments/filter", {})
        assert isinstance(found, list)
        deployment = next(d["id"] for d in found if d["name"] == "grade-submission")
        os.environ.update({k: v for k, v in env.items() if k.startswith(("PREFECT_", "GRADEFLOW"))})
        os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
        from gradeflow import GradeRequest, Settings
        from gradeflow._pipeline import prepare_submission
        from gradeflow._runtime import open_store

        store = open_store(Settings())
        source = EXAMPLES / "py-fizzbuzz" / "submissions" / "full.py"
        key = uuid.uuid4().hex[:8]

        def stored_as(submission: str) -> str:
            """Store full.py under ``submission`` (keys live under their own id)."""
            request = GradeRequest(assignment="py-fizzbuzz", submission=submission,
                                   submission_path=str(source))  # fmt: skip
            return prepare_submission(request, store, work / "staging" / submission).key

        # warm the server (its first minute is slow) and build the shim once
        _in_process(2, "warm" + key, stored_as)
        rows = [
            (f"server + process worker, limit {limit}",
             _through_worker(api, env, limit, args.count, deployment, f"{limit}{key}", stored_as))
            for limit in (2, 4)
        ]  # fmt: skip
        single = _through_worker(
            api, env, 1, 4, deployment, f"seq{key}", stored_as, one_by_one=True
        )
        rows.append(("one at a time, idle worker (4 runs)", single))
        baseline = _in_process(args.count, key, stored_as)
        print("\n| mode | submissions/min | created→running s | running→done s "
              "| created→done s |")  # fmt: skip
        print("|---|---|---|---|---|")
        print(f"| in-process loop (same server) | {baseline['per_min']:.1f} | — | "
              f"{baseline['per_grade_s']:.2f} | {baseline['per_grade_s']:.2f} |")  # fmt: skip
        for label, row in rows:
            cells = (f"{row['per_min']:.1f}", f"{row['dispatch_s']:.2f}", f"{row['run_s']:.2f}",
                     f"{row['latency_s']:.2f}")  # fmt: skip
            print(f"| {label} | {' | '.join(cells)} |")
        pickup_ms = 1000 * single["pickup_s"]
        spawn_ms = 1000 * single["spawn_s"]
        extra_ms = 1000 * (single["run_s"] - baseline["per_grade_s"])
        print(f"\none run on an idle worker, beyond the in-process grade: {pickup_ms:.0f} ms "
              f"created → PENDING (server scheduling + worker poll), {spawn_ms:.0f} ms "
              f"PENDING → RUNNING (new process, imports), {extra_ms:.0f} ms longer run; "
              f"total {pickup_ms + spawn_ms + extra_ms:.0f} ms")  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=30)


def _through_worker(
    api: str,
    env: dict[str, str],
    limit: int,
    count: int,
    deployment: str,
    key: str,
    stored_as: Callable[[str], str],
    *,
    one_by_one: bool = False,
) -> dict[str, float]:
    """Create ``count`` runs (at once, or each after the last finished); time them."""
    worker = subprocess.Popen(
        [PREFECT, "worker", "start", "--pool", POOL, "--type", "process", "--limit", str(limit)],
        env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(5)
        requests = []
        for index in range(count):
            submission = f"bench-{index}-{key}"
            requests.append({"assignment": "py-fizzbuzz", "submission": submission,
                             "submission_key": stored_as(submission)})  # fmt: skip
        started = time.monotonic()
        ids: list[str] = []
        batches = [[r] for r in requests] if one_by_one else [requests]
        for batch in batches:
            batch_ids = []
            for request in batch:
                run = _call(api, "POST", f"/deployments/{deployment}/create_flow_run",
                            {"parameters": {"request": request}})  # fmt: skip
                assert isinstance(run, dict)
                batch_ids.append(str(run["id"]))
            ids += batch_ids
            _wait_final(api, batch_ids)
        found = _wait_final(api, ids)
        wall = time.monotonic() - started
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    failed = [r for r in found if r["state"]["type"] != "COMPLETED"]
    assert not failed, f"{len(failed)} runs did not complete"
    dispatch = [_time(str(r["start_time"])) - _time(str(r["created"])) for r in found]
    run = [_time(str(r["end_time"])) - _time(str(r["start_time"])) for r in found]
    latency = [_time(str(r["end_time"])) - _time(str(r["created"])) for r in found]
    pickup, spawn = [], []
    for r in found:  # the state history splits created→running at PENDING (worker took it)
        states = _call(api, "GET", f"/flow_run_states/?flow_run_id={r['id']}")
        assert isinstance(states, list)
        at = {state["type"]: _time(state["timestamp"]) for state in states}
        pickup.append(at["PENDING"] - _time(str(r["created"])))
        spawn.append(at["RUNNING"] - at["PENDING"])
    return {"per_min": 60 * count / wall, "dispatch_s": statistics.mean(dispatch),
            "run_s": statistics.mean(run), "latency_s": statistics.mean(latency),
            "pickup_s": statistics.mean(pickup), "spawn_s": statistics.mean(spawn)}  # fmt: skip


def _wait_final(api: str, ids: list[str]) -> list[dict[str, Any]]:
    while True:
        found = _call(api, "POST", "/flow_runs/filter", {"flow_runs": {"id": {"any_": ids}}})
        assert isinstance(found, list)
        if all(r["state"]["type"] in {"COMPLETED", "FAILED", "CRASHED"} for r in found):
            return found
        time.sleep(0.25)


def _in_process(count: int, key: str, stored_as: Callable[[str], str]) -> dict[str, float]:
    from flows._grade import grade_submission
    from gradeflow import GradeRequest

    requests = [
        GradeRequest(assignment="py-fizzbuzz", submission=f"inproc-{index}-{key}",
                     submission_key=stored_as(f"inproc-{index}-{key}"))
        for index in range(count)
    ]  # fmt: skip

    async def loop() -> float:
        started = time.monotonic()
        for request in requests:
            await grade_submission(request=request)
        return time.monotonic() - started

    wall = asyncio.run(loop())
    return {"per_min": 60 * count / wall, "per_grade_s": wall / count}


if __name__ == "__main__":
    main()
