"""Read an image's blobs straight from the engine (`docker save`, streamed).

Used to measure layer sizes (compressed and uncompressed) and to prove that no secret was
written into any layer, including layers whose files a later layer deletes (never on disk);
and to write one platform of a multi-platform image as an OCI layout folder, for a tool that
reads one platform only.
"""

import hashlib
import io
import json
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from torchimg import compression
from torchimg.adapters import engine
from torchimg.adapters.remote_registry import INDEX_TYPES
from torchimg.errors import ToolError

_CHUNK = 1 << 20
_SMALL = 4 << 20  # index, manifests and configs are far smaller


class _IterReader(io.RawIOBase):
    """A file object over an iterator of byte chunks, for tarfile's streaming mode."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._rest = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._rest:
            try:
                self._rest = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._rest))
        buffer[:n] = self._rest[:n]
        self._rest = self._rest[n:]
        return n


@dataclass(frozen=True)
class Blob:
    name: str
    stored: int  # bytes as stored: the compressed size, for layers
    content: int  # bytes after decompression: for a layer, its tar stream
    files: int  # for a layer: the sum of its regular files' sizes (what `du` counts)
    compression: str
    content_digest: str  # sha256 of the content: for a layer, its diff ID


@dataclass(frozen=True)
class Saved:
    """What `docker save` of one image holds: its blobs, its layers in order, needles found."""

    blobs: dict[str, Blob]
    layer_names: list[str]
    found: dict[bytes, list[str]]

    @property
    def layers(self) -> list[Blob]:
        return [self.blobs[n] for n in self.layer_names]


class _Counter(io.RawIOBase):
    """Counts and hashes the bytes read through it (the decompressed tar stream): its digest
    must be the layer's diff ID, which proves the layer was read to its end."""

    def __init__(self, raw: compression.Readable) -> None:
        self.raw, self.count, self.sha = raw, 0, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.raw.read(len(buffer))
        buffer[: len(data)] = data
        self.count += len(data)
        self.sha.update(data)
        return len(data)


class _Needles:
    """Looks for byte strings across chunk boundaries; remembers where each was seen."""

    def __init__(self, needles: tuple[bytes, ...]) -> None:
        self.found: dict[bytes, list[str]] = {n: [] for n in needles}
        self.overlap = max((len(n) for n in needles), default=1) - 1

    def search(self, where: str, chunks: Iterator[bytes]) -> int:
        total, tail = 0, b""
        for data in chunks:
            window = tail + data
            for n, places in self.found.items():
                if n in window and where not in places:
                    places.append(where)
            tail = window[-self.overlap :] if self.overlap else b""
            total += len(data)
        return total


def _reads(f: IO[bytes]) -> Iterator[bytes]:
    while data := f.read(_CHUNK):
        yield data


def _layer(name: str, f: IO[bytes], stored: int, needles: _Needles, kind: str) -> Blob:
    """A compressed layer: walk its tar, searching file names and contents, counting file bytes."""
    counter = _Counter(compression.decompressed(f, kind))
    files = 0
    with tarfile.open(fileobj=io.BufferedReader(counter, _CHUNK), mode="r|") as layer:
        for member in layer:
            needles.search(f"{name}:{member.name}", iter([member.name.encode()]))
            if member.isfile():
                files += member.size
                data = layer.extractfile(member)
                assert data is not None
                needles.search(f"{name}:{member.name}", _reads(data))
        while counter.read(_CHUNK):  # the end-of-archive blocks belong to the stream too
            pass
    return Blob(name, stored, counter.count, files, kind, f"sha256:{counter.sha.hexdigest()}")


_READ_ERRORS: tuple[type[Exception], ...] = (tarfile.TarError, *compression.ERRORS)


def _members(image: str) -> Iterator[tuple[str, IO[bytes], int]]:
    """Each file of `docker save` of `image`, streamed: (name, readable, size)."""
    with tarfile.open(fileobj=io.BufferedReader(_IterReader(engine.save(image)), _CHUNK), mode="r|") as tar:
        for member in tar:
            f = tar.extractfile(member) if member.isfile() else None
            if f is not None:
                yield member.name, f, member.size


