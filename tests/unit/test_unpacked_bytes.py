"""A layer's uncompressed size read back from a registry: gzip members, zstd frames, plain tar;
a blob that is not what its digest says (short, damaged) is an error, never a smaller size."""

import gzip
import hashlib
import http.server
import threading
from collections.abc import Iterator

import pytest
import zstandard

from torchimg.adapters import local_registry
from torchimg.errors import ToolError


def _digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


_ZSTD = zstandard.compress(b"e" * 3_000_000)
LAYERS = {
    "multi": gzip.compress(b"a" * 5_000_000) + gzip.compress(b"b" * 1234),
    "plain": b"ustar" + b"\0" * 10_235,
    "zstd": zstandard.compress(b"c" * 3_000_000) + zstandard.compress(b"d" * 77),
}
DIGESTS = {name: _digest(data) for name, data in LAYERS.items()}
DIGESTS |= {"cut": _digest(_ZSTD), "corrupt": _digest(_ZSTD)}
BLOBS = {f"/v2/r/blobs/{DIGESTS[name]}": data for name, data in LAYERS.items()}
BLOBS |= {"/v2/cut/blobs/" + DIGESTS["cut"]: _ZSTD[: len(_ZSTD) // 2]}
BLOBS |= {
    "/v2/corrupt/blobs/" + DIGESTS["corrupt"]: _ZSTD[:8] + bytes(b ^ 0xFF for b in _ZSTD[8:20]) + _ZSTD[20:]
}


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = BLOBS.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def registry() -> Iterator[local_registry.Local]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield local_registry.Local(f"127.0.0.1:{server.server_address[1]}")
    server.shutdown()


def test_every_gzip_member_zstd_frame_and_plain_tar_are_counted(registry: local_registry.Local) -> None:
    assert registry.unpacked_bytes("r", DIGESTS["multi"]) == 5_001_234
    assert registry.unpacked_bytes("r", DIGESTS["zstd"]) == 3_000_077
    assert registry.unpacked_bytes("r", DIGESTS["plain"]) == 10_240


def test_short_damaged_and_missing_blobs_are_errors_not_smaller_sizes(registry: local_registry.Local) -> None:
    with pytest.raises(ToolError, match="short or damaged"):
        registry.unpacked_bytes("cut", DIGESTS["cut"])
    with pytest.raises(ToolError, match="corruption"):
        registry.unpacked_bytes("corrupt", DIGESTS["corrupt"])
    with pytest.raises(ToolError, match="404"):
        registry.unpacked_bytes("r", "sha256:none")
