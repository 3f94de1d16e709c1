"""The engine's side of registries: what a tag names there (buildx imagetools, with
docker's credentials), and pushes."""

import hashlib
import io
import json
import posixpath
import re
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from torchimg import compression, userfiles
from torchimg.adapters.engine._client import DockerException, docker, first_line, run_cli
from torchimg.adapters.engine.images import (
    CONTAINERD_STORE_FIX,
    containerd_store,
    image_id,
    preflight,
    tag,
    untag,
)
from torchimg.errors import PipelineError, RefusedError, ToolError
from torchimg.model import labels as label_keys

_NOT_FOUND = ("not found", "manifest unknown", "name unknown", "no such manifest")
# ... but not a credential helper or program that is missing: that is no answer about the tag
_NOT_AN_ANSWER = ("error getting credentials", "executable file not found")
_PUSHED_DIGEST = re.compile(r"digest: (?P<digest>sha256:[0-9a-f]{64})")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def imagetools(ref: str, fmt: str | None = None) -> str | None:
    """`docker buildx imagetools inspect` (docker's credentials); None: the registry has no such tag."""
    try:
        how = ["--format", fmt] if fmt else ["--raw"]  # --raw: the manifest (or index) itself
        return str(run_cli([*docker.docker_cmd, "buildx", "imagetools", "inspect", ref, *how]))
    except UnicodeDecodeError:  # an error message that is not UTF-8: a registry's odd answer
        raise ToolError(
            f"cannot read {ref} from its registry (an answer that is not UTF-8)",
            "check that the registry answers and that `docker login` has credentials for it",
        ) from None
    except DockerException as exc:
        said = (exc.stderr or str(exc)).lower()
        if any(s in said for s in _NOT_FOUND) and not any(s in said for s in _NOT_AN_ANSWER):
            return None
        raise ToolError(
            f"cannot read {ref} from its registry ({first_line(exc)})",
            "check that the registry answers and that `docker login` has credentials for it",
        ) from None


def buildx_json(ref: str, out: str) -> Any:
    """buildx's formatted answer about `ref` as JSON: one that is not is a failure of buildx or
    of the registry's answer, not a reason to stop with a traceback."""
    try:
        return json.loads(out)
    except (ValueError, RecursionError):
        raise ToolError(
            f"{ref}: `docker buildx imagetools inspect` answered no JSON ({out[:80]!r})",
            "check that the registry answers, then run it again",
        ) from None


def manifest_digest(ref: str) -> str | None:
    """The digest the registry serves for `ref`; None when it has no such tag."""
    out = imagetools(ref, "{{json .Manifest}}")
    if not out:
        return None
    found = buildx_json(ref, out)
    digest = found.get("digest") if isinstance(found, dict) else None
    if not (isinstance(digest, str) and _DIGEST.fullmatch(digest)):
        raise ToolError(f"{ref}: the registry's answer names no digest ({out[:80]!r})", "run it again")
    return digest


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


def _engine_builder() -> str:
    """The buildx builder of the engine itself (the docker driver, named after the current
    context), whatever builder `docker buildx use` made current: its pushes and pulls go through
    dockerd, with the daemon's registry settings (insecure registries, mirrors, certs.d), as
    `docker push` does; a docker-container builder would not reach a registry on localhost."""
    try:
        return str(run_cli([*docker.docker_cmd, "context", "show"])).strip() or "default"
    except DockerException:
        return "default"


def _engine_build(context: Path, dockerfile: str, **options: Any) -> None:
    """Build `dockerfile` (written into `context`) with the engine's own builder: one manifest,
    no attestation (an index would hold it), no progress shown."""
    (context / "Dockerfile").write_text(dockerfile)
    docker.buildx.build(
        context,
        file=context / "Dockerfile",
        builder=_engine_builder(),
        provenance=False,
        progress=False,
        **options,
    )


_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
FILES_MAX_BYTES = 2**20  # a release manifest is about 100 kB


