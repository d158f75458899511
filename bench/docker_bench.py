"""Docker backend: what gradeflow's pipeline costs over a plain ``docker run``.

Run (as root, with a Docker engine and the base image, which it builds if missing):

    .venv/bin/python bench/docker_bench.py --runs 10 --submissions 100

Two comparisons of the same 1-second grader image (FROM the offline base image):

- single: wall time of the core ``grade()`` (no Prefect) through the docker
  backend vs ``docker run --rm --network none IMAGE``, interleaved so drift
  hits both alike; the goal is a median ratio <= 1.3x.
- throughput: 100 submissions through a thread pool of 2 running ``grade()``
  vs ``xargs -P2 docker run --rm --network none IMAGE``; the goal is >= 0.8x.

The result is printed and written as the ``## Docker backend`` section of
bench/RESULTS.md (other sections are left alone).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import docker  # noqa: E402

from gradeflow import GradeRequest, Settings, build_shim  # noqa: E402
from gradeflow._images import BASE_IMAGE, build_assignment_image, build_base_image  # noqa: E402
from gradeflow._pipeline import grade  # noqa: E402
from gradeflow._runtime import open_store  # noqa: E402
from gradeflow._settings import default_shim_source  # noqa: E402
from gradeflow.launchers._docker import DockerLauncher  # noqa: E402

TAG = "gradeflow-bench/sleep1:latest"
GRADER = """import json, os, time
time.sleep(1)
with open(os.path.join(os.environ.get("GRADEFLOW_RESULTS_DIR", "/tmp"), "results.json"), "w") as f:
    json.dump({"score": 1, "max_score": 1}, f)
"""
PLAIN = ["docker", "run", "--rm", "--network", "none", TAG]
RESULTS = REPO / "bench" / "RESULTS.md"


def make_assignment(root: Path) -> Path:
    (root / "grader").mkdir(parents=True)
    (root / "grader" / "grade.py").write_text(GRADER)
    (root / "Dockerfile").write_text(
        f'FROM {BASE_IMAGE}\nCOPY grader /grader\nENTRYPOINT ["python3", "/grader/grade.py"]\n'
    )
    (root / "assignment.toml").write_text(
        'id = "bench"\ntitle = "bench"\nresults_format = "gradescope"\n'
        f'[grader]\nimage = "{TAG}"\n[limits]\ntimeout_s = 30\n'
    )
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--submissions", type=int, default=100)
    parser.add_argument("--no-write", action="store_true", help="Do not update RESULTS.md.")
    args = parser.parse_args()

    client = docker.from_env()
    build_base_image(client)
    scratch = Path(tempfile.mkdtemp(prefix="gradeflow-bench-"))
    scratch.chmod(0o755)
    assignment = make_assignment(scratch / "bench")
    build_assignment_image(client, assignment)
    os.environ["GRADEFLOW_HOME"] = str(scratch / "home")
    settings = Settings()
    store = open_store(settings)
    shim, _ = build_shim(default_shim_source(), settings.shim_cache_dir)
    submission = scratch / "solution.py"
    submission.write_text("print('hi')\n")

    def run_grade(index: int) -> float:
        request = GradeRequest(
            assignment="bench", submission=f"s{index}-{time.monotonic_ns()}",
            submission_path=str(submission), assignment_dir=str(assignment), backend="docker",
        )  # fmt: skip
        started = time.perf_counter()
        result = grade(request, settings=settings, store=store,
                       launcher=DockerLauncher(client), shim=shim)  # fmt: skip
        elapsed = time.perf_counter() - started
        assert result.status == "graded", result
        return elapsed

    def run_plain() -> float:
        started = time.perf_counter()
        subprocess.run(PLAIN, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - started

    run_grade(-1), run_plain()  # warm caches (page cache, engine)
    ours: list[float] = []
    plain: list[float] = []
    stages: list[dict[str, int]] = []
    for i in range(args.runs):
        ours.append(run_grade(i))
        plain.append(run_plain())
    for i in range(3):
        request = GradeRequest(
            assignment="bench", submission=f"stage{i}-{time.monotonic_ns()}",
            submission_path=str(submission), assignment_dir=str(assignment), backend="docker",
        )  # fmt: skip
        result = grade(request, settings=settings, store=store,
                       launcher=DockerLauncher(client), shim=shim)  # fmt: skip
        stages.append(result.timings.model_dump())
    single_ratio = statistics.median(ours) / statistics.median(plain)

    n = args.submissions
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(run_grade, range(1000, 1000 + n)))
    ours_tp = n / (time.perf_counter() - started)
    started = time.perf_counter()
    subprocess.run(
        ["xargs", "-P2", "-I{}", *PLAIN],
        input="\n".join(str(i) for i in range(n)) + "\n",
        text=True, check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    plain_tp = n / (time.perf_counter() - started)
    tp_ratio = ours_tp / plain_tp
    stage = {k: int(statistics.median(s[k] for s in stages)) for k in stages[0]}

    section = render(args, ours, plain, single_ratio, ours_tp, plain_tp, tp_ratio, stage)
    print(section)
    if not args.no_write:
        write_section(section)
    client.images.remove(TAG, force=True)


def render(
    args: argparse.Namespace,
    ours: list[float],
    plain: list[float],
    single_ratio: float,
    ours_tp: float,
    plain_tp: float,
    tp_ratio: float,
    stage: dict[str, int],
) -> str:
    def ms(values: list[float]) -> str:
        return f"{statistics.median(values) * 1000:.0f} ms"

    yes = {True: "yes", False: "**no**"}
    return "\n".join(
        [
            "## Docker backend",
            "",
            f"Generated by `.venv/bin/python bench/docker_bench.py --runs {args.runs} "
            f"--submissions {args.submissions}` ({date.today().isoformat()}; "
            f"{os.cpu_count()} cores; engine {docker.from_env().version()['Version']}, "
            "overlay2, cgroup v1). Grader: `python3` sleeping 1 s then writing results.json,",
            "in an image FROM gradeflow/base-python:bookworm.",
            "",
            "| metric | value | goal | met |",
            "| --- | --- | --- | --- |",
            f"| core `grade()` on docker, median of {len(ours)} (interleaved) | {ms(ours)} | | |",
            f"| `docker run --rm --network none`, median of {len(plain)} | {ms(plain)} | | |",
            f"| single run ratio (medians) | {single_ratio:.2f}x | <= 1.3x "
            f"| {yes[single_ratio <= 1.3]} |",
            f"| {args.submissions} submissions, `grade()` x2 threads | {ours_tp:.2f} /s | | |",
            f"| {args.submissions} submissions, `xargs -P2 docker run` | {plain_tp:.2f} /s | | |",
            f"| throughput ratio | {tp_ratio:.2f}x | >= 0.8x | {yes[tp_ratio >= 0.8]} |",
            "",
            "Stage medians of `grade()` (ms): "
            + ", ".join(f"{k.removesuffix('_ms')} {v}" for k, v in stage.items())
            + ".",
            "",
        ]
    )


def write_section(section: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    start = text.find("## Docker backend")
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + 1)
        text = text[:start] + section + ("" if end == -1 else text[end + 1 :])
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
