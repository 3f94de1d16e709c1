"""Layer blobs' compression: told by their first bytes, read back as a decompressed stream
(image layers are gzip or zstd; a plain tar is stored as it is)."""

import gzip
import hashlib
import io
import zlib
from typing import IO, Protocol, cast

import zstandard

GZIP, ZSTD, NONE = "gzip", "zstd", "none"


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class Hashing(io.RawIOBase):
    """A reader that hashes what passes through it: a blob read in full has its digest."""

    def __init__(self, raw: Readable) -> None:
        self.raw, self.sha = raw, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.raw.read(len(buffer))
        buffer[: len(data)] = data
        self.sha.update(data)
        return len(data)

    @property
    def digest(self) -> str:
        return f"sha256:{self.sha.hexdigest()}"


def kind(head: bytes) -> str:
    """The compression of a blob whose first four bytes are `head`."""
    if head[:2] == b"\x1f\x8b":
        return GZIP
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return ZSTD
    return NONE


def decompressed(raw: IO[bytes], compression: str) -> Readable:
    """A reader of the decompressed stream (every gzip member, every zstd frame)."""
    if compression == GZIP:
        return gzip.GzipFile(fileobj=raw)
    if compression == ZSTD:
        return cast(Readable, zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True))
    return raw


ERRORS: tuple[type[Exception], ...] = (OSError, EOFError, zlib.error, zstandard.ZstdError)
"""What a truncated or corrupt blob raises while it is read."""
