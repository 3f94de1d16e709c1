"""Finding one platform's manifest in what `docker save` wrote (the containerd store nests the
image's own index inside index.json; BuildKit adds attestation manifests): pure, no engine."""

import json

from torchimg import layers

INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _digest(n: int) -> str:
    return "sha256:" + f"{n:x}".rjust(64, "0")


def _desc(n: int, media: str, platform: dict[str, str] | None = None) -> dict[str, object]:
    d: dict[str, object] = {"mediaType": media, "digest": _digest(n), "size": 1}
    if platform:
        d["platform"] = platform
    return d


def _saved() -> dict[str, bytes]:
    inner = {
        "manifests": [
            _desc(1, MANIFEST, {"os": "linux", "architecture": "amd64"}),
            _desc(2, MANIFEST, {"os": "linux", "architecture": "arm64"}),
            _desc(3, MANIFEST, {"os": "unknown", "architecture": "unknown"}),  # attestation
            _desc(4, MANIFEST, {"os": "linux", "architecture": "arm", "variant": "v7"}),
        ]
    }
    return {
        "index.json": json.dumps({"manifests": [_desc(9, INDEX)]}).encode(),
        "blobs/sha256/" + _digest(9)[7:]: json.dumps(inner).encode(),
    }


def test_the_platform_is_found_inside_the_nested_index() -> None:
    desc, _ = layers._platform_manifest(_saved(), "linux/arm64")
    assert desc["digest"] == _digest(2)
    desc, _ = layers._platform_manifest(_saved(), "linux/arm/v7")
    assert desc["digest"] == _digest(4)


def test_a_missing_platform_names_the_ones_there_and_never_an_attestation() -> None:
    desc, seen = layers._platform_manifest(_saved(), "linux/s390x")
    assert desc == {}
    assert seen == ["linux/amd64", "linux/arm64", "linux/arm/v7"]


def test_a_digest_that_is_not_a_sha256_never_becomes_a_path() -> None:
    bad = {
        "index.json": json.dumps({"manifests": [{"mediaType": INDEX, "digest": "sha256:../../etc"}]}).encode()
    }
    try:
        layers._platform_manifest(bad, "linux/amd64")
    except ValueError as exc:
        assert "unexpected digest" in str(exc)
    else:
        raise AssertionError("a path-like digest was followed")
