"""The engine's side of registries: what a tag names there (buildx imagetools, with
docker's credentials), and pushes."""

import json
import re
import sys
from collections.abc import Iterable
from typing import cast

from torchimg.adapters.engine._client import DockerException, docker, first_line, run_cli
from torchimg.adapters.engine.images import image_id, preflight, tag, untag
from torchimg.errors import ToolError

_NOT_FOUND = ("not found", "manifest unknown", "name unknown", "no such manifest")
_PUSHED_DIGEST = re.compile(r"digest: (?P<digest>sha256:[0-9a-f]{64})")


def imagetools(ref: str, fmt: str | None = None) -> str | None:
    """`docker buildx imagetools inspect` (docker's credentials); None: the registry has no such tag."""
    try:
        how = ["--format", fmt] if fmt else ["--raw"]  # --raw: the manifest (or index) itself
        return str(run_cli([*docker.docker_cmd, "buildx", "imagetools", "inspect", ref, *how]))
    except DockerException as exc:
        if any(s in (exc.stderr or str(exc)).lower() for s in _NOT_FOUND):
            return None
        raise ToolError(
            f"cannot read {ref} from its registry ({first_line(exc)})",
            "check that the registry answers and that `docker login` has credentials for it",
        ) from None


def manifest_digest(ref: str) -> str | None:
    out = imagetools(ref, "{{json .Manifest}}")
    return str(json.loads(out)["digest"]) if out else None


def push_as(source: str, ref: str, keep_tag: bool = False) -> str:
    """Push the local image `source` under `ref` (a tag added for the push, removed after unless
    kept), echoing progress; return the digest the engine reports."""
    tag(source, ref)
    lines: list[str] = []
    try:
        stream = docker.image.push(ref, stream_logs=True)
        assert stream is not None
        for _, chunk in stream:
            lines.append(chunk.decode(errors="replace"))
            print(lines[-1], end="" if lines[-1].endswith("\n") else "\n", file=sys.stderr, flush=True)
    except DockerException as exc:
        preflight(buildx=False)  # the engine itself not answering is said as such, with its fix
        raise ToolError(
            f"push of {ref} failed ({first_line(exc)})",
            "check that the registry answers (`inv registry status`) and `docker login` for it; "
            "then push again: nothing after the failed step was changed",
        ) from None
    finally:
        if not keep_tag:
            untag(ref)
    found = _PUSHED_DIGEST.findall("".join(lines))
    if not found:
        raise ToolError(f"push of {ref} reported no digest", "push again")
    return str(found[-1])


def pull(ref: str, platform: str | None = None) -> str:
    """Pull `ref` (a reference with a digest) into the engine; return its local image ID.
    `platform`: that platform's image of an index (the engine's own by default)."""
    try:
        stream = cast(
            Iterable[tuple[str, bytes]], docker.image.pull(ref, stream_logs=True, platform=platform)
        )
        for _, chunk in stream:
            line = chunk.decode(errors="replace")
            print(line, end="" if line.endswith("\n") else "\n", file=sys.stderr, flush=True)
    except DockerException as exc:
        preflight(buildx=False)  # the engine itself not answering is said as such, with its fix
        raise ToolError(
            f"cannot pull {ref} ({first_line(exc)})",
            "check that the registry answers and that `docker login` has credentials for it",
        ) from None
    found = image_id(ref)
    if found is None:
        raise ToolError(f"{ref} was pulled but the engine does not list it", "pull it again")
    return found


def copy(source: str, target: str) -> None:
    """`buildx imagetools create --tag TARGET SOURCE`: the registry copies SOURCE's index as is
    (same bytes, same digest; blobs mounted, not re-uploaded, within one registry)."""
    try:
        create = [*docker.docker_cmd, "buildx", "imagetools", "create", "--progress=plain"]
        run_cli([*create, "--tag", target, source])
    except DockerException as exc:
        preflight(buildx=False)
        raise ToolError(
            f"cannot copy {source} to {target} ({first_line(exc)})",
            "check that the registry answers and that `docker login` has credentials for it; "
            "then promote again: nothing after the failed step was changed",
        ) from None


def require_base(ref: str) -> str:
    """Check the base image exists locally or in its registry; return its local ID or digest."""
    if local := image_id(ref):
        return local
    try:
        digest = manifest_digest(ref)
        why = "" if digest else "no such tag there"
    except ToolError as exc:
        digest, why = None, exc.what.split("(", 1)[-1].rstrip(")")
    if digest is None:
        raise ToolError(
            f"base image {ref} is neither in the local engine nor reachable in its registry ({why})",
            f"`docker pull {ref}`, or pass another base with --base (a local image works)",
        )
    return digest
