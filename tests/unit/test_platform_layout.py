"""Finding one platform's manifest in what `docker save` wrote (the containerd store nests the
image's own index inside index.json; BuildKit adds attestation manifests; a single-platform
image's descriptor names no platform): pure, no engine."""

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from torchimg import layers

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
    """A made-up `docker save` of a two-platform image: its members, in name (digest) order as
    the engine writes them, so layers come before and after the manifests naming them."""
    blobs: dict[str, bytes] = {}

    def put(data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs["blobs/sha256/" + digest[7:]] = data
        return digest

    manifests, layer_names = [], {}
    for arch in ("amd64", "arm64"):
        layers_ = [put(b"\x1f\x8b" + f"{arch} layer {i}".encode() * 4000) for i in range(6)]
        layer_names[arch] = ["blobs/sha256/" + d[7:] for d in layers_]
        config = put(json.dumps({"os": "linux", "architecture": arch}).encode())
        body = {
            "mediaType": MANIFEST,
            "config": {"digest": config, "size": 1},
            "layers": [{"digest": d, "size": len(blobs["blobs/sha256/" + d[7:]])} for d in layers_],
        }
        manifests.append(
            _desc(put(json.dumps(body).encode()), MANIFEST, {"os": "linux", "architecture": arch})
        )
    image = put(json.dumps({"mediaType": INDEX, "manifests": manifests}).encode())
    blobs["index.json"] = json.dumps({"manifests": [_desc(image, INDEX)]}).encode()
    blobs["oci-layout"] = b'{"imageLayoutVersion": "1.0.0"}'
    return dict(sorted(blobs.items())), image, layer_names


def _fake_save(members: dict[str, bytes], passes: list[int]) -> Any:
    def fake(image: str) -> Any:
        passes.append(1)
        for name, data in members.items():
            yield name, io.BufferedReader(io.BytesIO(data)), len(data)

    return fake


@pytest.mark.parametrize("disk_short", [False, True])
def test_one_platform_is_written_alone_in_one_pass_unless_the_disk_is_short(
    disk_short: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    members, image, names = _saved_two_platforms()
    passes: list[int] = []
    monkeypatch.setattr(layers, "_members", _fake_save(members, passes))
    if disk_short:  # no layer is written before its manifest is read: those are read again
        monkeypatch.setattr(layers, "_RESERVE", 1 << 62)
    dest = tmp_path / "layout"
    layers.write_platform(image, "linux/arm64", dest)
    blobs = {p.name for p in (dest / "blobs" / "sha256").iterdir()}
    assert {n.rsplit("/", 1)[1] for n in names["arm64"]} <= blobs
    assert not {n.rsplit("/", 1)[1] for n in names["amd64"]} & blobs, "another platform's layer stayed"
    assert len(blobs) == len(names["arm64"]) + 2  # its layers, its manifest and its config
    first = [n for n in members if n in names["arm64"] or n in names["amd64"]]
    early = any(members_before_manifest(members, image, n) for n in first)
    assert early, "the made-up save never puts a layer before its manifest: it tests nothing"
    assert len(passes) == (2 if disk_short else 1)


def members_before_manifest(members: dict[str, bytes], image: str, layer: str) -> bool:
    order = list(members)
    index = json.loads(members["blobs/sha256/" + image[7:]])
    manifest_names = ["blobs/sha256/" + d["digest"][7:] for d in index["manifests"]]
    return order.index(layer) < max(order.index(m) for m in [*manifest_names, "blobs/sha256/" + image[7:]])