def scan(image: str, needles: tuple[bytes, ...] = ()) -> Saved:
    """Stream `docker save` of `image`: every blob's sizes, and which blobs hold a needle.
    Fails unless every layer was read to its end (its tar stream's digest is its diff ID)."""
    blobs: dict[str, Blob] = {}
    small: dict[str, bytes] = {}  # manifest.json and the JSON blobs, to check the layers against
    search = _Needles(needles)
    try:
        for name, f, size in _members(image):
            head = f.peek(4)[:4] if isinstance(f, io.BufferedReader) else b""
            if (kind := compression.kind(head)) != compression.NONE:
                blobs[name] = _layer(name, f, size, search, kind)
                continue
            data = f.read()
            if len(data) < _CHUNK:
                small[name] = data
            search.search(name, iter([data]))
            digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
            blobs[name] = Blob(name, size, len(data), 0, "none", digest)
    except _READ_ERRORS as exc:
        raise ToolError(f"reading the layers of {image}: {exc}", "run it again") from None
    saved = Saved(blobs, [], search.found)
    try:
        manifest = json.loads(small["manifest.json"])[0]
        diff_ids = json.loads(small[manifest["Config"]])["rootfs"]["diff_ids"]
        saved = Saved(blobs, list(manifest["Layers"]), search.found)
        read = [blobs[name].content_digest for name in saved.layer_names]
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise ToolError(
            f"`docker save` of {image}: no readable manifest or config ({exc})", "run it again"
        ) from None
    if read != diff_ids:
        raise ToolError(
            f"`docker save` of {image}: the layers read back ({len(read)}) are not the image's "
            f"diff IDs ({len(diff_ids)}): a layer was not read to its end",
            "run it again; if it persists, the engine's store is damaged",
        )
    return saved


def _blob_name(digest: str) -> str:
    algorithm, _, hexdigest = digest.partition(":")
    if algorithm != "sha256" or len(hexdigest) != 64 or not all(c in "0123456789abcdef" for c in hexdigest):
        raise ValueError(f"unexpected digest {digest!r}")
    return f"blobs/sha256/{hexdigest}"


class _MissingBlobError(Exception):
    """A blob an index or manifest names is not in what `docker save` wrote."""


def _json_blob(small: dict[str, bytes], digest: str) -> Any:
    """A JSON blob of `docker save`, checked against its digest."""
    name = _blob_name(digest)
    if name not in small:
        raise _MissingBlobError(digest)
    if hashlib.sha256(small[name]).hexdigest() != name.rsplit("/", 1)[1]:
        raise ValueError(f"blob {digest} does not match its digest")
    return json.loads(small[name])


def _platform_of(small: dict[str, bytes], desc: dict[str, Any], manifest: dict[str, Any]) -> dict[str, str]:
    """A manifest's platform: its descriptor's, else its config's (a single-platform image's
    descriptor in index.json carries none)."""
    p = desc.get("platform") or _json_blob(small, manifest["config"]["digest"])
    keys = ("os", "architecture", "variant")
    return {k: str(p[k]) for k in keys if isinstance(p, dict) and p.get(k)}


def _platform_manifest(
    small: dict[str, bytes], image: str, platform: str
) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """`platform`'s manifest under `image` (its descriptor, platform filled in, and the manifest),
    following index.json's entry for `image` (on the containerd store an image ID is that
    digest) through nested indexes, every blob checked against its digest; and the platforms
    seen. ({}, {}, seen) when `image` has no such platform."""
    top = [
        d
        for d in json.loads(small["index.json"])["manifests"]
        if isinstance(d, dict) and d.get("digest") == image
    ]
    if not top:
        raise ValueError(f"index.json names no {image}")
    wanted, seen, visited = platform.split("/"), [], set()
    pending: list[Any] = top[:1]
    while pending:
        desc = pending.pop(0)
        if not isinstance(desc, dict) or desc.get("digest") in visited:
            continue
        visited.add(desc["digest"])
        blob = _json_blob(small, desc["digest"])
        if desc.get("mediaType") in INDEX_TYPES or "manifests" in blob:
            pending += blob["manifests"]
            continue
        p = _platform_of(small, desc, blob)
        have = [p.get("os", ""), p.get("architecture", ""), *([p["variant"]] if p.get("variant") else [])]
        if have[:2] == ["unknown", "unknown"]:  # BuildKit's attestation manifests
            continue
        seen.append("/".join(have))
        if have == wanted or (have[:2] == wanted and len(wanted) == 2):
            return {**desc, "platform": p}, blob, seen
    return {}, {}, seen


