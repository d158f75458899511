#!/usr/bin/env python3
"""Grader for py-wordfreq: tests the student's wordfreq.py, writes Coursera feedback.

The assignment: ``top_words(text, n)`` returns the ``n`` most frequent words of
``text`` as ``(word, count)`` pairs, most frequent first, ties in alphabetical
order. Words are runs of letters, compared case-insensitively; anything else
(digits, punctuation, spaces) separates them.

Output, as a Coursera custom grader writes it:

* ``feedback.json``: ``{"fractionalScore": 0..1, "feedback": <html>, "feedbackType": "HTML"}``
* ``htmlFeedback.html``: the same table as a page of its own.

Every test is worth the same, so the score is passed / total (0.0, 0.2, ... 1.0).

Like the py-fizzbuzz grader, this process never runs student code: a child
process (this script with ``--harness``) imports ``wordfreq.py`` and runs the
tests, one JSON line per test, each test under its own timer. Importing has no
timer of ours: a submission that hangs at import is stopped by the assignment's
``timeout_s`` and reported by gradeflow as ``timed_out``.

Submissions may be a single ``wordfreq.py`` or a zip; in a zip, wordfreq.py may
sit at the top or in one folder (students often zip their project folder), and
may import helper modules beside it.
"""

from __future__ import annotations

import contextlib
import html
import importlib
import io
import json
import os
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

SUBMISSION_DIR = Path(os.environ.get("GRADEFLOW_SUBMISSION_DIR", "/grading/submission"))
RESULTS_DIR = Path(os.environ.get("GRADEFLOW_RESULTS_DIR", "/grading/results"))
WORK_DIR = Path(os.environ.get("GRADEFLOW_WORK_DIR", "/grading/work"))

MODULE = "wordfreq"
TEST_TIMEOUT_S = 2.0  # per test; the assignment's timeout_s bounds the whole run
OUTPUT_LIMIT = 2000  # characters of student output/tracebacks kept per test


# ------------------------------------------------------------ tests


def expect(module: ModuleType, text: str, n: int, want: list[tuple[str, int]]) -> None:
    got = module.top_words(text, n)
    call = f"top_words({text!r}, {n})"
    assert isinstance(got, list), (
        f"{call} should return a list, got {type(got).__name__}: {got!r:.200}"
    )
    # Accept [word, count] lists as well as tuples: the pairs are what matter.
    pairs = [tuple(p) if isinstance(p, (list, tuple)) else p for p in got]
    assert pairs == want, f"{call} should be {want!r}, got {got!r:.300}"


