"""What a registry serves under a tag: its digest, its labels, whether it is our image.

Read through the engine's buildx (`imagetools inspect`), so docker's own credentials apply;
this module holds what the answers mean."""

import json
from dataclasses import dataclass
from typing import Any

from torchimg.adapters import engine
from torchimg.errors import RefusedError, ToolError
from torchimg.model import labels as label_keys
from torchimg.model import tags


def digest(ref: str) -> str | None:
    """The digest the registry serves for `ref` (a tag), or None when the tag does not exist."""
    return engine.manifest_digest(ref)


def labels(ref: str) -> dict[str, str]:
    """The labels in the image config the registry serves for `ref` ({} when none). For an
    index of several platforms (buildx then answers one image per platform), the labels every
    platform carries with the same value: the commit's, which the build gives each alike."""
    out = engine.imagetools(ref, "{{json .Image}}")
    found = engine.buildx_json(ref, out) if out else None
    if not isinstance(found, dict):
        return {}
    images = [found] if "config" in found else [v for v in found.values() if isinstance(v, dict)]
    each = [dict((image.get("config") or {}).get("Labels") or {}) for image in images]
    if not each:
        return {}
    return {k: v for k, v in each[0].items() if all(other.get(k) == v for other in each[1:])}


def serves(ref: str, local_id: str) -> str | None:
    """The digest under `ref` if the registry serves exactly the local image `local_id`, else None.

    With the containerd image store a local image ID is its manifest digest; with the classic
    store it is the config digest, which the registry's manifest names."""
    found = digest(ref)
    if found is None or found == local_id:
        return found
    raw = engine.imagetools(ref)
    manifest = engine.buildx_json(ref, raw) if raw else {}
    config = (manifest.get("config") or {}).get("digest") if isinstance(manifest, dict) else None
    return found if config == local_id else None


INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)


def is_index(ref: str) -> bool | None:
    """Whether `ref` names an image index (None: no such reference). Promotion copies an index
    byte for byte; a single manifest would be wrapped in a new index with another digest."""
    raw = engine.imagetools(ref)
    if raw is None:
        return None
    found = engine.buildx_json(ref, raw)
    return isinstance(found, dict) and found.get("mediaType") in INDEX_TYPES


def platforms(ref: str) -> list[dict[str, object]]:
    """Each platform image the registry serves under `ref` (REPOSITORY@DIGEST of an index):
    platform, manifest digest, compressed size (config + layers), each read back by digest.
    Attestation manifests (platform unknown/unknown) are not platforms."""
    raw = engine.imagetools(ref)
    if raw is None:
        return []
    index = engine.buildx_json(ref, raw)
    if not isinstance(index, dict) or index.get("mediaType") not in INDEX_TYPES:
        return []
    repository = ref.split("@", 1)[0]
    found: list[dict[str, object]] = []
    try:
        for entry in index.get("manifests") or []:
            p = entry.get("platform") or {}
            if p.get("os") in (None, "unknown"):
                continue
            child_ref = f"{repository}@{entry['digest']}"
            child_raw = engine.imagetools(child_ref)
            child = engine.buildx_json(child_ref, child_raw) if child_raw else {}
            blobs = [child.get("config") or {}, *(child.get("layers") or [])]
            found.append(
                {
                    "platform": "/".join(
                        x for x in (p.get("os"), p.get("architecture"), p.get("variant")) if x
                    ),
                    "digest": entry["digest"],
                    "size": sum(int(b.get("size") or 0) for b in blobs),
                    "served": bool(child_raw),
                }
            )
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise ToolError(
            f"{ref}: the registry serves a malformed image index ({type(exc).__name__}: {exc})"[:300],
            "check the registry; push again",
        ) from None
    return found


RELEASE_FILES = ("release.json", "release.md")


def attach_release(repository: str, digest: str, manifest: bytes, notes: bytes) -> str:
    """Put a release's manifest (JSON) and notes (Markdown) beside its image, under
    `repository:sha256-<hex>.release`; return the digest the registry serves there."""
    return engine.push_files(
        f"{repository}:{tags.release_files(digest)}",
        dict(zip(RELEASE_FILES, (manifest, notes), strict=True)),
        {label_keys.RELEASE_OF: f"{repository}@{digest}"},
    )


@dataclass(frozen=True)
class Release:
    """The release files attached beside an image, read back and checked to be about it."""

    manifest: dict[str, Any]  # release.json, parsed
    manifest_bytes: bytes  # release.json as attached (what CI signed)
    notes: bytes  # release.md


def release_of(ref: str, digest: str, files: dict[str, bytes]) -> Release:
    """The files read from `ref`, the tag beside `digest`, as a Release. Raises RefusedError,
    with the tag to remove, when they are not both there or the manifest is not one of `digest`:
    a registry's content is not trusted, and no retry changes it."""
    fix = f"do not trust it; remove that tag from the registry (a push attaches the files anew): {ref}"
    if missing := [name for name in RELEASE_FILES if name not in files]:
        raise RefusedError(f"{ref}: no {' or '.join(missing)} there", fix)
    raw, notes = (files[name] for name in RELEASE_FILES)
    try:
        manifest = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise RefusedError(f"{ref}: {RELEASE_FILES[0]} is not JSON ({exc})"[:300], fix) from None
    if not isinstance(manifest, dict) or manifest.get("digest") != digest:
        raise RefusedError(f"{ref}: {RELEASE_FILES[0]} is not the manifest of the image it is beside", fix)
    return Release(manifest, raw, notes)


def attached_release(repository: str, digest: str, files_digest: str | None = None) -> Release | None:
    """The release files attached beside `repository@digest`; None when none are. `files_digest`:
    read exactly those (the caller's own lookup of their tag). Raises RefusedError when the tag
    holds something else, ToolError when the registry or engine fails."""
    ref = f"{repository}:{tags.release_files(digest)}"
    found = engine.read_files(ref, RELEASE_FILES, files_digest)
    return None if found is None else release_of(ref, digest, found)
