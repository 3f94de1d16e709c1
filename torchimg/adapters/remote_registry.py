"""What a registry serves under a tag: its digest, its labels, whether it is our image.

Read through the engine's buildx (`imagetools inspect`), so docker's own credentials apply;
this module holds what the answers mean."""

import json

from torchimg.adapters import engine
from torchimg.errors import RefusedError
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
    found = json.loads(out) if out else None
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
    manifest = json.loads(raw) if raw else {}
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
    found = json.loads(raw)
    return isinstance(found, dict) and found.get("mediaType") in INDEX_TYPES


def platforms(ref: str) -> list[dict[str, object]]:
    """Each platform image the registry serves under `ref` (REPOSITORY@DIGEST of an index):
    platform, manifest digest, compressed size (config + layers), each read back by digest.
    Attestation manifests (platform unknown/unknown) are not platforms."""
    raw = engine.imagetools(ref)
    if raw is None:
        return []
    index = json.loads(raw)
    if not isinstance(index, dict) or index.get("mediaType") not in INDEX_TYPES:
        return []
    repository = ref.split("@", 1)[0]
    found: list[dict[str, object]] = []
    for entry in index.get("manifests") or []:
        p = entry.get("platform") or {}
        if p.get("os") in (None, "unknown"):
            continue
        child_raw = engine.imagetools(f"{repository}@{entry['digest']}")
        child = json.loads(child_raw) if child_raw else {}
        blobs = [child.get("config") or {}, *(child.get("layers") or [])]
        found.append(
            {
                "platform": "/".join(x for x in (p.get("os"), p.get("architecture"), p.get("variant")) if x),
                "digest": entry["digest"],
                "size": sum(int(b.get("size") or 0) for b in blobs),
                "served": bool(child_raw),
            }
        )
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


def release_files(repository: str, digest: str, files_digest: str | None = None) -> dict[str, bytes] | None:
    """The release manifest and notes attached beside `repository@digest` (those of
    RELEASE_FILES there, by name); None when none are. `files_digest`: read exactly those (the
    caller's own lookup of their tag). Raises RefusedError when the tag holds something else."""
    return engine.read_files(f"{repository}:{tags.release_files(digest)}", RELEASE_FILES, files_digest)


def attached_release(repository: str, digest: str, files_digest: str | None = None) -> bytes | None:
    """The release manifest (JSON bytes) attached beside `repository@digest`; None when none is."""
    found = release_files(repository, digest, files_digest)
    if found is None:
        return None
    if RELEASE_FILES[0] not in found:
        ref = f"{repository}:{tags.release_files(digest)}"
        raise RefusedError(f"{ref} holds no {RELEASE_FILES[0]}", f"do not trust it; remove that tag: {ref}")
    return found[RELEASE_FILES[0]]