def push_files(ref: str, files: Mapping[str, bytes], labels: Mapping[str, str]) -> str:
    """Push `files` as a one-layer image (`FROM scratch`) under `ref`, built by the engine's own
    BuildKit and pushed by the engine, with docker's credentials and the daemon's registry
    settings; return its digest, read back from the registry and checked to be what was just
    built. How a file travels beside an image in any registry, those without OCI artifact
    support included. The docker driver also keeps the image in the engine: that tag is
    removed again."""
    assert files and all(_FILE_NAME.fullmatch(name) and name != "Dockerfile" for name in files)
    with tempfile.TemporaryDirectory(prefix="torchimg-files-") as tmp:
        context, metadata = Path(tmp) / "context", Path(tmp) / "metadata.json"
        context.mkdir()
        for name, data in files.items():
            (context / name).write_bytes(data)
        try:
            _engine_build(
                context,
                f"FROM scratch\nCOPY {' '.join(sorted(files))} /\n",
                labels={label_keys.BUILT_BY: "torchimg", **labels},
                # uncompressed: the layer's size in its manifest bounds what reading it unpacks
                output={
                    "type": "image",
                    "name": ref,
                    "push": "true",
                    "oci-mediatypes": "true",
                    "compression": "uncompressed",
                    "force-compression": "true",
                },
                metadata_file=metadata,
            )
            built = _built_digest(metadata)
        except DockerException as exc:
            preflight()
            raise ToolError(
                f"push of {ref} failed ({first_line(exc)})",
                "check that the registry answers and that `docker login` has credentials for it; "
                "then push again: nothing after the failed step was changed",
            ) from None
        finally:
            untag(ref)
    found = manifest_digest(ref)
    if found is None or found != built:
        raise ToolError(
            f"{ref}: the registry serves {found}, not the files just pushed ({built})",
            "check who else pushes to this repository (a concurrent push?), then push again",
        )
    return found


def _built_digest(metadata: Path) -> str:
    """The digest BuildKit's metadata file says it pushed."""
    try:
        built = json.loads(metadata.read_text()).get("containerimage.digest")
    except (OSError, ValueError, AttributeError) as exc:
        raise ToolError(f"BuildKit wrote no readable build metadata ({exc})", "push again") from None
    if not (isinstance(built, str) and _DIGEST.fullmatch(built)):
        raise ToolError(f"BuildKit's build metadata names no pushed digest ({built!r})", "push again")
    return built


def _unexpected(ref: str, why: str) -> RefusedError:
    """What is under `ref` is not what push_files leaves: retrying cannot help."""
    return RefusedError(
        f"{ref} is not a one-layer image of files of at most {FILES_MAX_BYTES // 2**10} KiB ({why})",
        f"do not trust it; remove that tag from the registry: {ref}",
    )


# One image manifest (OCI's, as push_files writes, or Docker's) of one layer, no foreign layer
# and nothing fetched from `urls`; each layer type with the compression its blob is exported in
# as it is (a compressed one is decompressed in memory, at most FILES_MAX_BYTES of it).
_LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar": ("uncompressed", compression.NONE),
    "application/vnd.oci.image.layer.v1.tar+gzip": ("gzip", compression.GZIP),
    "application/vnd.oci.image.layer.v1.tar+zstd": ("zstd", compression.ZSTD),
    "application/vnd.docker.image.rootfs.diff.tar.gzip": ("gzip", compression.GZIP),
}
_MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
_CONFIG_TYPES = ("application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json")


def read_files(ref: str, names: Sequence[str], digest: str | None = None) -> dict[str, bytes] | None:
    """Those of the files `names` that the one-layer image push_files left under `ref` (a tag)
    holds, each a regular file of at most 1 MiB; None when the registry has no such tag.
    `digest`: read exactly that image (the caller's own lookup of `ref`), else the tag's now.
    Only its one layer is fetched, by digest, and read as a tar in memory (decompressed there, at
    most 1 MiB of it): nothing of the image runs (an image with ONBUILD triggers is refused) or
    is unpacked (a sparse entry would be written out whole), nothing lands in the engine's
    images. Raises RefusedError when
    what is there is not such an image (retrying cannot help), ToolError when the registry or
    the engine fails, PipelineError without the containerd image store."""
    assert names and all(_FILE_NAME.fullmatch(name) for name in names)
    digest = digest or manifest_digest(ref)
    if digest is None:
        return None
    if not _DIGEST.fullmatch(digest):
        raise _unexpected(ref, f"digest {digest[:80]!r}")
    if not containerd_store():
        raise PipelineError(
            f"reading {ref} needs the engine's containerd image store (its builder exports OCI layouts)",
            CONTAINERD_STORE_FIX,
        )
    by_digest = f"{ref.rsplit(':', 1)[0]}@{digest}"
    manifest = _by_digest(ref, by_digest, "manifest")
    if manifest.get("mediaType") not in _MANIFEST_TYPES:
        raise _unexpected(ref, f"a manifest of type {str(manifest.get('mediaType'))[:80]!r}")
    config = manifest.get("config")
    if not (isinstance(config, dict) and config.get("mediaType") in _CONFIG_TYPES):
        raise _unexpected(ref, "not an image config: another kind of artifact")
    layers = manifest.get("layers")
    if not (isinstance(layers, list) and len(layers) == 1 and isinstance(layers[0], dict)):
        raise _unexpected(ref, "not one layer")
    layer = layers[0]
    size = layer.get("size")
    if not (isinstance(size, int) and 0 <= size <= FILES_MAX_BYTES):
        raise _unexpected(ref, f"a layer of {size!r} bytes")
    stored = _LAYER_TYPES.get(str(layer.get("mediaType")))
    if stored is None or "urls" in layer:
        raise _unexpected(ref, f"a layer of type {str(layer.get('mediaType'))[:80]!r}")
    diff_id = _diff_id(ref, f"{by_digest.split('@', 1)[0]}@{config.get('digest')}")
    blob, kind = _layer_blob(ref, by_digest, stored[0])
    tar = _tar_of(ref, blob, kind)
    if f"sha256:{hashlib.sha256(tar).hexdigest()}" != diff_id:
        raise _unexpected(ref, "a layer that is not what its image's config says")
    return _files_in(ref, tar, names)


