"""variants.toml is validated on load: every bad input names the entry and the fix."""

from pathlib import Path

import pytest

from torchimg.errors import PipelineError
from torchimg.model import variants

DIGEST = "sha256:" + "a" * 64
GOOD = f"""
default = "v1"
repository = "localhost:5000/pytorch"
[bases.deb]
image = "docker.io/library/debian:trixie-slim@{DIGEST}"
python = "3.13"
[[variant]]
name = "v1"
torch = "2.9.1"
cuda = "cu128"
base = "deb"
"""


def load_text(tmp_path: Path, text: str) -> variants.Config:
    src = tmp_path / "variants.toml"
    src.write_text(text)
    return variants.load(src)


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(PipelineError) as exc:
        load_text(tmp_path, text)
    return str(exc.value)


def test_a_good_file_loads(tmp_path: Path) -> None:
    config = load_text(tmp_path, GOOD)
    v = config.variant("v1")
    assert (v.torch_requirement, v.base.digest, v.base.name) == (
        "torch==2.9.1",
        DIGEST,
        "docker.io/library/debian:trixie-slim",
    )


def test_unknown_variant_lists_the_declared_ones(tmp_path: Path) -> None:
    config = load_text(tmp_path, GOOD)
    with pytest.raises(PipelineError, match=r"unknown variant 'nope'; declared: v1"):
        config.variant("nope")


def test_a_pair_pytorch_never_shipped_is_refused(tmp_path: Path) -> None:
    text = GOOD.replace('torch = "2.9.1"\ncuda = "cu128"', 'torch = "2.7.1"\ncuda = "cu130"')
    assert "torch 2.7.1 is not published for cu130" in error_of(tmp_path, text)


def test_an_unknown_torch_release_is_refused(tmp_path: Path) -> None:
    text = GOOD.replace('torch = "2.9.1"', 'torch = "1.13.1"')
    assert "no entry for torch 1.13" in error_of(tmp_path, text)


def test_a_base_without_digest_is_refused(tmp_path: Path) -> None:
    text = GOOD.replace(f"@{DIGEST}", "")
    msg = error_of(tmp_path, text)
    assert "is not pinned by digest" in msg
    assert "imagetools inspect" in msg


def test_malformed_toml_names_the_file(tmp_path: Path) -> None:
    assert "variants.toml: not valid TOML" in error_of(tmp_path, GOOD + "\n[[variant]\n")


def test_a_typo_in_a_key_is_refused(tmp_path: Path) -> None:
    msg = error_of(tmp_path, GOOD.replace('cuda = "cu128"', 'cuda = "cu128"\ncdua = "x"'))
    assert "unknown key(s) cdua" in msg


def test_missing_key_and_unknown_base(tmp_path: Path) -> None:
    assert "missing key 'torch'" in error_of(tmp_path, GOOD.replace('torch = "2.9.1"\n', ""))
    assert "unknown base 'nope'" in error_of(tmp_path, GOOD.replace('base = "deb"', 'base = "nope"'))


def test_default_must_be_declared(tmp_path: Path) -> None:
    assert "default 'v2' is not a declared variant" in error_of(
        tmp_path, GOOD.replace('default = "v1"', 'default = "v2"')
    )


def test_flavors_are_checked(tmp_path: Path) -> None:
    text = GOOD.replace('base = "deb"', 'base = "deb"\nflavors = ["dev"]')
    assert "list runtime first" in error_of(tmp_path, text)


def test_builder_and_cache_are_optional_settings(tmp_path: Path) -> None:
    assert load_text(tmp_path, GOOD).builder is None
    config = load_text(tmp_path, 'builder = "remote"\ncache = "localhost:5000/cache"\n' + GOOD)
    assert (config.builder, config.cache) == ("remote", "localhost:5000/cache")
    assert "builder must be a str" in error_of(tmp_path, "builder = 1\n" + GOOD)


def test_locked_selects_the_variants_with_committed_lockfiles(config: variants.Config) -> None:
    assert [v.name for v in config.select([], locked=True)] == ["2.9.1-cu128"]


def test_platforms_default_to_amd64_and_are_checked(tmp_path: Path) -> None:
    assert load_text(tmp_path, GOOD).variant("v1").platforms == ("linux/amd64",)
    assert "platforms ['linux/amd64', 'linux/s390x'] invalid" in error_of(
        tmp_path, GOOD + 'platforms = ["linux/amd64", "linux/s390x"]\n'
    )
    assert "non-empty list" in error_of(tmp_path, GOOD + "platforms = []\n")
    assert "each once" in error_of(tmp_path, GOOD + 'platforms = ["linux/arm64", "linux/arm64"]\n')


def test_arm64_of_a_torch_whose_pypi_aarch64_wheel_is_cpu_only_is_refused(tmp_path: Path) -> None:
    message = error_of(tmp_path, GOOD + 'platforms = ["linux/amd64", "linux/arm64"]\n')
    assert "torch 2.9.1 on PyPI is a CPU-only build on linux/arm64" in message
    assert "https://download.pytorch.org/whl/cu128" in message
    current = GOOD.replace('"2.9.1"', '"2.15.0"').replace('"cu128"', '"cu132"')
    v = load_text(tmp_path, current + 'platforms = ["linux/amd64", "linux/arm64"]\n').variant("v1")
    assert v.platforms == ("linux/amd64", "linux/arm64")
    assert v.torch_requirement == "torch==2.15.0"
