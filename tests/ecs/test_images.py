"""The grader's original program: from assignment.toml, or from the image config in ECR."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from botocore.stub import Stubber

from gradeflow import ConfigurationError, InfraError, load_assignment
from gradeflow._ecs_images import EcrImageConfigSource, ImageConfig, grader_program

from .conftest import EXAMPLES, client

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/graders/fizz:1"
CONFIG = json.dumps({"config": {"Entrypoint": ["python3"], "Cmd": ["/grader/run_tests.py"]}})
CONFIG_DIGEST = "sha256:" + hashlib.sha256(CONFIG.encode()).hexdigest()
AMD64 = "sha256:" + "a" * 64
INDEX = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [
        {"digest": "sha256:" + "b" * 64, "platform": {"os": "linux", "architecture": "arm64"}},
        {"digest": AMD64, "platform": {"os": "linux", "architecture": "amd64"}},
    ],
}
MANIFEST = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"digest": CONFIG_DIGEST},
}


def image(manifest: dict[str, Any], digest: str) -> dict[str, Any]:
    return {
        "images": [
            {
                "imageId": {"imageDigest": digest},
                "imageManifest": json.dumps(manifest),
                "imageManifestMediaType": manifest["mediaType"],
            }
        ],
        "failures": [],
    }


def test_an_index_is_resolved_to_amd64_and_the_config_blob_is_verified() -> None:
    ecr = client("ecr")
    with Stubber(ecr) as stub:
        stub.add_response("batch_get_image", image(INDEX, "sha256:" + "c" * 64))
        stub.add_response("batch_get_image", image(MANIFEST, AMD64))
        stub.add_response(
            "get_download_url_for_layer",
            {"downloadUrl": "https://layers/x", "layerDigest": CONFIG_DIGEST},
        )
        config = EcrImageConfigSource(ecr, fetch=lambda url: CONFIG.encode())(IMAGE)
    assert config == ImageConfig(("python3",), ("/grader/run_tests.py",), AMD64)


def test_a_config_blob_that_does_not_hash_to_its_digest_is_refused() -> None:
    ecr = client("ecr")
    with Stubber(ecr) as stub:
        stub.add_response("batch_get_image", image(MANIFEST, AMD64))
        stub.add_response("get_download_url_for_layer", {"downloadUrl": "https://layers/x"})
        with pytest.raises(InfraError, match="does not hash"):
            EcrImageConfigSource(ecr, fetch=lambda url: b"{}")(IMAGE)


def test_a_missing_repository_is_a_configuration_error() -> None:
    ecr = client("ecr")
    with Stubber(ecr) as stub:
        stub.add_client_error("batch_get_image", "RepositoryNotFoundException", "no repo")
        with pytest.raises(ConfigurationError, match="RepositoryNotFoundException"):
            EcrImageConfigSource(ecr)(IMAGE)


def test_assignment_toml_entrypoint_wins_and_resets_cmd() -> None:
    spec = load_assignment(EXAMPLES / "py-fizzbuzz")
    grader = spec.grader.model_copy(update={"entrypoint": ("python3", "/g.py")})
    assert grader_program(spec.model_copy(update={"grader": grader}), None) == ("python3", "/g.py")


def test_a_command_alone_replaces_only_cmd() -> None:
    spec = load_assignment(EXAMPLES / "py-fizzbuzz")
    grader = spec.grader.model_copy(update={"command": ("/other.py",)})
    source = lambda image: ImageConfig(("python3",), ("/grader/run_tests.py",), "d")  # noqa: E731
    program = grader_program(spec.model_copy(update={"grader": grader}), source)
    assert program == ("python3", "/other.py")


def test_a_non_ecr_image_without_an_entrypoint_says_what_to_set() -> None:
    spec = load_assignment(EXAMPLES / "py-fizzbuzz")
    with pytest.raises(ConfigurationError, match=r"\[grader\] entrypoint"):
        grader_program(spec, None)