def _tar_of(ref: str, blob: bytes, kind: str) -> bytes:
    """A layer blob's tar, decompressed in memory and at most FILES_MAX_BYTES of it: a
    compressed blob's size does not bound what it decompresses to."""
    if compression.kind(blob[:4]) != kind and kind != compression.NONE:
        raise _unexpected(ref, f"a layer that is not {kind} as its type says")
    try:
        tar = compression.decompressed(io.BytesIO(blob), kind).read(FILES_MAX_BYTES + 1)
    except compression.ERRORS as exc:
        raise _unexpected(ref, f"a layer that does not decompress ({exc})") from None
    if len(tar) > FILES_MAX_BYTES:
        raise _unexpected(ref, f"a layer of more than {FILES_MAX_BYTES} bytes decompressed")
    return tar


def _diff_id(ref: str, config_ref: str) -> str:
    """The image's one diff ID (its layer's tar's digest), from its config read raw by digest
    and checked against it. An image whose config holds ONBUILD triggers is refused: reading
    its layer starts a build FROM it, which would run them (buildx's own view of a config
    leaves ONBUILD out)."""
    config = _by_digest(ref, config_ref, "config")
    try:
        triggers = _has_triggers(config)
    except RecursionError:
        raise _unexpected(ref, "a config nested too deep") from None
    if triggers:
        raise _unexpected(ref, "an image with ONBUILD triggers")
    rootfs = config.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not (isinstance(diff_ids, list) and len(diff_ids) == 1 and _DIGEST.fullmatch(str(diff_ids[0]))):
        raise _unexpected(ref, "a config that does not name one layer")
    return str(diff_ids[0])


def _by_digest(ref: str, by_digest: str, what: str) -> dict[str, Any]:
    """A manifest or config the registry serves by digest, as a JSON object: checked against
    the digest (buildx does not check what it shows), at most FILES_MAX_BYTES, each key once
    in any letter case (BuildKit reads it with Go's decoder, which merges repeated keys and
    ignores case, where Python keeps the last one: what is checked here is what it reads)."""
    digest = by_digest.rsplit("@", 1)[-1]
    if not _DIGEST.fullmatch(digest):
        raise _unexpected(ref, f"a {what} without a digest")
    raw = imagetools(by_digest)
    if raw is None:
        raise ToolError(
            f"{by_digest}: the registry serves no {what} by that digest (removed meanwhile, over "
            "4 MiB, or a registry that serves no blob by its manifest path)",
            f"run it again; if it persists, remove that tag from the registry: {ref}",
        )
    if len(raw) > FILES_MAX_BYTES or f"sha256:{hashlib.sha256(raw.encode()).hexdigest()}" != digest:
        raise _unexpected(ref, f"a {what} that is not what its digest says")
    try:
        found = json.loads(raw, object_pairs_hook=_once_each)
    except (ValueError, RecursionError) as exc:
        raise _unexpected(ref, f"a {what} that is not plain JSON ({str(exc)[:80]})") from None
    if not isinstance(found, dict):
        raise _unexpected(ref, f"a {what} that is not a JSON object")
    return found


