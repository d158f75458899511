#!/usr/bin/env python3
"""Tests for primes.py, written to Gradescope's autograder specification.

Run by run_autograder from /autograder/source, where it has copied the
student's files. Writes /autograder/results/results.json: per-test score,
max_score, status, output and visibility (one ``hidden`` test, one
``after_due_date``), the overall output and stdout visibility, extra_data and a
leaderboard entry, as Gradescope documents them.

Student code never runs in this process: one child process imports primes.py
and runs every test under its own timer, printing one JSON line per test.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path("/autograder/results/results.json")
SOURCE = Path("/autograder/source")
TEST_TIMEOUT_S = 2
MARK = "@@primes-test@@ "

# name, points, visibility, Python expression that must be True
TESTS = [
    ("is_prime on small numbers", 2, "visible",
     "[n for n in range(2, 20) if is_prime(n)] == [2, 3, 5, 7, 11, 13, 17, 19]"),
    ("is_prime rejects 0, 1 and negatives", 2, "visible",
     "not any(is_prime(n) for n in (-7, -1, 0, 1))"),
    ("primes_up_to(30)", 2, "visible",
     "primes_up_to(30) == [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]"),
    ("is_prime on a large prime", 2, "hidden", "is_prime(2147483647)"),
    ("primes_up_to(1) is empty", 2, "after_due_date", "primes_up_to(1) == []"),
]  # fmt: skip

HARNESS = r"""
import json, signal, sys
def on_alarm(signum, frame):
    raise TimeoutError("took longer than the per-test limit")
signal.signal(signal.SIGALRM, on_alarm)
namespace = {}
try:
    import primes
    namespace = vars(primes)
except BaseException as exc:
    error = f"importing primes.py failed: {type(exc).__name__}: {exc}"
else:
    error = None
for index, expression in enumerate(json.loads(sys.argv[1])):
    if error:
        outcome = {"ok": False, "output": error}
    else:
        signal.alarm(int(sys.argv[2]))
        try:
            ok = bool(eval(expression, dict(namespace)))
            outcome = {"ok": ok, "output": "" if ok else f"expected: {expression}"}
        except BaseException as exc:
            outcome = {"ok": False, "output": f"{type(exc).__name__}: {exc}"}
        signal.alarm(0)
    print(__MARK__ + json.dumps({"index": index, **outcome}), flush=True)
""".replace("__MARK__", repr(MARK))


def main() -> int:
    started = time.monotonic()
    child = subprocess.run(
        [sys.executable, "-c", HARNESS, json.dumps([t[3] for t in TESTS]), str(TEST_TIMEOUT_S)],
        cwd=SOURCE, capture_output=True, text=True, check=False,
        timeout=TEST_TIMEOUT_S * (len(TESTS) + 2),
    )  # fmt: skip
    outcomes = {}
    for line in child.stdout.splitlines():
        if line.startswith(MARK):
            outcome = json.loads(line[len(MARK) :])
            outcomes[outcome["index"]] = outcome
    tests = []
    for index, (name, points, visibility, _) in enumerate(TESTS):
        outcome = outcomes.get(index, {"ok": False, "output": "did not run"})
        tests.append({
            "name": name,
            "score": points if outcome["ok"] else 0,
            "max_score": points,
            "status": "passed" if outcome["ok"] else "failed",
            "output": outcome["output"],
            "visibility": visibility,
        })  # fmt: skip
    # Autograders often leave logs beside their sources: this one may write there.
    (SOURCE / "last_run.log").write_text(child.stdout + child.stderr, encoding="utf-8")
    passed = sum(1 for t in tests if t["status"] == "passed")
    results = {
        "score": sum(t["score"] for t in tests),
        "max_score": sum(t["max_score"] for t in tests),
        "output": f"{passed} of {len(tests)} tests passed.",
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "execution_time": round(time.monotonic() - started, 3),
        "extra_data": {"python": sys.version.split()[0]},
        "tests": tests,
        "leaderboard": [{"name": "Tests passed", "value": passed}],
    }
    RESULTS.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(f"wrote {RESULTS}: {results['score']} / {results['max_score']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