TESTS: list[tuple[str, Callable[[ModuleType], None]]] = [
    ("Counts words", lambda m: expect(m, "the cat and the hat", 1, [("the", 2)])),
    (
        "Ignores case",
        lambda m: expect(m, "Apple apple APPLE banana", 2, [("apple", 3), ("banana", 1)]),
    ),
    (
        "Punctuation separates words",
        lambda m: expect(m, "Hello, world! Hello... world? hello", 2, [("hello", 3), ("world", 2)]),
    ),
    (
        "Ties are in alphabetical order",
        lambda m: expect(m, "b a c b a c d", 3, [("a", 2), ("b", 2), ("c", 2)]),
    ),
    (
        "Short and empty texts",
        lambda m: (expect(m, "", 3, []), expect(m, "echo", 5, [("echo", 1)])),
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
    """The traceback with only the submission's frames (a SyntaxError's message names its line)."""
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
    return text.rstrip()


def run_harness(module_dir: Path, records_path: Path) -> None:
    sys.dont_write_bytecode = True  # the submission dir is read-only: no __pycache__ there
    sys.path.insert(0, str(module_dir))  # so wordfreq.py can import its helpers
    signal.signal(signal.SIGALRM, _on_alarm)
    with records_path.open("w", encoding="utf-8") as records:

        def record(**fields: object) -> None:
            records.write(json.dumps(fields) + "\n")
            records.flush()  # if a later test kills this process, earlier results survive

        captured = io.StringIO()
        try:
            with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
                module = importlib.import_module(MODULE)  # no timer: see the module docstring
        except BaseException as exc:
            record(import_error=student_traceback(exc), output=captured.getvalue()[-OUTPUT_LIMIT:])
            return
        record(imported=True)

        for name, check in TESTS:
            captured = io.StringIO()
            passed, message = False, ""
            try:
                with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
                    signal.setitimer(signal.ITIMER_REAL, TEST_TIMEOUT_S)
                    try:
                        check(module)
                    finally:
                        signal.setitimer(signal.ITIMER_REAL, 0)
                passed = True
            except AssertionError as exc:
                message = str(exc)
            except TestTimeout:
                message = f"Took longer than {TEST_TIMEOUT_S:g} s (an infinite loop?)"
            except BaseException as exc:
                message = "Your code raised an exception:\n" + student_traceback(exc)
            if printed := captured.getvalue():
                message += f"\n\nYour code printed:\n{printed[:OUTPUT_LIMIT]}"
            record(name=name, passed=passed, message=message.strip()[: OUTPUT_LIMIT * 2])


# ------------------------------------------------------------ grader (parent process)


def find_module() -> tuple[Path | None, str]:
    """The directory holding wordfreq.py (the top level or the one folder with it), or why not."""
    entries = sorted(SUBMISSION_DIR.rglob("*"))  # rglob does not descend into symlinked folders
    # gradeflow rejects archives with links when unpacking; the grader does not
    # rely on that alone: a link to /etc/passwd named wordfreq.py would
    # otherwise be imported and its first line echoed in a SyntaxError.
    if links := [str(p.relative_to(SUBMISSION_DIR)) for p in entries if p.is_symlink()]:
        return (
            None,
            "The submission contains symbolic links, which are not allowed: "
            f"{', '.join(links[:10])}.",
        )
    found = [p for p in entries if p.name == f"{MODULE}.py" and p.is_file()]
    found = [p for p in found if "__MACOSX" not in p.parts]  # macOS zips carry resource-fork twins
    if len(found) == 1:
        return found[0].parent, ""
    names = [str(p.relative_to(SUBMISSION_DIR)) for p in entries][:20]
    return (
        None,
        f"Expected exactly one {MODULE}.py in the submission; "
        f"found: {', '.join(names) or 'nothing'}.",
    )


def grade() -> tuple[float, list[tuple[str, bool, str]], str]:
    """Run the harness; return (fractional score, [(test, passed, message)], a problem or "")."""
    module_dir, problem = find_module()
    if module_dir is None:
        return 0.0, [(name, False, "Not run: see above.") for name, _ in TESTS], problem

    records_path = WORK_DIR / "harness-records.jsonl"
    log_path = WORK_DIR / "harness-output.txt"
    # -I: ignore PYTHON* variables and user site-packages; -B: write no .pyc.
    # The child's stdout/stderr go to a file (bounded by RLIMIT_FSIZE), never a pipe
    # we might not drain.
    with log_path.open("wb") as log:
        returncode = subprocess.run(
            [sys.executable, "-I", "-B", __file__, "--harness", str(module_dir), str(records_path)],
            cwd=WORK_DIR,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
            # no timeout=: the assignment's timeout_s is the limit for the whole run
        ).returncode
    records = []
    if records_path.exists():
        for line in records_path.read_text(encoding="utf-8", errors="replace").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                records.append(json.loads(line))

    problem, reason = "", "no result."
    if records and "import_error" in records[0]:
        problem = f"{MODULE}.py could not be imported:\n{records[0]['import_error']}"
        if records[0].get("output"):
            problem += f"\n\nIt printed:\n{records[0]['output']}"
        reason = f"{MODULE}.py could not be imported."
    elif len(records) < len(TESTS) + 1:  # the test process died part-way
        how = (
            f"was killed by signal {-returncode}"
            if returncode < 0
            else f"exited with status {returncode}"
        )
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-OUTPUT_LIMIT:].strip()
        problem = f"The test process {how} before all tests ran." + (f"\n{tail}" if tail else "")
        reason = f"the test process {how} before this test."

    by_name = {r["name"]: r for r in records if "name" in r}
    outcomes = []
    for name, _ in TESTS:
        r = by_name.get(name, {"passed": False, "message": f"Not run: {reason}"})
        outcomes.append((name, bool(r["passed"]), r["message"]))
    passed = sum(ok for _, ok, _ in outcomes)
    return round(passed / len(TESTS), 4), outcomes, problem


def render_html(score: float, outcomes: list[tuple[str, bool, str]], problem: str) -> str:
    """A small table of outcomes; everything from the submission is escaped (student-controlled)."""
    passed = sum(ok for _, ok, _ in outcomes)
    rows = "\n".join(
        f"<tr><td>{html.escape(name)}</td>"
        f'<td style="color:{"green" if ok else "firebrick"}">{"passed" if ok else "failed"}</td>'
        f"<td>{f'<pre>{html.escape(msg)}</pre>' if msg else ''}</td></tr>"
        for name, ok, msg in outcomes
    )
    parts = [f"<p>{passed} of {len(outcomes)} tests passed (score {score:.0%}).</p>"]
    if problem:
        parts.append(f"<pre>{html.escape(problem)}</pre>")
    parts.append(
        '<table border="1" cellpadding="4" style="border-collapse:collapse">\n'
        "<tr><th>Test</th><th>Result</th><th>Details</th></tr>\n"
        f"{rows}\n</table>"
    )
    return "\n".join(parts)


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)  # never a half-written file


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--harness":
        run_harness(Path(sys.argv[2]), Path(sys.argv[3]))
        return 0
    score, outcomes, problem = grade()
    feedback = render_html(score, outcomes, problem)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    write_atomically(
        RESULTS_DIR / "htmlFeedback.html",
        '<!doctype html>\n<html><head><meta charset="utf-8">'
        "<title>wordfreq feedback</title></head>\n"
        f"<body>\n{feedback}\n</body></html>\n",
    )
    # feedback.json last: its presence means the run finished.
    write_atomically(
        RESULTS_DIR / "feedback.json",
        json.dumps(
            {"fractionalScore": score, "feedback": feedback, "feedbackType": "HTML"}, indent=2
        )
        + "\n",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
