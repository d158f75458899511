"""Build the static shim with cargo and prove it is fit to run in an empty container.

The build is keyed by a hash of the crate's sources: an artifact already built
from identical sources is reused without invoking cargo, which is what makes
``build_shim`` cheap as the first step of every grading run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from ._elf import read_elf_facts
from ._errors import ShimBuildError

__all__ = ["SHIM_TARGET", "ShimArtifact", "build_shim", "file_sha256", "shim_source_hash"]

SHIM_TARGET = "x86_64-unknown-linux-gnu"
_BINARY = "gradeflow-shim"
_SOURCE_GLOBS = ("Cargo.toml", "Cargo.lock", "src/**/*.rs", "build.rs")


@dataclass(frozen=True, slots=True)
class ShimArtifact:
    """A verified static shim binary.

    Attributes:
        path: the binary, inside the cache directory (treat as read-only).
        sha256: its digest; results record it as the shim's identity.
        size: bytes.
        target: the Rust target triple.
        source_hash: the hash of the sources it was built from.
        image: the ``FROM scratch`` image holding it, when one was packaged.
    """

    path: str
    sha256: str
    size: int
    target: str
    source_hash: str
    image: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def file_sha256(path: Path, *, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def shim_source_hash(source: Path) -> str:
    """sha256 over the crate's source paths and contents (target/ excluded)."""
    if not (source / "Cargo.toml").is_file():
        raise ShimBuildError(f"{source}: not the shim crate (no Cargo.toml)")
    digest = hashlib.sha256(SHIM_TARGET.encode())
    files = sorted({p for pattern in _SOURCE_GLOBS for p in source.glob(pattern) if p.is_file()})
    for path in files:
        digest.update(path.relative_to(source).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def build_shim(source: Path, cache_dir: Path, *, cargo: str = "cargo") -> tuple[ShimArtifact, bool]:
    """Return the verified shim for ``source``, building it only if needed.

    Returns:
        The artifact, and whether cargo ran.

    Raises:
        ShimBuildError: cargo is missing or failed, or the binary is not static.
    """
    source_hash = shim_source_hash(source)
    slot = cache_dir / source_hash[:32]
    cached = _load_cached(slot, source_hash)
    if cached is not None:
        return cached, False

    binary = _cargo_build(source, cargo)
    _verify_static(binary)
    slot.mkdir(parents=True, exist_ok=True)
    final = slot / _BINARY
    fd, tmp = tempfile.mkstemp(dir=slot, prefix=".shim-")
    os.close(fd)
    shutil.copyfile(binary, tmp)
    os.chmod(tmp, 0o555)
    os.replace(tmp, final)
    artifact = ShimArtifact(
        path=str(final),
        sha256=file_sha256(final),
        size=final.stat().st_size,
        target=SHIM_TARGET,
        source_hash=source_hash,
    )
    _write_record(slot, artifact)
    return artifact, True


def record_image(artifact: ShimArtifact, image: str) -> ShimArtifact:
    """Remember the scratch image packaged for ``artifact`` in its cache record."""
    updated = ShimArtifact(**{**asdict(artifact), "image": image})
    _write_record(Path(artifact.path).parent, updated)
    return updated


def _load_cached(slot: Path, source_hash: str) -> ShimArtifact | None:
    try:
        record = json.loads((slot / "artifact.json").read_text())
        artifact = ShimArtifact(**record)
    except (OSError, ValueError, TypeError):
        return None
    binary = Path(artifact.path)
    if artifact.source_hash != source_hash or not binary.is_file():
        return None
    if file_sha256(binary) != artifact.sha256:
        return None  # tampered or half-written: rebuild
    return artifact


def _write_record(slot: Path, artifact: ShimArtifact) -> None:
    fd, tmp = tempfile.mkstemp(dir=slot, prefix=".artifact-")
    with os.fdopen(fd, "w") as handle:
        handle.write(artifact.to_json())
    os.replace(tmp, slot / "artifact.json")


def _cargo_build(source: Path, cargo: str) -> Path:
    if shutil.which(cargo) is None:
        raise ShimBuildError(
            f"cargo not found ({cargo!r}): install the Rust toolchain "
            f"(https://rustup.rs, or Debian's 'cargo' package) with the {SHIM_TARGET} target, "
            "or set GRADEFLOW_CARGO to its path"
        )
    env = {
        **os.environ,
        "RUSTFLAGS": "-C target-feature=+crt-static",
        "CARGO_TERM_COLOR": "never",
    }
    command = [cargo, "build", "--release", "--locked", "--offline", "--target", SHIM_TARGET]
    if not (source / "Cargo.lock").is_file():
        command.remove("--locked")
    try:
        subprocess.run(
            command, cwd=source, env=env, check=True, capture_output=True, text=True, timeout=900
        )
    except subprocess.CalledProcessError as exc:
        tail = "\n".join(exc.stderr.splitlines()[-30:])
        raise ShimBuildError(
            f"cargo build failed in {source} (exit {exc.returncode}):\n{tail}"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise ShimBuildError(f"cargo build in {source} took longer than 900 s") from exc
    binary = source / "target" / SHIM_TARGET / "release" / _BINARY
    if not binary.is_file():
        raise ShimBuildError(f"cargo succeeded but {binary} does not exist")
    return binary


def _verify_static(binary: Path) -> None:
    try:
        facts = read_elf_facts(binary)
    except (OSError, ValueError) as exc:
        raise ShimBuildError(f"{binary}: cannot read as ELF: {exc}") from exc
    if facts.has_interp:
        raise ShimBuildError(f"{binary}: has a PT_INTERP segment (needs a dynamic loader)")
    if facts.needed_count:
        raise ShimBuildError(f"{binary}: needs {facts.needed_count} shared libraries (DT_NEEDED)")
    if facts.machine != "x86_64":
        raise ShimBuildError(f"{binary}: built for {facts.machine}, expected x86_64")
