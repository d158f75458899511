"""Benchmark the gradeflow shim: start-up cost, ready latency, binary size.

Run (as root, from the repository root; builds the shim first)::

    python3 bench/shim_bench.py            # prints the table, updates bench/RESULTS.md
    python3 bench/shim_bench.py --no-write # prints only

What it measures, and the goals:

* ``gradeflow-shim -- /bin/true`` against Debian's ``tini-static -- /bin/true``
  (``apt-get install -y tini``), N runs each, interleaved so drift hits both
  equally; the ratio of medians should be <= 1.5. The shim does strictly more
  (ready check, rlimits, capability drop, uid switch, seccomp, descendant
  sweep), so this is the price of the hardening.
* Ready-marker latency: the shim waits on ``--ready-file``; we rename the marker
  into place and PROGRAM (``/bin/date +%s%N``, exec'd directly) records the
  time it started. Marker rename to PROGRAM start, median and p95 over 50
  runs; goal < 5 ms.
* Size of the static binary; goal < 1.5 MB.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIM_DIR = ROOT / "shim"
TARGET = "x86_64-unknown-linux-gnu"
SHIM = SHIM_DIR / "target" / TARGET / "release" / "gradeflow-shim"
TINI = Path("/usr/bin/tini-static")
RESULTS = ROOT / "bench" / "RESULTS.md"


def build() -> None:
    env = dict(os.environ, RUSTFLAGS="-C target-feature=+crt-static")
    subprocess.run(
        ["cargo", "build", "--release", "--target", TARGET, "--quiet"],
        cwd=SHIM_DIR,
        env=env,
        check=True,
    )


def time_run(argv: list[str]) -> float:
    """Wall seconds for one run, spawned with as little overhead as Python allows."""
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        start = time.perf_counter_ns()
        pid = os.posix_spawn(
            argv[0],
            argv,
            {"PATH": "/usr/bin:/bin"},
            file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)],
        )
        _, status = os.waitpid(pid, 0)
        elapsed = (time.perf_counter_ns() - start) / 1e9
    finally:
        os.close(devnull)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{argv} exited with status {status}")
    return elapsed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def bench_startup(n: int) -> tuple[float, float]:
    """Median wall seconds of (shim, tini) running /bin/true, interleaved."""
    shim_argv = [str(SHIM), "--", "/bin/true"]
    tini_argv = [str(TINI), "--", "/bin/true"]
    for _ in range(10):  # warm the page cache
        time_run(shim_argv)
        time_run(tini_argv)
    shim_times: list[float] = []
    tini_times: list[float] = []
    for _ in range(n):
        shim_times.append(time_run(shim_argv))
        tini_times.append(time_run(tini_argv))
    return statistics.median(shim_times), statistics.median(tini_times)


def bench_ready_latency(runs: int) -> list[float]:
    """Seconds from marker rename to PROGRAM start, one per run."""
    latencies: list[float] = []
    base = Path(tempfile.mkdtemp(prefix="shim-bench-"))
    base.chmod(0o755)
    try:
        for i in range(runs):
            marker = base / f"ready-{i}"
            out = base / f"started-{i}"
            proc = subprocess.Popen(
                [
                    str(SHIM),
                    "--ready-file",
                    str(marker),
                    "--stdout",
                    str(out),
                    "--",
                    "/bin/date",
                    "+%s%N",
                ],
                stderr=subprocess.DEVNULL,
            )
            time.sleep(0.05)  # let the shim arm its inotify watch
            tmp = base / f".ready-{i}.tmp"
            tmp.write_text("ready\n")
            written = time.time_ns()
            os.rename(tmp, marker)
            if proc.wait(timeout=30) != 0:
                raise RuntimeError("shim failed during the ready benchmark")
            started = int(out.read_text().strip())
            latencies.append((started - written) / 1e9)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return latencies


def table(
    shim_med: float, tini_med: float, n: int, ready: list[float], size: int, kernel: str
) -> str:
    ratio = shim_med / tini_med
    ready_med = statistics.median(ready) * 1e3
    ready_p95 = percentile(ready, 0.95) * 1e3
    ok = {True: "yes", False: "**no**"}
    rows = [
        "| metric | value | goal | met |",
        "| --- | --- | --- | --- |",
        f"| `gradeflow-shim -- /bin/true` median (N={n}) | {shim_med * 1e3:.2f} ms | | |",
        f"| `tini-static -- /bin/true` median (N={n}) | {tini_med * 1e3:.2f} ms | | |",
        f"| shim / tini (ratio of medians) | {ratio:.2f}x | <= 1.5x | {ok[ratio <= 1.5]} |",
        f"| ready marker -> PROGRAM start, median ({len(ready)} runs) "
        f"| {ready_med:.2f} ms | < 5 ms | {ok[ready_med < 5]} |",
        f"| ready marker -> PROGRAM start, p95 "
        f"| {ready_p95:.2f} ms | < 5 ms | {ok[ready_p95 < 5]} |",
        f"| static binary size | {size / 1e6:.2f} MB ({size} B) | < 1.5 MB | {ok[size < 1.5e6]} |",
    ]
    return (
        "\n".join(rows) + f"\n\nMeasured on Linux {kernel} as root (the shim drops to uid 65534).\n"
    )


def write_section(body: str) -> None:
    """Replace (or add) the `## Shim` section of RESULTS.md, leaving others alone."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.strip() == "## Shim"), None)
    section = (
        f"## Shim\n\nGenerated by `python3 bench/shim_bench.py` "
        f"({time.strftime('%Y-%m-%d')}).\n\n{body}"
    )
    if start is None:
        new = text.rstrip("\n") + "\n\n" + section
    else:
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        rest = "".join(lines[end:])
        new = "".join(lines[:start]) + section + ("\n" + rest if rest else "")
    RESULTS.write_text(new)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="runs of each for start-up")
    parser.add_argument("--ready-runs", type=int, default=50)
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args()
    if not TINI.exists():
        print("tini-static missing: apt-get install -y tini", file=sys.stderr)
        return 2
    build()
    shim_med, tini_med = bench_startup(args.n)
    ready = bench_ready_latency(args.ready_runs)
    body = table(shim_med, tini_med, args.n, ready, SHIM.stat().st_size, os.uname().release)
    print(body)
    if not args.no_write:
        write_section(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
