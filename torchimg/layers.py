"""Read an image's blobs straight from the engine (`docker save`, streamed).

Used to measure layer sizes (compressed and uncompressed) and to prove that no secret was
written into any layer, including layers whose files a later layer deletes (never on disk);
and to write one platform of a multi-platform image as an OCI layout folder, for a tool that
reads one platform only.
"""

import contextlib
import hashlib
import io
import json
import re
import shutil
import tarfile
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from torchimg import compression
from torchimg.adapters import engine
from torchimg.adapters.remote_registry import INDEX_TYPES
from torchimg.errors import ToolError
from torchimg.output import log

_CHUNK = 1 << 20
_SMALL = 4 << 20  # index, manifests and configs are far smaller


class _IterReader(io.RawIOBase):
    """A file object over an iterator of byte chunks, for tarfile's streaming mode."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._rest = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._rest:
            try:
                self._rest = memoryview(next(self._chunks))
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._rest))
        buffer[:n] = self._rest[:n]
        self._rest = self._rest[n:]  # a view: the chunk is not copied again
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


def _members(image: str) -> Generator[tuple[str, IO[bytes], int], None, None]:
    """Each file of `docker save` of `image`, streamed: (name, readable, size)."""
    reader = io.BufferedReader(_IterReader(engine.save(image)), _CHUNK)
    with tarfile.open(fileobj=reader, mode="r|") as tar:  # tarfile's default record size: its
        # stream copies what is left of its buffer on every small read
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
    small: dict[str, bytes], image: str, platform: str, from_index: bool = True
) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """`platform`'s manifest under `image` (its descriptor, platform filled in, and the manifest),
    following index.json's entry for `image` (on the containerd store an image ID is that
    digest) through nested indexes, every blob checked against its digest; and the platforms
    seen. ({}, {}, seen) when `image` has no such platform. Without `from_index`, from the
    blob `image` itself (index.json comes last in `docker save`: this decides mid-stream);
    _MissingBlobError while a blob on the way has not been read yet."""
    top = (
        [
            d
            for d in json.loads(small["index.json"])["manifests"]
            if isinstance(d, dict) and d.get("digest") == image
        ]
        if from_index
        else [{"digest": image}]
    )
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


_RESERVE = 2 << 30  # free disk a blob written before its platform is known never goes below
_BLOB = re.compile(r"blobs/sha256/[0-9a-f]{64}")


def write_platform(image: str, platform: str, dest: Path) -> str:
    """Write `platform`'s image of the local `image` (by ID) into the new folder `dest` as an
    OCI layout: index.json naming that one manifest, and its blobs, each checked against its
    digest, from the image ID down. Returns the platform's config digest: the image ID a
    reader of the layout sees.

    One pass of `docker save` as a rule: its blobs come in digest order, so a layer may come
    before the manifest that says whose it is. Such a layer is written anyway and removed as
    soon as the manifest shows it is another platform's; only where the disk is too short for
    that is it skipped, and read in a second pass. The folder ends with this platform's
    layers only."""
    try:
        (dest / "blobs" / "sha256").mkdir(parents=True)
    except OSError as exc:
        raise ToolError(
            f"writing {platform}'s image to {dest}: {exc.strerror or exc}", "free disk there"
        ) from None
    run = _Pass(image, platform, dest)
    try:
        run.read()
        desc, manifest = run.manifest()
        layers = _layer_sizes(manifest)
        config = str(manifest["config"]["digest"])
        _json_blob(run.small, config)
        run.keep_only(set(layers))
        missing = (set(layers) - set(run.written)) & run.skipped  # not in the save at all: named below
        if missing:
            run.check_room(sum(layers[n] for n in missing))
            run.written.update(_write_layers(image, missing, dest))
        index = {"schemaVersion": 2, "mediaType": INDEX_TYPES[0], "manifests": [desc]}
        for name, data in (
            (_blob_name(desc["digest"]), run.small[_blob_name(desc["digest"])]),
            (_blob_name(config), run.small[_blob_name(config)]),
            ("index.json", json.dumps(index).encode()),
            ("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode()),
        ):
            _copy(io.BytesIO(data), dest / name)
    except _READ_ERRORS as exc:  # the engine's stream (writing failed as a ToolError of its own)
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
    for name in layers:
        if name not in run.written:
            raise ToolError(f"`docker save` of {image[:19]} lacks {platform}'s layer {name}", "run it again")
        if run.written[name] != name.rsplit("/", 1)[1]:
            raise ToolError(
                f"`docker save` of {image[:19]}: {name} does not match its digest", "run it again"
            )
    log.info(
        "   %s: %d layer(s), %.1f GB, read in %s of `docker save`",
        platform,
        len(layers),
        sum(layers.values()) / 1e9,
        "two passes" if missing else "one pass",
    )
    return config


class _Pass:
    """The first (as a rule the only) pass over `docker save` for `write_platform`."""

    def __init__(self, image: str, platform: str, dest: Path) -> None:
        self.image, self.platform, self.dest = image, platform, dest
        self.small: dict[str, bytes] = {}
        self.written: dict[str, str] = {}  # blob -> sha256 of what was written
        self.wanted: set[str] | None = None  # this platform's layers, once its manifest was read
        self.skipped: set[str] = set()  # read before that, not written for want of disk

    def read(self) -> None:
        with contextlib.closing(_members(self.image)) as members:
            for name, f, size in members:
                self._take(name, f, size)

    def _take(self, name: str, f: IO[bytes], size: int) -> None:
        """One member of the stream: kept (small JSON), written, or passed over."""
        head = f.peek(1)[:1] if isinstance(f, io.BufferedReader) else b""
        if size <= _SMALL and (head in (b"{", b"[") or name.endswith(".json")):
            self.small[name] = f.read()
            if self.wanted is None and name.startswith("blobs/"):
                self._decide()
        elif not _BLOB.fullmatch(name) or (self.wanted is not None and name not in self.wanted):
            pass  # another platform's, or not a blob (never a path outside the layout)
        elif self.wanted is None and _free(self.dest) - size < _RESERVE:
            self.skipped.add(name)  # whose it is is not known yet, and the disk is short
        else:
            self.written[name] = _copy(f, self.dest / name)

    def _decide(self) -> None:
        """Once the image's index and this platform's manifest have been read: which layers are
        wanted. Those of other platforms written before are removed there and then."""
        try:
            desc, manifest, _ = _platform_manifest(self.small, self.image, self.platform, from_index=False)
        except _MissingBlobError:
            return
        if not desc:  # no such platform: nothing more is written; the end names those there
            self.keep_only(set())
            self.wanted = set()
            return
        wanted = _layer_sizes(manifest)
        self.keep_only(set(wanted))
        self.check_room(sum(size for name, size in wanted.items() if name not in self.written))
        self.wanted = set(wanted)

    def manifest(self) -> tuple[dict[str, Any], dict[str, Any]]:
        desc, manifest, seen = _platform_manifest(self.small, self.image, self.platform)
        if not desc:
            raise ToolError(
                f"{self.image[:19]} holds no {self.platform} image (it holds: {', '.join(seen) or 'none'})",
                "build the image for that platform again",
            )
        return desc, manifest

    def keep_only(self, wanted: set[str]) -> None:
        for name in [n for n in self.written if n not in wanted]:
            try:
                (self.dest / name).unlink(missing_ok=True)
            except OSError as exc:
                raise _unwritable(self.dest / name, exc) from None
            del self.written[name]
        for name in wanted - set(self.written):  # a small blob taken for JSON that was a layer
            if name in self.small:
                self.written[name] = _copy(io.BytesIO(self.small[name]), self.dest / name)

    def check_room(self, needed: int) -> None:
        free = _free(self.dest)
        if free < needed * 1.05:
            raise ToolError(
                f"{self.platform}'s image needs {needed / 1e9:.1f} GB more in {self.dest.parent} for its "
                f"scan; {free / 1e9:.1f} GB are free",
                "free disk there (`inv clean`), or point TORCHIMG_REPORTS at a disk with room",
            )


def _layer_sizes(manifest: dict[str, Any]) -> dict[str, int]:
    """A manifest's layers: blob path in the layout -> size."""
    return {_blob_name(d["digest"]): int(d["size"]) for d in manifest["layers"]}


