"""Read an image's blobs straight from the engine (`docker save`, streamed, never on disk).

Used to measure layer sizes (compressed and uncompressed) and to prove that no secret was
written into any layer, including layers whose files a later layer deletes.
"""

import io
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from torchimg import compression
from torchimg.adapters import engine

_CHUNK = 1 << 20


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
    """Counts the bytes read through it (the decompressed tar stream's length)."""

    def __init__(self, raw: compression.Readable) -> None:
        self.raw, self.count = raw, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.raw.read(len(buffer))
        buffer[: len(data)] = data
        self.count += len(data)
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
    return Blob(name, stored, counter.count, files, kind)


def scan(image: str, needles: tuple[bytes, ...] = ()) -> Saved:
    """Stream `docker save` of `image`: every blob's sizes, and which blobs hold a needle."""
    blobs: dict[str, Blob] = {}
    manifest: list[dict[str, list[str]]] = []
    search = _Needles(needles)
    with tarfile.open(fileobj=io.BufferedReader(_IterReader(engine.save(image)), _CHUNK), mode="r|") as tar:
        for member in tar:
            f = tar.extractfile(member) if member.isfile() else None
            if f is None:
                continue
            head = f.peek(4)[:4] if isinstance(f, io.BufferedReader) else b""
            if (kind := compression.kind(head)) != compression.NONE:
                blobs[member.name] = _layer(member.name, f, member.size, search, kind)
                continue
            data = f.read()
            if member.name == "manifest.json":
                manifest = json.loads(data)
            search.search(member.name, iter([data]))
            blobs[member.name] = Blob(member.name, member.size, len(data), 0, "none")
    return Saved(blobs, manifest[0]["Layers"] if manifest else [], search.found)
