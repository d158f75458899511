#!/usr/bin/env python3
"""Grader for py-fizzbuzz: tests the student's fizzbuzz.py, writes a Gradescope results.json.

The assignment: ``fizzbuzz(n)`` returns a list of ``n`` strings for 1..n, with
multiples of 3 replaced by "Fizz", of 5 by "Buzz" and of both by "FizzBuzz".

How it runs (standard library only, as gradeflow's grader contract asks):

* This process never imports student code. It starts one child process, this
  same script with ``--harness``, which imports ``fizzbuzz.py`` and runs the
  tests, appending one JSON line per test to a file in the work dir. So a
  submission that crashes, calls ``sys.exit`` or ``os._exit``, or runs out of
  memory can only lose its own tests; this process still writes results.json.
* Each test has its own timer (``TEST_TIMEOUT_S``), so one slow test fails
  alone. Importing the module has *no* timer of ours on purpose: a submission
  that hangs at import hangs the whole run, and gradeflow's ``timeout_s`` (8 s)
  ends it as ``timed_out``. That is the case ``submissions/timeout.py`` shows.

Paths come from the GRADEFLOW_* variables gradeflow sets (defaults: the
in-container layout); nothing here needs root or writes outside the work and
results directories.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

SUBMISSION_DIR = Path(os.environ.get("GRADEFLOW_SUBMISSION_DIR", "/grading/submission"))
RESULTS_DIR = Path(os.environ.get("GRADEFLOW_RESULTS_DIR", "/grading/results"))
WORK_DIR = Path(os.environ.get("GRADEFLOW_WORK_DIR", "/grading/work"))

MODULE = "fizzbuzz"  # the platform delivers a single-file submission as fizzbuzz.py
TEST_TIMEOUT_S = 2.0  # per test; the assignment's timeout_s bounds the whole run
OUTPUT_LIMIT = 4000  # characters of student output/tracebacks kept per test


# ------------------------------------------------------------ tests


def reference(n: int) -> list[str]:
    out = []
    for i in range(1, n + 1):
        word = ("Fizz" if i % 3 == 0 else "") + ("Buzz" if i % 5 == 0 else "")
        out.append(word or str(i))
    return out


def expect_positions(module: ModuleType, n: int, positions: list[int]) -> None:
    """fizzbuzz(n) returns n items and item i (1-based) is right for each i in positions."""
    got = module.fizzbuzz(n)
    want = reference(n)
    assert isinstance(got, list), (
        f"fizzbuzz({n}) should return a list, got {type(got).__name__}: {got!r:.200}"
    )
    assert len(got) == n, f"fizzbuzz({n}) should return {n} items, got {len(got)}"
    for i in positions:
        assert got[i - 1] == want[i - 1], (
            f"fizzbuzz({n})[{i - 1}] (the entry for {i}) "
            f"should be {want[i - 1]!r}, got {got[i - 1]!r}"
        )


def expect_equal(module: ModuleType, n: int) -> None:
    """fizzbuzz(n) equals the reference list; the message names the first difference."""
    got = module.fizzbuzz(n)
    want = reference(n)
    assert isinstance(got, list), (
        f"fizzbuzz({n}) should return a list, got {type(got).__name__}: {got!r:.200}"
    )
    assert len(got) == n, f"fizzbuzz({n}) should return {n} items, got {len(got)}"
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g == w, f"fizzbuzz({n})[{i}] (the entry for {i + 1}) should be {w!r}, got {g!r}"


@dataclass(frozen=True)
class Test:
    name: str
    points: float
    check: Callable[[ModuleType], None]
    # Gradescope: "visible", "hidden" (students never see it), "after_due_date"
    # (shown once the due date has passed), "after_published".
    visibility: str = "visible"


TESTS = [
    Test("1 and 2 are spelled as numbers", 2, lambda m: expect_positions(m, 2, [1, 2])),
    Test("Multiples of 3 are Fizz", 2, lambda m: expect_positions(m, 9, [3, 6, 9])),
    Test("Multiples of 5 are Buzz", 2, lambda m: expect_positions(m, 10, [5, 10])),
    Test("Multiples of 15 are FizzBuzz", 2, lambda m: expect_positions(m, 45, [15, 30, 45])),
    Test("fizzbuzz(0) is an empty list", 1, lambda m: expect_equal(m, 0), visibility="hidden"),
    Test(
        "fizzbuzz(1000) matches the reference",
        1,
        lambda m: expect_equal(m, 1000),
        visibility="after_due_date",
    ),
]


# ------------------------------------------------------------ harness (child process)


class TestTimeout(BaseException):
    """Raised by the per-test timer.

    A BaseException, so that `except Exception` in student code can't swallow it.
    """


def _on_alarm(signum: int, frame: object) -> None:
    raise TestTimeout


def student_traceback(exc: BaseException) -> str:
    """The traceback with only the submission's frames: students should see their code, not ours.

    (A SyntaxError has no such frames; its message names the file and line.)
    """
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if f.filename.startswith(str(SUBMISSION_DIR))
    ]
    text = "".join(traceback.format_exception_only(type(exc), exc))
    if frames:
        text = (
            "Traceback (most recent call last):\n" + "".join(traceback.format_list(frames)) + text
        )
    return text


def run_harness(records_path: Path) -> None:
    sys.dont_write_bytecode = True  # the submission dir is read-only: no __pycache__ there
    sys.path.insert(0, str(SUBMISSION_DIR))
    signal.signal(signal.SIGALRM, _on_alarm)
    with records_path.open("w", encoding="utf-8") as records:

        def record(**fields: object) -> None:
            records.write(json.dumps(fields) + "\n")
            records.flush()  # if a later test kills this process, earlier results survive

        captured = io.StringIO()
        try:
            # No timer here (see the module docstring): a hang at import is the
            # whole run's timeout, reported by gradeflow as timed_out.
            with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
                module = importlib.import_module(MODULE)
        except BaseException as exc:
            record(import_error=student_traceback(exc), output=captured.getvalue()[-OUTPUT_LIMIT:])
            return
        record(imported=True, output=captured.getvalue()[-OUTPUT_LIMIT:])

        for test in TESTS:
            captured = io.StringIO()
            passed, message = False, ""
            try:
                with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
                    signal.setitimer(signal.ITIMER_REAL, TEST_TIMEOUT_S)
                    try:
                        test.check(module)
                    finally:
                        signal.setitimer(signal.ITIMER_REAL, 0)
                passed = True
            except AssertionError as exc:
                message = f"Failed: {exc}"
            except TestTimeout:
                message = f"Failed: took longer than {TEST_TIMEOUT_S:g} s (an infinite loop?)"
            except BaseException as exc:
                message = "Failed: your code raised an exception:\n" + student_traceback(exc)
            printed = captured.getvalue()
            if printed:
                message += f"\n\nYour code printed:\n{printed[:OUTPUT_LIMIT]}"
            record(name=test.name, passed=passed, output=message.strip()[: OUTPUT_LIMIT * 2])


# ------------------------------------------------------------ grader (parent process)


def grade() -> dict:
    """Run the harness, read its records, build the Gradescope results."""
    records_path = WORK_DIR / "harness-records.jsonl"
    log_path = WORK_DIR / "harness-output.txt"
    records: list[dict] = []
    returncode = 0
    reason = ""  # why a test has no record, in one line

    if not (SUBMISSION_DIR / f"{MODULE}.py").is_file():
        found = sorted(p.name for p in SUBMISSION_DIR.iterdir()) if SUBMISSION_DIR.is_dir() else []
        problem = f"No {MODULE}.py in the submission (found: {', '.join(found) or 'nothing'})."
        reason = f"no {MODULE}.py in the submission."
    else:
        # -I: ignore PYTHON* variables and user site-packages; -B: write no .pyc.
        # The child's own stdout/stderr go to a file, not a pipe: output we
        # never read can't block it, and RLIMIT_FSIZE bounds the file.
        with log_path.open("wb") as log:
            returncode = subprocess.run(
                [sys.executable, "-I", "-B", __file__, "--harness", str(records_path)],
                cwd=WORK_DIR,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
                # no timeout=: the assignment's timeout_s is the limit for the whole run
            ).returncode
        if records_path.exists():
            for line in records_path.read_text(encoding="utf-8", errors="replace").splitlines():
                with contextlib.suppress(json.JSONDecodeError):
                    records.append(json.loads(line))
        problem = ""
        if records and "import_error" in records[0]:
            reason = f"{MODULE}.py could not be imported (see '{MODULE}.py imports')."
            problem = f"{MODULE}.py could not be imported:\n{records[0]['import_error'].rstrip()}"
            if records[0].get("output"):
                problem += f"\nIt printed:\n{records[0]['output']}"
        elif len(records) < len(TESTS) + 1:  # the test process died part-way
            how = (
                f"was killed by signal {-returncode}"
                if returncode < 0
                else f"exited with status {returncode}"
            )
            tail = log_path.read_text(encoding="utf-8", errors="replace")[-OUTPUT_LIMIT:].strip()
            reason = f"the test process {how} before this test."
            problem = f"The test process {how} before all tests ran." + (
                f"\n{tail}" if tail else ""
            )

    by_name = {r["name"]: r for r in records if "name" in r}
    tests = []
    for test in TESTS:
        r = by_name.get(test.name)
        if r is None:
            r = {"passed": False, "output": f"Not run: {reason or 'no result.'}"}
        tests.append(
            {
                "name": test.name,
                "score": float(test.points) if r["passed"] else 0.0,
                "max_score": float(test.points),
                "status": "passed" if r["passed"] else "failed",
                "output": r["output"] or "Passed.",
                "visibility": test.visibility,
            }
        )
    # A 0-point entry that carries the import outcome, so a crashing submission
    # shows its traceback in the test list, not only in the top-level output.
    import_ok = bool(records) and "import_error" not in records[0]
    import_output = records[0].get("output", "") if import_ok else ""
    tests.insert(
        0,
        {
            "name": f"{MODULE}.py imports",
            "score": 0.0,
            "max_score": 0.0,
            "status": "passed" if import_ok else "failed",
            "output": problem
            or (f"Imported. It printed:\n{import_output}" if import_output else "Imported."),
            "visibility": "visible",
        },
    )

    score = sum(t["score"] for t in tests)
    max_score = sum(t["max_score"] for t in tests)
    passed = sum(t["status"] == "passed" for t in tests[1:])
    summary = f"{passed} of {len(TESTS)} tests passed."
    return {
        "score": score,
        "max_score": max_score,
        "output": f"{summary}\n\n{problem}".strip() if problem else summary,
        "visibility": "visible",
        "tests": tests,
    }


def write_results(results: dict) -> None:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS_DIR / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, RESULTS_DIR / "results.json")  # never a half-written results.json


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--harness":
        run_harness(Path(sys.argv[2]))
        return 0
    write_results(grade())
    return 0


if __name__ == "__main__":
    sys.exit(main())
