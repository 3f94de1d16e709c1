"""Read an image's blobs straight from the engine (`docker save`, streamed, never on disk).

Used to measure layer sizes (compressed and uncompressed) and to prove that no secret was
written into any layer, including layers whose files a later layer deletes.
"""

import io
import json
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from python_on_whales import docker

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
    stored: int  # bytes as stored (compressed, for layers)
    content: int  # bytes after decompression
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


def _compression(head: bytes) -> str:
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    return "none"


def _chunks(read: Callable[[int], bytes], head: bytes, kind: str) -> Iterator[bytes]:
    if kind == "zstd":
        raise ValueError("zstd-compressed layers cannot be read with the standard library")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS) if kind == "gzip" else None
    data = head
    while data:
        yield inflater.decompress(data) if inflater else data
        data = read(_CHUNK)
    if inflater:
        yield inflater.flush()


def scan(image: str, needles: tuple[bytes, ...] = ()) -> Saved:
    """Stream `docker save` of `image`: every blob's sizes, and which blobs hold a needle."""
    blobs: dict[str, Blob] = {}
    manifest: list[dict[str, list[str]]] = []
    found: dict[bytes, list[str]] = {n: [] for n in needles}
    overlap = max((len(n) for n in needles), default=1) - 1
    saved = docker.image.save(image)
    assert saved is not None
    with tarfile.open(fileobj=io.BufferedReader(_IterReader(iter(saved)), _CHUNK), mode="r|") as tar:
        for member in tar:
            f = tar.extractfile(member) if member.isfile() else None
            if f is None:
                continue
            head = f.read(_CHUNK)
            if member.name == "manifest.json":
                manifest = json.loads(head)
            kind = _compression(head)
            content, tail = 0, b""
            for data in _chunks(f.read, head, kind):
                window = tail + data
                for n in needles:
                    if n in window and member.name not in found[n]:
                        found[n].append(member.name)
                tail = window[-overlap:] if overlap else b""
                content += len(data)
            blobs[member.name] = Blob(member.name, member.size, content, kind)
    return Saved(blobs, manifest[0]["Layers"] if manifest else [], found)
