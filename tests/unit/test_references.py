"""Image references against Docker's grammar: what users write is accepted, typos are not."""

import pytest

from torchimg.errors import PipelineError
from torchimg.model import references

DIGEST = "sha256:" + "d7e12182" * 8


@pytest.mark.parametrize(
    "ref",
    ["pytorch", "localhost:5000/pytorch", "ghcr.io/org/team/pytorch", "127.0.0.1:5000/a_b/c-d.e",
     "[::1]:5000/pytorch", "registry.example.com:443/ml/pytorch", "[::1]/pytorch", "localhost:65535/pytorch",
     "localhost:1/pytorch"],
)  # fmt: skip
def test_valid_repositories(ref: str) -> None:
    assert references.repository(ref, "--repository") == ref


@pytest.mark.parametrize(
    "ref",
    ["Localhost:5000/PyTorch", "localhost:abc/pytorch", "localhost:5000/a..b", "pytorch:latest",
     f"pytorch@{DIGEST}", "UPPER/pytorch", "", "a/", "/a", "a b", "-a/b", "a" * 256,
     "localhost:0/pytorch", "localhost:65536/pytorch", "[::1]:99999/pytorch", "host.example:0000000005000/x"],
)  # fmt: skip
def test_invalid_repositories(ref: str) -> None:
    with pytest.raises(PipelineError, match="--repository"):
        references.repository(ref, "--repository")


@pytest.mark.parametrize(
    "ref",
    ["local/debian:trixie", f"docker.io/library/debian:trixie-slim@{DIGEST}", f"debian@{DIGEST}", "debian"],
)
def test_valid_images(ref: str) -> None:
    assert references.image(ref, "--base") == ref


@pytest.mark.parametrize("ref", ["UPPER/debian:trixie", "debian:", "debian@sha256:12", "debian:-x"])
def test_invalid_images(ref: str) -> None:
    with pytest.raises(PipelineError, match="--base"):
        references.image(ref, "--base")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("pytorch", "docker.io/library/pytorch"),
        ("org/x", "docker.io/org/x"),
        ("127.0.0.1:5000/p", "localhost:5000/p"),
    ],
)
def test_two_spellings_of_one_repository_are_one(a: str, b: str) -> None:
    assert references.canonical(a) == references.canonical(b)
    assert references.canonical(a) != references.canonical(b + "-staging")