def _once_each(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys differ, in any letter case: Go's decoder merges a repeated key
    into what the first one set, and matches keys regardless of case, where Python keeps the
    last one (a trigger could hide in the first)."""
    keys = [k.casefold() for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("a key given twice")
    return dict(pairs)


def _has_triggers(value: object) -> bool:
    """Whether a config holds a non-empty `OnBuild` anywhere, in any letter case: Go's JSON
    decoder, which BuildKit reads it with, matches keys regardless of case."""
    if isinstance(value, dict):
        return any((str(k).lower() == "onbuild" and v) or _has_triggers(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_triggers(v) for v in value)
    return False


def _layer_blob(ref: str, by_digest: str, stored: str) -> tuple[bytes, str]:
    """The image's one layer blob and its compression: the image exported by the engine's own
    BuildKit as an OCI layout (`FROM` it, nothing else, its ONBUILD triggers refused before: its
    layer is fetched, never unpacked, so no entry of it is written out). The caller checks the
    layer's tar against the image's diff ID (the export may hold another encoding of it)."""
    with tempfile.TemporaryDirectory(prefix="torchimg-files-") as tmp:
        context, out = Path(tmp) / "context", Path(tmp) / "out"
        context.mkdir()
        try:
            # in the compression the layer has: the export keeps its blob, not converted
            oci = {"type": "oci", "dest": str(out), "tar": "false", "compression": stored}
            _engine_build(context, f"FROM {by_digest}\n", pull=True, output=oci)
        except DockerException as exc:
            preflight()
            raise ToolError(
                f"cannot read {by_digest} from its registry ({first_line(exc)})",
                "check that the registry answers and that `docker login` has credentials for it; "
                f"if it does, what is under {ref} is no image BuildKit reads: remove that tag",
            ) from None
        try:
            index = json.loads(userfiles.read(out / "index.json", FILES_MAX_BYTES))
            manifest = json.loads(_oci_blob(out, index["manifests"][0]["digest"]))
            (layer,) = manifest["layers"]
            kind = _LAYER_TYPES[layer["mediaType"]][1]
            blob = _oci_blob(out, layer["digest"])
        except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise ToolError(
                f"BuildKit's export of {by_digest} is not the OCI layout of one layer "
                f"({type(exc).__name__}: {exc})",
                "run it again",
            ) from None
    return blob, kind


def _oci_blob(layout: Path, digest: object) -> bytes:
    """A blob of an OCI layout folder, checked against its digest (ValueError if not)."""
    if not (isinstance(digest, str) and _DIGEST.fullmatch(digest)):
        raise ValueError(f"digest {str(digest)[:80]!r}")
    blob = userfiles.read(layout / "blobs" / "sha256" / digest.split(":", 1)[1], FILES_MAX_BYTES)
    if f"sha256:{hashlib.sha256(blob).hexdigest()}" != digest:
        raise ValueError(f"blob {digest} is not what its digest says")
    return blob


def _files_in(ref: str, layer: bytes, names: Sequence[str]) -> dict[str, bytes]:
    """The files `names` at the root of a layer's tar, read in memory: each must be one plain
    regular file (not a link, not sparse: a sparse entry may claim any size), and nothing but
    the end-of-archive blocks may follow the last entry (tarfile stops at a bad header)."""
    read: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(layer), mode="r:") as tar:
            for member in tar:
                name = posixpath.normpath(member.name).lstrip("/")
                if name not in names:
                    continue
                if name in read:
                    raise _unexpected(ref, f"{name}: in the layer twice")
                if member.issym() or member.islnk():
                    raise _unexpected(ref, f"{name}: a {'symbolic' if member.issym() else 'hard'} link")
                if not member.isreg() or member.issparse() or member.size > FILES_MAX_BYTES:
                    raise _unexpected(ref, f"{name}: not a plain file of at most 1 MiB")
                data = tar.extractfile(member)
                assert data is not None  # a regular file
                read[name] = data.read()
            rest = layer[tar.offset :]
    except (tarfile.TarError, ValueError, EOFError) as exc:  # tarfile's own parsing raises these too
        raise _unexpected(ref, f"a layer that is not a tar archive ({str(exc)[:80]})") from None
    if rest.strip(b"\0"):
        raise _unexpected(ref, "a layer with more after its end-of-archive or a bad entry")
    return read
