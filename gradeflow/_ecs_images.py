"""What an image would have run: its ENTRYPOINT + CMD, read from its config blob.

The ecs backend replaces a grader's entry point with the shim, and Docker/ECS
drop the image's CMD once an entry point is set, so the shim must be given
the original program explicitly. It comes from ``[grader] entrypoint`` /
``command`` in assignment.toml, or from the image config in ECR:
``BatchGetImage`` gives the manifest (an index is resolved to linux/amd64),
its ``config.digest`` is fetched through ``GetDownloadUrlForLayer`` and the
blob's sha256 is checked against that digest before it is believed.
"""

from __future__ import annotations

import hashlib
import json
import re
import urllib.request
from dataclasses import dataclass
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from ._assignment import Assignment
from ._errors import ConfigurationError, InfraError

__all__ = ["EcrImageConfigSource", "ImageConfig", "ImageConfigSource", "grader_program"]

_ECR_IMAGE = re.compile(
    r"^(?P<registry>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/"
    r"(?P<repo>[a-z0-9._/-]+?)(?::(?P<tag>[A-Za-z0-9_.-]{1,128}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)
_INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}
_ACCEPTED = [
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    *_INDEX_TYPES,
]
_MAX_CONFIG_BYTES = 4 << 20


@dataclass(frozen=True, slots=True)
class ImageConfig:
    """The parts of an image config the shim needs, and the manifest digest (identity)."""

    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    digest: str


class ImageConfigSource(Protocol):
    """Resolves an image reference to its config (ECR, a local engine in tests...)."""

    def __call__(self, image: str) -> ImageConfig: ...


def grader_program(assignment: Assignment, source: ImageConfigSource | None) -> tuple[str, ...]:
    """ENTRYPOINT + CMD the shim must run, following Docker's override rules.

    An entrypoint given in assignment.toml resets the image's CMD (as ``docker
    run --entrypoint`` does) unless a command is given too; a command alone
    replaces only CMD.
    """
    spec = assignment.grader
    if spec.entrypoint is not None:
        return (*spec.entrypoint, *(spec.command or ()))
    if spec.image is None:
        raise ConfigurationError(f"assignment {assignment.id}: [grader] image is required for ecs")
    if source is None:
        raise ConfigurationError(
            f"assignment {assignment.id}: cannot read the ENTRYPOINT of {spec.image} "
            "(not an ECR image); set [grader] entrypoint (and command) in assignment.toml"
        )
    config = source(spec.image)
    program = (*config.entrypoint, *(spec.command if spec.command is not None else config.cmd))
    if not program:
        raise ConfigurationError(
            f"image {spec.image} has neither ENTRYPOINT nor CMD; set [grader] entrypoint"
        )
    return program


class EcrImageConfigSource:
    """Reads image configs from ECR with a boto3 ``ecr`` client; caches by reference."""

    def __init__(self, ecr: Any, *, fetch: Any = None) -> None:
        self._ecr = ecr
        self._fetch = fetch or _http_get
        self._cache: dict[str, ImageConfig] = {}

    def __call__(self, image: str) -> ImageConfig:
        if image in self._cache:
            return self._cache[image]
        match = _ECR_IMAGE.match(image)
        if match is None:
            raise ConfigurationError(
                f"{image} is not an ECR image reference; set [grader] entrypoint in assignment.toml"
            )
        repo, registry = match["repo"], match["registry"]
        image_id = {"imageDigest": match["digest"]} if match["digest"] else {
            "imageTag": match["tag"] or "latest"
        }  # fmt: skip
        manifest, media_type, digest = self._manifest(image, registry, repo, image_id)
        if media_type in _INDEX_TYPES or manifest.get("mediaType") in _INDEX_TYPES:
            chosen = _pick_amd64(image, manifest)
            manifest, media_type, digest = self._manifest(
                image, registry, repo, {"imageDigest": chosen}
            )
        config_digest = str(manifest.get("config", {}).get("digest", ""))
        if not config_digest.startswith("sha256:"):
            raise InfraError(f"{image}: manifest has no config digest", retryable=False)
        try:
            url = self._ecr.get_download_url_for_layer(
                registryId=registry, repositoryName=repo, layerDigest=config_digest
            )["downloadUrl"]
        except ClientError as exc:
            raise _translate(exc, image) from exc
        except BotoCoreError as exc:
            raise InfraError(f"{image}: GetDownloadUrlForLayer failed: {exc}") from exc
        blob = self._fetch(url)
        if "sha256:" + hashlib.sha256(blob).hexdigest() != config_digest:
            raise InfraError(f"{image}: config blob does not hash to {config_digest}")
        body = json.loads(blob).get("config") or {}
        config = ImageConfig(
            entrypoint=tuple(body.get("Entrypoint") or ()),
            cmd=tuple(body.get("Cmd") or ()),
            digest=digest,
        )
        self._cache[image] = config
        return config

    def _manifest(
        self, image: str, registry: str, repo: str, image_id: dict[str, str]
    ) -> tuple[dict[str, Any], str, str]:
        try:
            response = self._ecr.batch_get_image(
                registryId=registry,
                repositoryName=repo,
                imageIds=[image_id],
                acceptedMediaTypes=_ACCEPTED,
            )
        except ClientError as exc:
            raise _translate(exc, image) from exc
        except BotoCoreError as exc:
            raise InfraError(f"{image}: BatchGetImage failed: {exc}") from exc
        images = response.get("images") or []
        if not images:
            reasons = "; ".join(
                f"{f.get('failureCode')}: {f.get('failureReason')}"
                for f in response.get("failures", [])
            )
            raise ConfigurationError(f"{image}: not found in ECR ({reasons or 'no image'})")
        found = images[0]
        manifest = json.loads(found["imageManifest"])
        media_type = found.get("imageManifestMediaType") or manifest.get("mediaType", "")
        return manifest, str(media_type), str(found.get("imageId", {}).get("imageDigest", ""))


def _pick_amd64(image: str, index: dict[str, Any]) -> str:
    for entry in index.get("manifests", []):
        platform = entry.get("platform", {})
        if platform.get("os") == "linux" and platform.get("architecture") == "amd64":
            return str(entry["digest"])
    raise ConfigurationError(f"{image}: the image index has no linux/amd64 manifest")


def _translate(exc: ClientError, image: str) -> Exception:
    code = exc.response.get("Error", {}).get("Code", "")
    if code in {"RepositoryNotFoundException", "ImageNotFoundException", "LayersNotFoundException"}:
        return ConfigurationError(f"{image}: {code}")
    if code in {"AccessDeniedException", "UnauthorizedException"}:
        return ConfigurationError(f"{image}: not allowed to read it from ECR ({code})")
    return InfraError(f"{image}: ECR {code}")


def _http_get(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            data: bytes = response.read(_MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise InfraError(f"downloading an image config failed: {exc}") from exc
    if len(data) > _MAX_CONFIG_BYTES:
        raise InfraError("image config is larger than 4 MiB")
    return data
