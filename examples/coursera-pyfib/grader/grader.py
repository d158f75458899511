#!/usr/bin/env python3
"""A Coursera-style custom grader for ``fib(n)``, written the way Coursera documents them.

Nothing here knows about gradeflow. As on Coursera:

* the learner's file is in ``/shared/submission/`` (read-only), named by the
  ``filename`` environment variable;
* the part being graded is ``partId``, the learner ``userId``;
* the grader writes ``/shared/feedback.json`` -- ``{"fractionalScore": 0..1,
  "feedback": ..., "feedbackType": "HTML"}`` -- and the full report to
  ``/shared/htmlFeedback.html``;
* it runs as an unprivileged user with no network.

The learner's code never runs in this process: one child process imports it
and runs every test under a per-test timer, printing one JSON line per test.
"""

from __future__ import annotations

import html
import json
import os
import subprocess
import sys
from pathlib import Path

SHARED = Path("/shared")
SUBMISSION = SHARED / "submission"
PARTS = {"fib": "fib"}  # partId -> the function the part asks for
CASES = [(0, 0), (1, 1), (2, 1), (10, 55), (90, 2880067194370816120)]
TEST_TIMEOUT_S = 2
RESULT = "@@fib-result@@ "

HARNESS = r"""
import importlib.util, json, signal, sys
def on_alarm(signum, frame):
    raise TimeoutError("took longer than the per-test limit")
signal.signal(signal.SIGALRM, on_alarm)
spec = importlib.util.spec_from_file_location("learner", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
function = getattr(module, sys.argv[2])
for n, want in json.loads(sys.argv[3]):
    signal.alarm(int(sys.argv[4]))
    try:
        got = function(n)
        outcome = {"n": n, "ok": got == want, "got": repr(got)[:200]}
    except BaseException as exc:
        outcome = {"n": n, "ok": False, "got": f"{type(exc).__name__}: {exc}"[:200]}
    signal.alarm(0)
    print(__RESULT__ + json.dumps(outcome), flush=True)
""".replace("__RESULT__", repr(RESULT))


def write_feedback(score: float, report: str) -> None:
    """feedback.json plus the same report as a page of its own, as Coursera reads them."""
    (SHARED / "htmlFeedback.html").write_text(report, encoding="utf-8")
    feedback = {"fractionalScore": score, "feedback": report, "feedbackType": "HTML"}
    (SHARED / "feedback.json").write_text(json.dumps(feedback), encoding="utf-8")


def main() -> int:
    # Coursera's own names, lower camel case as it sets them.
    part = os.environ.get("partId", "")  # noqa: SIM112
    filename = os.environ.get("filename", "")  # noqa: SIM112
    learner = os.environ.get("userId", "")  # noqa: SIM112
    if part not in PARTS:
        write_feedback(0.0, f"<p>Unknown part id {html.escape(part)}.</p>")
        return 0
    source = SUBMISSION / filename
    if not filename or "/" in filename or not source.is_file():
        write_feedback(0.0, f"<p>No submitted file named {html.escape(filename)}.</p>")
        return 0
    child = subprocess.run(
        [sys.executable, "-c", HARNESS, str(source), PARTS[part], json.dumps(CASES),
         str(TEST_TIMEOUT_S)],
        capture_output=True, text=True, timeout=TEST_TIMEOUT_S * (len(CASES) + 1), check=False,
    )  # fmt: skip
    outcomes = {}
    for line in child.stdout.splitlines():
        if line.startswith(RESULT):
            outcome = json.loads(line[len(RESULT) :])
            outcomes[outcome["n"]] = outcome
    rows = []
    for n, want in CASES:
        outcome = outcomes.get(n, {"ok": False, "got": "(did not run)"})
        mark = "passed" if outcome["ok"] else "failed"
        rows.append(
            f"<tr><td>fib({n})</td><td>{want}</td><td>{html.escape(outcome['got'])}</td>"
            f"<td>{mark}</td></tr>"
        )
    passed = sum(1 for outcome in outcomes.values() if outcome["ok"])
    errors = ""
    if child.returncode != 0 and child.stderr:
        errors = f"<pre>{html.escape(child.stderr[-2000:])}</pre>"
    report = (
        f"<!-- learner {html.escape(learner)}, part {html.escape(part)} -->"
        f"<p>{passed} of {len(CASES)} tests passed.</p>"
        "<table><tr><th>call</th><th>expected</th><th>got</th><th></th></tr>"
        + "".join(rows)
        + "</table>"
        + errors
    )
    write_feedback(passed / len(CASES), report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