def _copy(f: IO[bytes], path: Path) -> str:
    """Write one blob; the sha256 of what was written. Reading and writing fail as ToolErrors
    of their own (the engine's stream, or this disk)."""
    sha = hashlib.sha256()
    try:
        with path.open("wb") as out:
            while True:
                try:
                    data = f.read(_CHUNK)
                except _READ_ERRORS as exc:
                    raise ToolError(f"reading {path.name} from the engine: {exc}", "run it again") from None
                if not data:
                    break
                sha.update(data)
                out.write(data)
    except OSError as exc:  # opening, writing or closing (a short blob is written at its close)
        raise _unwritable(path, exc) from None
    return sha.hexdigest()


def _free(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError as exc:
        raise _unwritable(folder, exc) from None


def _unwritable(path: Path, exc: OSError) -> ToolError:
    return ToolError(
        f"writing {path}: {exc.strerror or exc}", "free disk there, or point TORCHIMG_REPORTS elsewhere"
    )


def _write_layers(image: str, wanted: set[str], dest: Path) -> dict[str, str]:
    """A second pass: each wanted blob of `docker save` written under `dest`; blob -> the
    sha256 of what was written."""
    written: dict[str, str] = {}
    with contextlib.closing(_members(image)) as members:  # `docker save` stops with an error too
        while set(wanted) - set(written):
            try:
                name, f, _ = next(members)
            except StopIteration:
                break
            except _READ_ERRORS as exc:
                raise ToolError(f"reading {image[:19]} from the engine: {exc}", "run it again") from None
            if name in wanted and name not in written:
                written[name] = _copy(f, dest / name)
    return written
