"""Finding one platform's manifest in what `docker save` wrote (the containerd store nests the
image's own index inside index.json; BuildKit adds attestation manifests; a single-platform
image's descriptor names no platform): pure, no engine."""

import hashlib
import io
import json
from collections.abc import Generator
from pathlib import Path
from typing import IO, Any

import pytest

from torchimg import layers
from torchimg.errors import ToolError

INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


class Saved:
    """The small blobs of a made-up `docker save`, each stored under its real digest."""

    def __init__(self) -> None:
        self.small: dict[str, bytes] = {}

    def put(self, obj: Any) -> str:
        data = json.dumps(obj).encode()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self.small["blobs/sha256/" + digest[7:]] = data
        return digest

    def manifest(self, os: str, arch: str, variant: str = "") -> str:
        config = self.put({"os": os, "architecture": arch, **({"variant": variant} if variant else {})})
        return self.put({"mediaType": MANIFEST, "config": {"digest": config, "size": 1}, "layers": []})


def _desc(digest: str, media: str, platform: dict[str, str] | None = None) -> dict[str, Any]:
    return {"mediaType": media, "digest": digest, "size": 1, **({"platform": platform} if platform else {})}


def _multi() -> tuple[Saved, str, list[str]]:
    saved = Saved()
    ms = [
        saved.manifest("linux", "amd64"),
        saved.manifest("linux", "arm64"),
        saved.manifest("linux", "arm", "v7"),
    ]
    attestation = saved.put({"mediaType": MANIFEST, "config": {"digest": ms[0], "size": 1}, "layers": []})
    inner = saved.put(
        {
            "manifests": [
                _desc(ms[0], MANIFEST, {"os": "linux", "architecture": "amd64"}),
                _desc(ms[1], MANIFEST, {"os": "linux", "architecture": "arm64"}),
                _desc(attestation, MANIFEST, {"os": "unknown", "architecture": "unknown"}),
                _desc(ms[2], MANIFEST, {"os": "linux", "architecture": "arm", "variant": "v7"}),
            ]
        }
    )
    other = saved.manifest("linux", "s390x")  # another image in the same save: never followed
    saved.small["index.json"] = json.dumps(
        {"manifests": [_desc(other, MANIFEST), _desc(inner, INDEX)]}
    ).encode()
    return saved, inner, ms


def test_the_platform_is_found_inside_the_image_index() -> None:
    saved, image, ms = _multi()
    desc, manifest, _ = layers._platform_manifest(saved.small, image, "linux/arm64")
    assert desc["digest"] == ms[1] and manifest["mediaType"] == MANIFEST
    desc, _, _ = layers._platform_manifest(saved.small, image, "linux/arm/v7")
    assert desc["digest"] == ms[2] and desc["platform"]["variant"] == "v7"


def test_a_missing_platform_names_the_ones_there_and_never_an_attestation_or_another_image() -> None:
    saved, image, _ = _multi()
    desc, _, seen = layers._platform_manifest(saved.small, image, "linux/s390x")
    assert desc == {}
    assert seen == ["linux/amd64", "linux/arm64", "linux/arm/v7"]


def test_a_single_platform_image_takes_its_platform_from_its_config() -> None:
    saved = Saved()
    m = saved.manifest("linux", "amd64")
    saved.small["index.json"] = json.dumps({"manifests": [_desc(m, MANIFEST)]}).encode()
    desc, _, _ = layers._platform_manifest(saved.small, m, "linux/amd64")
    assert desc["digest"] == m and desc["platform"] == {"os": "linux", "architecture": "amd64"}


def test_a_blob_that_does_not_match_its_digest_or_an_image_not_saved_is_refused() -> None:
    saved, image, ms = _multi()
    with pytest.raises(ValueError, match="names no sha256:0"):
        layers._platform_manifest(saved.small, "sha256:" + "0" * 64, "linux/arm64")
    saved.small["blobs/sha256/" + ms[1][7:]] = b'{"tampered": true}'
    with pytest.raises(ValueError, match="does not match its digest"):
        layers._platform_manifest(saved.small, image, "linux/arm64")


def test_a_digest_that_is_not_a_sha256_never_becomes_a_path() -> None:
    bad = {"index.json": json.dumps({"manifests": [_desc("sha256:../../etc", INDEX)]}).encode()}
    with pytest.raises(ValueError, match="unexpected digest"):
        layers._platform_manifest(bad, "sha256:../../etc", "linux/amd64")


