"""The grade-submission and build-shim flows in-process against a real Prefect server."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import time
import urllib.request
from pathlib import Path

import pytest

from gradeflow import GradeRequest, GradeStatus

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def flow_env(
    prefect_api: str, gradeflow_home: Path, session_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    monkeypatch.setenv("GRADEFLOW_HOME", str(gradeflow_home))
    monkeypatch.setenv("GRADEFLOW_SHIM_CACHE", str(session_dir / "shim-cache"))
    return prefect_api


def api_post(url: str, body: dict[str, object]) -> object:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_a_graded_submission_gets_an_artifact_and_an_event(flow_env: str) -> None:
    from flows import grade_submission

    request = GradeRequest(
        assignment="py-fizzbuzz",
        submission="flow-full",
        submission_path=str(EXAMPLES / "py-fizzbuzz" / "submissions" / "full.py"),
        assignment_dir=str(EXAMPLES / "py-fizzbuzz"),
    )
    result = asyncio.run(grade_submission(request=request))
    assert result.status is GradeStatus.GRADED
    assert result.score == 10

    artifacts = api_post(
        f"{flow_env}/artifacts/filter",
        {"artifacts": {"key": {"any_": ["grade-py-fizzbuzz-flow-full"]}}},
    )
    assert isinstance(artifacts, list) and artifacts
    assert "10 / 10" in artifacts[0]["data"]

    deadline = time.monotonic() + 20
    events: list[dict[str, object]] = []
    while time.monotonic() < deadline and not events:
        page = api_post(
            f"{flow_env}/events/filter",
            {"filter": {"event": {"name": ["gradeflow.submission.graded"]},
                        "any_resource": {"id": ["gradeflow.submission.py-fizzbuzz.flow-full"]}}},
        )  # fmt: skip
        assert isinstance(page, dict)
        events = page["events"]
        time.sleep(0.5)
    assert events, "no gradeflow.submission.graded event reached the server"
    assert events[0]["payload"]["status"] == "graded"  # type: ignore[index]


def test_build_shim_with_unchanged_sources_does_not_invoke_cargo_again(
    flow_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows import build_shim_flow

    real_cargo = shutil.which("cargo")
    if real_cargo is None:
        pytest.skip("cargo is not installed")
    calls = tmp_path / "calls"
    wrapper = tmp_path / "cargo"
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexec {real_cargo} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("GRADEFLOW_CARGO", str(wrapper))
    monkeypatch.setenv("GRADEFLOW_SHIM_CACHE", str(tmp_path / "cache"))

    first = asyncio.run(build_shim_flow())
    second = asyncio.run(build_shim_flow())
    assert second.sha256 == first.sha256
    assert calls.read_text().count("build") == 1
    assert os.access(first.path, os.X_OK)
