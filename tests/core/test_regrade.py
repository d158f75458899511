"""The regrade's decisions, without Prefect: selection, planning, diffs, pacing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gradeflow import GradeResult, GraderIdentity, GradeStatus
from gradeflow._pipeline import publish_result
from gradeflow._regrade import (
    RegradeItem,
    StoredSubmission,
    TokenBucket,
    diff_scores,
    idempotency_key,
    latest_results,
    list_submissions,
    plan_regrade,
    results_csv,
    score_histogram,
    select_submissions,
)
from gradeflow.storage import LocalStore, manifest_key, submission_key

GRADER = GraderIdentity(digest="sha256:" + "a" * 64)
SHIM = "b" * 64


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def _upload(store: LocalStore, submission: str, student: str | None, content: bytes,
            uploaded_at: str) -> str:  # fmt: skip
    import hashlib

    sha = hashlib.sha256(content).hexdigest()
    key = submission_key("hw1", submission, sha, "py")
    store.put_bytes(key, content)
    manifest = {"filename": "a.py", "student": student, "uploaded_at": uploaded_at}
    store.put_bytes(manifest_key("hw1", submission, sha), json.dumps(manifest).encode())
    return sha


def _result(submission: str, attempt: int, score: float | None, *, sha: str,
            grader: GraderIdentity = GRADER, shim: str = SHIM,
            status: GradeStatus = GradeStatus.GRADED,
            graded_at: datetime | None = None) -> GradeResult:  # fmt: skip
    return GradeResult(
        assignment="hw1", submission=submission, attempt=attempt, status=status, score=score,
        max_score=10, submission_sha256=sha, grader=grader, shim_sha256=shim, backend="local",
        run_id="r", graded_at=graded_at or datetime.now(UTC),
    )  # fmt: skip


def _item(previous: GradeResult | None = None, attempt: int = 1) -> RegradeItem:
    sub = StoredSubmission("hw1", "s1", "k", "c" * 64, "ada", None, None)
    return RegradeItem(sub, previous, None, attempt)


def test_listing_gives_one_entry_per_submission_with_its_manifest(store: LocalStore) -> None:
    _upload(store, "s1", "ada", b"one", "2026-01-01T00:00:00+00:00")
    _upload(store, "s2", "bob", b"two", "2026-01-02T00:00:00+00:00")
    listed = list_submissions(store, "hw1")
    assert [(s.submission, s.student) for s in listed] == [("s1", "ada"), ("s2", "bob")]


def test_a_resubmitted_id_counts_once_by_its_newest_upload(store: LocalStore) -> None:
    _upload(store, "s1", "ada", b"old", "2026-01-01T00:00:00+00:00")
    newest = _upload(store, "s1", "ada", b"new", "2026-01-03T00:00:00+00:00")
    assert [s.sha256 for s in list_submissions(store, "hw1")] == [newest]


def test_selection_keeps_each_students_latest_submission(store: LocalStore) -> None:
    _upload(store, "s1", "ada", b"1", "2026-01-01T00:00:00+00:00")
    _upload(store, "s2", "ada", b"2", "2026-01-02T00:00:00+00:00")
    _upload(store, "s3", "bob", b"3", "2026-01-01T00:00:00+00:00")
    chosen = select_submissions(list_submissions(store, "hw1"))
    assert [s.submission for s in chosen] == ["s2", "s3"]


def test_selection_of_all_keeps_every_submission(store: LocalStore) -> None:
    _upload(store, "s1", "ada", b"1", "2026-01-01T00:00:00+00:00")
    _upload(store, "s2", "ada", b"2", "2026-01-02T00:00:00+00:00")
    chosen = select_submissions(list_submissions(store, "hw1"), all_submissions=True)
    assert [s.submission for s in chosen] == ["s1", "s2"]


def test_a_submission_graded_by_the_same_grader_and_shim_is_done(store: LocalStore) -> None:
    sha = _upload(store, "s1", "ada", b"1", "2026-01-01T00:00:00+00:00")
    publish_result(store, _result("s1", 1, 5, sha=sha))
    [item] = plan_regrade(store, list_submissions(store, "hw1"), grader=GRADER, shim_sha256=SHIM)
    assert item.done is not None and item.done.attempt == 1


def test_a_new_shim_means_grading_again_as_the_next_attempt(store: LocalStore) -> None:
    sha = _upload(store, "s1", "ada", b"1", "2026-01-01T00:00:00+00:00")
    publish_result(store, _result("s1", 1, 5, sha=sha, shim="d" * 64))
    [item] = plan_regrade(store, list_submissions(store, "hw1"), grader=GRADER, shim_sha256=SHIM)
    assert item.done is None and item.attempt == 2 and item.previous is not None


def test_force_regrades_what_was_done_before_the_regrade_began(store: LocalStore) -> None:
    sha = _upload(store, "s1", "ada", b"1", "2026-01-01T00:00:00+00:00")
    began = datetime.now(UTC)
    publish_result(store, _result("s1", 1, 5, sha=sha, graded_at=began - timedelta(hours=1)))
    [item] = plan_regrade(store, list_submissions(store, "hw1"), grader=GRADER,
                          shim_sha256=SHIM, force=True, since=began)  # fmt: skip
    assert item.done is None and item.attempt == 2


def test_a_resumed_forced_regrade_keeps_what_it_already_graded(store: LocalStore) -> None:
    sha = _upload(store, "s1", "ada", b"1", "2026-01-01T00:00:00+00:00")
    began = datetime.now(UTC) - timedelta(minutes=5)
    publish_result(store, _result("s1", 2, 5, sha=sha))
    [item] = plan_regrade(store, list_submissions(store, "hw1"), grader=GRADER,
                          shim_sha256=SHIM, force=True, since=began)  # fmt: skip
    assert item.done is not None


def test_the_idempotency_key_is_the_same_for_the_same_plan() -> None:
    assert idempotency_key(_item(), GRADER, SHIM) == idempotency_key(_item(), GRADER, SHIM)
    assert idempotency_key(_item(attempt=2), GRADER, SHIM) != idempotency_key(_item(), GRADER, SHIM)


@pytest.mark.parametrize(
    ("old", "new", "change"),
    [(5, 7, "up"), (7, 5, "down"), (5, 5, "same"), (None, 5, "new")],
)
def test_score_changes_are_classified(old: float | None, new: float, change: str) -> None:
    previous = None if old is None else _result("s1", 1, old, sha="c" * 64)
    assert diff_scores(_item(previous), _result("s1", 2, new, sha="c" * 64)).change == change


def test_a_result_that_is_not_graded_is_an_error() -> None:
    new = _result("s1", 2, None, sha="c" * 64, status=GradeStatus.TIMED_OUT)
    assert diff_scores(_item(), new).change == "error"


def test_a_failed_run_is_an_error() -> None:
    assert diff_scores(_item(), None).change == "error"


def test_the_histogram_puts_full_marks_in_the_last_bin() -> None:
    results = [_result("s", 1, score, sha="c" * 64) for score in (0, 4.5, 10, 10)]
    assert score_histogram(results) == [1, 0, 0, 0, 1, 0, 0, 0, 0, 2]


def test_the_token_bucket_allows_a_burst_then_paces() -> None:
    bucket = TokenBucket(rate=2, burst=2)
    waits = [bucket.reserve(0.0) for _ in range(4)]
    assert waits == [0.0, 0.0, 0.5, 1.0]


def test_the_token_bucket_refills_with_time() -> None:
    bucket = TokenBucket(rate=1, burst=1)
    assert bucket.reserve(0.0) == 0.0
    assert bucket.reserve(1.0) == 0.0


def test_latest_results_follow_the_latest_pointer(store: LocalStore) -> None:
    publish_result(store, _result("s1", 1, 5, sha="c" * 64))
    publish_result(store, _result("s1", 2, 8, sha="c" * 64))
    assert [r.score for r in latest_results(store, "hw1")] == [8]


def test_results_csv_has_a_header_and_one_row_per_result(store: LocalStore) -> None:
    publish_result(store, _result("s1", 1, 5, sha="c" * 64))
    lines = results_csv(latest_results(store, "hw1")).splitlines()
    assert lines[0].startswith("assignment,submission,student") and lines[1].startswith("hw1,s1,")


def test_the_regrade_core_does_not_import_prefect() -> None:
    import subprocess
    import sys

    code = (
        "import sys, gradeflow._regrade;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'prefect', 'prefect_aws'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
