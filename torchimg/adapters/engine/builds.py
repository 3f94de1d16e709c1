"""BuildKit builds through buildx (plain progress streamed), and its local cache."""

import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from torchimg import buildlog
from torchimg.adapters.engine._client import DockerException, docker, failed, first_line
from torchimg.adapters.engine.images import image_id
from torchimg.errors import ToolError
from torchimg.model import labels as label_keys


@dataclass(frozen=True)
class BuildResult:
    image_id: str
    seconds: float
    log: list[str]


def _compressed(compression: str, level: int | None) -> dict[str, str]:
    """zstd layers need OCI media types: a Docker schema 2 manifest listing them is pushed
    without complaint but no engine can pull it ("mismatched image rootfs and manifest layers")."""
    oci = {"oci-mediatypes": "true"} if compression != "gzip" else {}
    at = {"compression-level": str(level)} if level is not None else {}
    return {"compression": compression, "force-compression": "true", **at, **oci}


def build(
    *,
    context: Path,
    dockerfile: Path,
    target: str | None,
    tags: Sequence[str],
    build_args: Mapping[str, str],
    contexts: Mapping[str, Path],
    secrets: Sequence[str],
    labels: Mapping[str, str],
    what: str,
    cache: bool = True,
    builder: str | None = None,
    cache_ref: str | None = None,
    cache_export: bool = True,
    compression: str = "gzip",
    compression_level: int | None = None,
    attest: Sequence[str] = (),
    platforms: Sequence[str] = (),
) -> BuildResult:
    """Build one target through BuildKit, streaming its plain progress to stderr; the image is
    tagged only when the whole build succeeded. `cache_ref`: a registry cache (mode=max);
    `compression` (at `compression_level`, None: BuildKit's default): of every layer, the base's
    included; `attest`: provenance and/or sbom (releases;
    their timestamps make the image ID differ between identical builds, so none by default);
    `platforms`: one image per platform under one index (the containerd store keeps it)."""
    start, lines = time.monotonic(), []
    layers = _compressed(compression, compression_level)
    try:
        stream = docker.buildx.build(
            context,
            file=dockerfile,
            target=target,
            tags=list(tags),
            build_args=dict(build_args),
            build_contexts={k: str(v) for k, v in contexts.items()},
            secrets=list(secrets),
            labels={label_keys.BUILT_BY: "torchimg", **labels},
            cache=cache,
            builder=builder,
            platforms=list(platforms) or None,
            cache_from={"type": "registry", "ref": cache_ref} if cache_ref else None,
            # Every layer in the one compression asked for, even where BuildKit already holds a
            # blob in another (the base's, a cache's): the digest never depends on cache state
            # (at one level: a cached blob in the same compression is reused whatever its level).
            # The cache's layers share the image's blobs. `type=docker` is what `--load` is
            # (one export into the engine, for any builder) with the compression options.
            cache_to={"type": "registry", "ref": cache_ref, "mode": "max", **layers}
            if cache_ref and cache_export
            else None,
            output={"type": "docker", **layers},
            provenance={"mode": "max"} if "provenance" in attest else False,
            sbom=True if "sbom" in attest else None,
            progress="plain",
            stream_logs=True,
        )
        assert isinstance(stream, Iterator)
        for line in stream:
            lines.append(line.rstrip("\n"))
            print(line, end="", file=sys.stderr, flush=True)
    except DockerException as exc:
        if builder and not any(line.startswith("#") for line in lines):  # BuildKit never started
            raise ToolError(
                f"build of {what} failed: builder {builder!r}: {first_line(exc)}",
                "`docker buildx ls` lists the builders; create one with `docker buildx create`",
            ) from None
        raise ToolError(
            f"build of {what} failed: {buildlog.first_error(lines)}", "read the BuildKit log above"
        ) from None
    found = image_id(tags[0])
    if found is None:
        raise ToolError(f"build of {what} finished but {tags[0]} is not in the engine", "build again")
    return BuildResult(found, time.monotonic() - start, lines)


def prune_build_cache() -> None:
    """Empty BuildKit's local cache (the build report's "new runner" measurements)."""
    try:
        docker.buildx.prune(all=True)
    except DockerException as exc:
        raise failed("pruning the build cache", exc) from None
