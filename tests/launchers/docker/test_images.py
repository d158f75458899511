"""Building grader images without a registry, and the CLI's housekeeping commands."""

from __future__ import annotations

from pathlib import Path

import docker
import pytest
from typer.testing import CliRunner

from flows.cli import app
from gradeflow import ConfigurationError
from gradeflow._images import apt_mirror, build_assignment_image


def test_the_mirror_comes_from_apts_deb822_sources_skipping_security(tmp_path: Path) -> None:
    sources = tmp_path / "debian.sources"
    sources.write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n"
    )
    assert apt_mirror((sources,)) == "http://mirror.example/debian"


def test_the_mirror_comes_from_a_one_line_sources_list(tmp_path: Path) -> None:
    sources = tmp_path / "sources.list"
    sources.write_text("# comment\ndeb [arch=amd64] http://local.mirror/debian bookworm main\n")
    assert apt_mirror((tmp_path / "missing", sources)) == "http://local.mirror/debian"


def test_without_apt_sources_the_mirror_is_debians_own(tmp_path: Path) -> None:
    assert apt_mirror((tmp_path / "missing",)) == "http://deb.debian.org/debian"


@pytest.mark.docker
def test_building_an_assignment_without_a_dockerfile_is_a_configuration_error(
    docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    (tmp_path / "assignment.toml").write_text(
        'id = "nodockerfile"\ntitle = "t"\n[grader]\nimage = "gradeflow-tests/none:1"\n'
    )
    with pytest.raises(ConfigurationError, match="no Dockerfile"):
        build_assignment_image(docker_client, tmp_path)


@pytest.mark.docker
def test_the_sweep_command_reports_what_it_removed(docker_client: docker.DockerClient) -> None:
    outcome = CliRunner().invoke(app, ["sweep", "--older-than", "86400000"])
    assert outcome.exit_code == 0, outcome.output
    assert "removed 0 container(s), 0 volume(s)" in outcome.output
