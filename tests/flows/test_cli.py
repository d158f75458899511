"""The whole flow on the local backend through the CLI, against a real Prefect server."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GRADEFLOW = str(Path(sys.executable).parent / "gradeflow")


def example_cases() -> list[tuple[str, str, dict[str, object]]]:
    cases = []
    for expected_file in sorted(EXAMPLES.glob("*/expected.toml")):
        expected = tomllib.loads(expected_file.read_text())["submissions"]
        for name, want in sorted(expected.items()):
            cases.append((expected_file.parent.name, name, want))
    return cases


def run_cli(
    args: list[str], env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [GRADEFLOW, *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize(
    ("assignment", "submission", "expected"),
    example_cases(),
    ids=[f"{a}/{s}" for a, s, _ in example_cases()],
)
def test_every_example_submission_grades_as_expected(
    assignment: str, submission: str, expected: dict[str, object], cli_env: dict[str, str]
) -> None:
    directory = EXAMPLES / assignment
    done = run_cli(
        ["grade", str(directory), str(directory / "submissions" / submission), "--json"], cli_env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout
    result = json.loads(lines[0])
    assert result["status"] == expected["status"], result.get("reason")
    if "score" in expected:
        assert result["score"] == pytest.approx(expected["score"])
        assert result["max_score"] == pytest.approx(expected["max_score"])
    assert result["backend"] == "local"
    assert len(result["submission_sha256"]) == 64
    assert len(result["shim_sha256"]) == 64
    assert result["timings"]["total_ms"] >= result["timings"]["run_ms"]


def test_a_missing_submission_file_exits_2(cli_env: dict[str, str], tmp_path: Path) -> None:
    done = run_cli(["grade", str(EXAMPLES / "py-fizzbuzz"), str(tmp_path / "nope.py")], cli_env)
    assert done.returncode == 2
    assert "not found" in done.stderr


def test_an_unknown_backend_exits_2(cli_env: dict[str, str]) -> None:
    directory = EXAMPLES / "py-fizzbuzz"
    done = run_cli(
        ["grade", str(directory), str(directory / "submissions" / "full.py"), "-b", "k8s"], cli_env
    )
    assert done.returncode == 2
    assert "unknown backend" in done.stderr


def test_a_directory_without_assignment_toml_exits_2(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "s.py").write_text("x = 1\n")
    done = run_cli(["grade", str(tmp_path), str(tmp_path / "s.py")], cli_env)
    assert done.returncode == 2
    assert "assignment.toml" in done.stderr


def test_missing_cargo_fails_the_run_with_what_to_install(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**cli_env, "GRADEFLOW_CARGO": "no-such-cargo", "GRADEFLOW_SHIM_CACHE": str(tmp_path)}
    directory = EXAMPLES / "py-fizzbuzz"
    done = run_cli(["grade", str(directory), str(directory / "submissions" / "full.py")], env)
    assert done.returncode == 1
    assert "cargo not found" in done.stderr
    assert "Rust toolchain" in done.stderr


def test_grading_twice_returns_the_stored_result(cli_env: dict[str, str]) -> None:
    directory = EXAMPLES / "py-fizzbuzz"
    args = ["grade", str(directory), str(directory / "submissions" / "partial.py"), "--json"]
    first = json.loads(run_cli(args, cli_env).stdout)
    second = json.loads(run_cli(args, cli_env).stdout)
    assert second == first
    forced = json.loads(run_cli([*args, "--force"], cli_env).stdout)
    assert forced["attempt"] == 2
    assert forced["score"] == first["score"]


def test_demo_grades_every_example_as_expected(cli_env: dict[str, str]) -> None:
    done = run_cli(["demo", "--examples", str(EXAMPLES)], cli_env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    total = len(example_cases())
    assert done.stdout.count("✓") == total, done.stdout


def test_demo_reports_a_broken_example_and_still_grades_the_others(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    examples = tmp_path / "examples"
    examples.mkdir()
    (examples / "py-fizzbuzz").symlink_to(EXAMPLES / "py-fizzbuzz")
    broken = examples / "broken"
    (broken / "submissions").mkdir(parents=True)
    (broken / "submissions" / "s.py").write_text("x = 1\n")
    (broken / "assignment.toml").write_text(
        'id = "broken"\ntitle = "no local command"\n[grader]\nimage = "nope:latest"\n'
    )
    wide = {**cli_env, "COLUMNS": "400"}  # keep rich from wrapping the error cell
    done = run_cli(["demo", "--examples", str(examples)], wide, timeout=300)
    assert done.returncode == 1
    assert "local_command is required" in done.stdout
    assert done.stdout.count("✓") == 6


def test_shim_build_reports_the_verified_binary(cli_env: dict[str, str]) -> None:
    done = run_cli(["shim", "build", "--no-image"], cli_env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "sha256:" in done.stdout
    assert "x86_64-unknown-linux-gnu" in done.stdout
    assert "image:" not in done.stdout


def test_shim_build_packages_a_scratch_image_that_runs(cli_env: dict[str, str]) -> None:
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        pytest.skip("no Docker engine answers: the scratch image cannot be built here")
    done = run_cli(["shim", "build", "--image"], cli_env)
    assert done.returncode == 0, done.stderr[-2000:]
    image = next(line.split()[1] for line in done.stdout.splitlines() if line.startswith("image:"))
    assert image.startswith("gradeflow/shim:")
    inspect = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Config.Entrypoint}}", image],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "/gradeflow-shim" in inspect.stdout
    ran = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", image, "--version"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("gradeflow-shim ")
