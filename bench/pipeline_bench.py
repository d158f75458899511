"""Where the time of one grading run goes, and how much of it is gradeflow's.

Run (about 2 minutes; starts its own Prefect server on 127.0.0.1):

    .venv/bin/python bench/pipeline_bench.py [--runs 20] [--database-url URL]

With ``--database-url postgresql+asyncpg://...`` the server uses PostgreSQL;
its default SQLite database answers some requests seconds late under load.

Measures, side by side in one run, for a trivial Gradescope grader:
  * the grader command run directly (subprocess, no shim, no Prefect);
  * the core pipeline without Prefect (gradeflow._pipeline.grade);
  * the grade-submission flow in-process against a running Prefect server;
  * `gradeflow grade --json` as a new process against the running server;
  * `gradeflow grade --json` cold (no PREFECT_API_URL: Prefect's temporary server).
"Overhead" is a run's wall time minus the grader's own wall time from the
shim's envelope. Prints a markdown table to paste into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GRADER = """import json, os
json.dump({"score": 1, "max_score": 1, "tests": [{"name": "t", "score": 1, "max_score": 1}]},
          open(os.path.join(os.environ["GRADEFLOW_RESULTS_DIR"], "results.json"), "w"))
"""


def make_assignment(root: Path) -> Path:
    directory = root / "bench-trivial"
    (directory / "grader").mkdir(parents=True)
    (directory / "grader" / "grade.py").write_text(GRADER)
    (directory / "assignment.toml").write_text(
        'id = "bench-trivial"\ntitle = "bench"\nresults_format = "gradescope"\n'
        '[grader]\nlocal_command = ["python3", "{grader}/grade.py"]\n'
    )
    (root / "submission.py").write_text("x = 1\n")
    return directory


def start_server(home: Path, database_url: str | None) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_UI_ENABLED": "false",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}  # fmt: skip
    env.pop("PREFECT_API_URL", None)
    if database_url:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
    server = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/api"
    for _ in range(240):
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1):
                return server, url
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit("prefect server did not start")


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--cold-runs", type=int, default=2)
    parser.add_argument(
        "--database-url", default=None, help="the server's database (default SQLite)"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="gradeflow-bench-"))
    work.chmod(0o755)
    assignment = make_assignment(work)
    submission = work / "submission.py"
    os.environ["GRADEFLOW_HOME"] = str(work / "home")
    server, url = start_server(work / "prefect", args.database_url)
    try:
        rows = run_all(args, work, assignment, submission, url)
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)
    print_table(rows, args)


def run_all(
    args: argparse.Namespace, work: Path, assignment: Path, submission: Path, url: str
) -> dict[str, dict[str, float]]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows import grade_submission
    from gradeflow import GradeRequest, Settings, build_shim
    from gradeflow._pipeline import grade
    from gradeflow._runtime import launcher_for, open_store

    settings = Settings()
    shim, _ = build_shim(settings.shim_source, settings.shim_cache_dir)
    store, launcher = open_store(settings), launcher_for("local", settings)
    rows: dict[str, dict[str, float]] = {}

    def request(tag: str, index: int) -> GradeRequest:
        return GradeRequest(
            assignment="bench-trivial", submission=f"{tag}-{index}",
            submission_path=str(submission), assignment_dir=str(assignment),
        )  # fmt: skip

    # 1. the grader directly
    direct: list[float] = []
    for index in range(args.runs):
        results = work / f"direct-{index}"
        results.mkdir()
        env = {"PATH": "/usr/bin:/bin", "GRADEFLOW_RESULTS_DIR": str(results)}
        start = time.perf_counter()
        subprocess.run(["python3", str(assignment / "grader" / "grade.py")], env=env, check=True)
        direct.append(time.perf_counter() - start)
    rows["grader run directly"] = {"wall": median_ms(direct), "grader": median_ms(direct)}

    # 2. the core pipeline, no Prefect
    core_wall, core_grader, stages = [], [], []
    for index in range(args.runs):
        start = time.perf_counter()
        result = grade(request("core", index), settings=settings, store=store,
                       launcher=launcher, shim=shim)  # fmt: skip
        core_wall.append(time.perf_counter() - start)
        core_grader.append(result.resources.wall_ms / 1000)
        stages.append(result.timings)
    rows["core pipeline (no Prefect)"] = {
        "wall": median_ms(core_wall), "grader": median_ms(core_grader),
        **{k: statistics.median(getattr(t, k) for t in stages)
           for k in ("upload_ms", "launch_ms", "ready_ms", "run_ms", "parse_ms")},
    }  # fmt: skip

    # 3. the flow in-process, running server
    flow_wall, flow_grader, flow_stages = [], [], []
    with temporary_settings(updates={PREFECT_API_URL: url}):
        # Warm-up: a fresh server spends its first minute on its own start-up work
        # (measured here: flow runs take 1.5-2.5 s then, 0.55-0.6 s after).
        warm_until, index = time.monotonic() + 60, 0
        while time.monotonic() < warm_until or index < 3:
            asyncio.run(grade_submission(request=request("warm", index)))
            index += 1
        for index in range(args.runs):
            start = time.perf_counter()
            result = asyncio.run(grade_submission(request=request("flow", index)))
            flow_wall.append(time.perf_counter() - start)
            flow_grader.append(result.resources.wall_ms / 1000)
            flow_stages.append(result.timings)
    rows["flow in-process, running server"] = {
        "wall": median_ms(flow_wall), "grader": median_ms(flow_grader),
        **{k: statistics.median(getattr(t, k) for t in flow_stages)
           for k in ("upload_ms", "launch_ms", "ready_ms", "run_ms", "parse_ms")},
    }  # fmt: skip

    # 4./5. the CLI, warm server and cold
    def cli(tag: str, index: int, env: dict[str, str]) -> float:
        other = work / f"{tag}-{index}.py"
        other.write_text(f"x = {index}\n")
        start = time.perf_counter()
        subprocess.run([str(BIN / "gradeflow"), "grade", str(assignment), str(other), "--json"],
                       env=env, check=True, capture_output=True)  # fmt: skip
        return time.perf_counter() - start

    base_env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    warm = [cli("cliw", i, {**base_env, "PREFECT_API_URL": url}) for i in range(min(args.runs, 8))]
    rows["`gradeflow grade`, running server"] = {"wall": median_ms(warm)}
    cold = [cli("clic", i, {**base_env, "PREFECT_HOME": str(work / f"cold{i}")})
            for i in range(args.cold_runs)]  # fmt: skip
    rows["`gradeflow grade`, cold (temporary server)"] = {"wall": median_ms(cold)}
    imports = []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run([str(BIN / "python"), "-c", "import flows.cli"], check=True)
        imports.append(time.perf_counter() - start)
    rows["python -c 'import flows.cli' (CLI start-up floor)"] = {"wall": median_ms(imports)}
    return rows


def print_table(rows: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    print(f"\nN={args.runs} (CLI warm: {min(args.runs, 8)}, cold: {args.cold_runs}); medians.\n")
    print("| what | wall ms | grader ms | overhead ms | upload | launch | ready | run | parse |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        grader = row.get("grader")
        overhead = f"{row['wall'] - grader:.0f}" if grader is not None else "—"
        keys = ("upload_ms", "launch_ms", "ready_ms", "run_ms", "parse_ms")
        stages = [f"{row[k]:.0f}" if k in row else "—" for k in keys]
        grader_cell = f"{grader:.0f}" if grader is not None else "—"
        cells = [name, f"{row['wall']:.0f}", grader_cell, overhead, *stages]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