def write_platform(image: str, platform: str, dest: Path) -> str:
    """Write `platform`'s image of the local `image` (by ID) into the new folder `dest` as an
    OCI layout: index.json naming that one manifest, and its blobs, each checked against its
    digest, from the image ID down. Returns the platform's config digest: the image ID a
    reader of the layout sees.

    Two passes of `docker save`: the small JSON blobs to find the manifest, then its layers
    only, so the folder never holds another platform's layers."""
    small: dict[str, bytes] = {}
    try:
        for name, f, _ in _members(image):
            head = f.peek(1)[:1] if isinstance(f, io.BufferedReader) else b""
            if head in (b"{", b"[") or name.endswith(".json"):
                data = f.read(_SMALL + 1)
                if len(data) <= _SMALL:
                    small[name] = data
        desc, manifest, seen = _platform_manifest(small, image, platform)
        if not desc:
            raise ToolError(
                f"{image[:19]} holds no {platform} image (it holds: {', '.join(seen) or 'none'})",
                "build the image for that platform again",
            )
        config = str(manifest["config"]["digest"])
        _json_blob(small, config)
        layers = [(_blob_name(d["digest"]), int(d["size"])) for d in manifest["layers"]]
    except _READ_ERRORS as exc:
        raise ToolError(f"reading {image[:19]} from the engine: {exc}", "run it again") from None
    except _MissingBlobError as exc:
        raise ToolError(
            f"the engine holds {image[:19]} without all of {platform}'s content (blob {exc} missing)",
            f"pull or build it again for {platform} (e.g. `docker pull --platform {platform} REF`)",
        ) from None
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise ToolError(
            f"`docker save` of {image[:19]}: no readable index or manifest ({exc})", "run it again"
        ) from None
    needed = sum(size for _, size in layers)
    try:
        (dest / "blobs" / "sha256").mkdir(parents=True)
        free = shutil.disk_usage(dest).free
        if free < needed * 1.05:
            raise ToolError(
                f"{platform}'s image needs {needed / 1e9:.1f} GB in {dest.parent} for its scan; "
                f"{free / 1e9:.1f} GB are free",
                "free disk there (`inv clean`), or point TORCHIMG_REPORTS at a disk with room",
            )
        for name in (_blob_name(desc["digest"]), _blob_name(config)):
            (dest / name).write_bytes(small[name])
        written = _write_layers(image, {name for name, _ in layers}, dest)
        index = {"schemaVersion": 2, "mediaType": INDEX_TYPES[0], "manifests": [desc]}
        (dest / "index.json").write_text(json.dumps(index))
        (dest / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    except OSError as exc:
        raise ToolError(
            f"writing {platform}'s image to {dest}: {exc.strerror or exc}",
            f"it needs {needed / 1e9:.1f} GB there: free disk, or point TORCHIMG_REPORTS elsewhere",
        ) from None
    for name, _ in layers:
        if name not in written:
            raise ToolError(f"`docker save` of {image[:19]} lacks {platform}'s layer {name}", "run it again")
        if written[name] != name.rsplit("/", 1)[1]:
            raise ToolError(
                f"`docker save` of {image[:19]}: {name} does not match its digest", "run it again"
            )
    return config


def _write_layers(image: str, wanted: set[str], dest: Path) -> dict[str, str]:
    """The second pass: each wanted blob of `docker save` written under `dest`; blob -> the
    sha256 of what was written. OSError: writing failed (reading the engine is a ToolError)."""
    written: dict[str, str] = {}
    members = _members(image)
    while True:
        try:
            name, f, _ = next(members)
        except StopIteration:
            return written
        except _READ_ERRORS as exc:
            raise ToolError(f"reading {image[:19]} from the engine: {exc}", "run it again") from None
        if name not in wanted or name in written:
            continue
        sha = hashlib.sha256()
        with (dest / name).open("wb") as out:
            while True:
                try:
                    data = f.read(_CHUNK)
                except _READ_ERRORS as exc:
                    raise ToolError(f"reading {image[:19]} from the engine: {exc}", "run it again") from None
                if not data:
                    break
                sha.update(data)
                out.write(data)
        written[name] = sha.hexdigest()