def _saved_two_platforms() -> tuple[dict[str, bytes], str, dict[str, list[str]]]:
    """A made-up `docker save` of a two-platform image, in an order that puts layers of both
    platforms before the index and manifests naming them and others after (the engine writes
    blobs in digest order: any order can come). Each platform has one small layer that starts
    with `{` (taken for JSON when read), and the save holds a member named outside the folder."""
    blobs: dict[str, bytes] = {}

    def put(data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs["blobs/sha256/" + digest[7:]] = data
        return digest

    manifests, layer_names, meta = [], {}, []
    for arch in ("amd64", "arm64"):
        layers_ = [put(b"\x1f\x8b" + f"{arch} layer {i}".encode() * 4000) for i in range(6)]
        layers_.append(put(b"{" + f"{arch} small layer that looks like JSON".encode()))
        layer_names[arch] = ["blobs/sha256/" + d[7:] for d in layers_]
        config = put(json.dumps({"os": "linux", "architecture": arch}).encode())
        body = {
            "mediaType": MANIFEST,
            "config": {"digest": config, "size": 1},
            "layers": [{"digest": d, "size": len(blobs["blobs/sha256/" + d[7:]])} for d in layers_],
        }
        manifest = put(json.dumps(body).encode())
        manifests.append(_desc(manifest, MANIFEST, {"os": "linux", "architecture": arch}))
        meta += ["blobs/sha256/" + config[7:], "blobs/sha256/" + manifest[7:]]
    image = put(json.dumps({"mediaType": INDEX, "manifests": manifests}).encode())
    meta.append("blobs/sha256/" + image[7:])
    early = layer_names["amd64"][:3] + layer_names["arm64"][:3]
    late = layer_names["amd64"][3:] + layer_names["arm64"][3:]
    order = {"blobs/sha256/../../outside": b"\x1f\x8b not a blob of this image"}
    order |= {n: blobs[n] for n in [*early, *meta, *late]}
    order["index.json"] = json.dumps({"manifests": [_desc(image, INDEX)]}).encode()
    order["oci-layout"] = b'{"imageLayoutVersion": "1.0.0"}'
    return order, image, layer_names


class _FakeEngine:
    """`docker save` from the made-up members, counting its passes, and a disk of `capacity`
    bytes whose free space is what the layout folder does not use yet."""

    def __init__(self, members: dict[str, bytes], capacity: int = 1 << 40) -> None:
        self.members, self.capacity, self.passes = members, capacity, 0

    def save(self, image: str) -> Generator[tuple[str, IO[bytes], int], None, None]:
        self.passes += 1
        for name, data in self.members.items():
            yield name, io.BufferedReader(io.BytesIO(data)), len(data)

    def free(self, folder: Path) -> int:
        used = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        return self.capacity - used


@pytest.mark.parametrize(
    ("capacity", "reserve", "passes"),
    # room for every early layer; room for two of them only (52 kB each): the rest is read again
    [(1 << 40, 20_000, 1), (600_000, 450_000, 2)],
    ids=["room", "disk-short"],
)
def test_one_platform_is_written_alone_in_one_pass_unless_the_disk_is_short(
    capacity: int, reserve: int, passes: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    members, image, names = _saved_two_platforms()
    fake = _FakeEngine(members, capacity)
    monkeypatch.setattr(layers, "_members", fake.save)
    monkeypatch.setattr(layers, "_free", fake.free)
    monkeypatch.setattr(layers, "_RESERVE", reserve)
    copied: list[str] = []
    real_copy = layers._copy

    def copy(f: IO[bytes], path: Path) -> str:
        copied.append(path.name)
        return real_copy(f, path)

    monkeypatch.setattr(layers, "_copy", copy)
    dest = tmp_path / "out" / "layout"
    config = layers.write_platform(image, "linux/arm64", dest)
    blobs = {p.name for p in (dest / "blobs" / "sha256").iterdir()}
    arm = {n.rsplit("/", 1)[1] for n in names["arm64"]}
    amd = {n.rsplit("/", 1)[1] for n in names["amd64"]}
    assert arm <= blobs and not amd & blobs, "a layer missing, or another platform's left"
    assert len(blobs) == len(arm) + 2  # its layers, its manifest and its config
    assert json.loads((dest / "blobs" / "sha256" / config[7:]).read_bytes())["architecture"] == "arm64"
    assert fake.passes == passes
    assert amd & set(copied), "no layer was written before its manifest: the case is not exercised"
    assert not (tmp_path / "outside").exists() and "outside" not in copied


def test_a_platform_the_image_lacks_is_named_and_nothing_stays_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    members, image, _ = _saved_two_platforms()
    monkeypatch.setattr(layers, "_members", _FakeEngine(members).save)
    dest = tmp_path / "layout"
    with pytest.raises(ToolError, match=r"holds no linux/s390x image \(it holds: linux/amd64, linux/arm64\)"):
        layers.write_platform(image, "linux/s390x", dest)
    assert list((dest / "blobs" / "sha256").iterdir()) == []
