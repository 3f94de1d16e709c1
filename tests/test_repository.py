"""Checks of this repository's own data, not of the code: the declared matrix, the committed
lockfiles, the Dockerfile's default base and the allowlist agree with each other."""

import datetime

import pytest

from torchimg import paths
from torchimg.model import allowlist, lockfile, torch_builds, variants

TODAY = datetime.date.today()


_LOCKED = [v.name for v in variants.load().variants.values() if (v.lock_dir / "runtime.txt").is_file()]


def test_the_default_and_the_current_torch_have_committed_locks() -> None:
    assert {"2.9.1-cu128", "2.15.0-cu132"} <= set(_LOCKED)


@pytest.mark.parametrize("name", _LOCKED)
def test_committed_locks_are_consistent(name: str) -> None:
    variant = variants.load().variant(name)
    runtime = variant.lock_dir / "runtime.txt"
    dev = variant.lock_dir / "dev.txt"
    info = lockfile.read_info(runtime)
    assert (info.variant, info.flavor, info.python, info.index) == (
        name,
        "runtime",
        variant.base.python,
        variant.index,
    )
    dev_info = lockfile.read_info(dev)
    assert (dev_info.variant, dev_info.flavor, dev_info.python) == (name, "dev", variant.base.python)
    runtime_pins = lockfile.pins(runtime.read_text())
    dev_pins = lockfile.pins(dev.read_text())
    assert runtime_pins["torch"] == variant.torch
    assert "torch" not in dev_pins  # dev adds packages on top of runtime, never a second torch
    assert {"jupyterlab", "matplotlib", "pandas", "scikit-learn", "seaborn", "tqdm"} <= set(dev_pins)
    assert lockfile.shared_mismatches(runtime_pins, dev_pins) == []
    text = runtime.read_text() + dev.read_text()
    for leak in ("/opt/", "file://", "--find-links", "--extra-index-url", "/tmp/"):
        assert leak not in text
    requirement_lines = [ln for ln in text.splitlines() if ln[:1].isalnum()]
    assert all(ln.endswith("\\") for ln in requirement_lines)  # every pin carries hashes


def test_the_repository_file_declares_the_required_matrix() -> None:
    config = variants.load()
    assert config.default == "2.9.1-cu128"
    assert {"2.9.1-cu128", "2.9.1-cu126", "2.9.1-cu130", "2.9.1-cpu"} <= set(config.variants)
    default = config.variant("2.9.1-cu128")
    assert default.index == torch_builds.PYPI_INDEX
    assert default.base.image.startswith("docker.io/library/debian:trixie-slim@sha256:")
    assert default.base.python == "3.13"
    assert default.flavors == ("runtime", "dev")
    assert config.variant("2.9.1-cu126").torch_requirement == "torch==2.9.1+cu126"
    assert config.variant("2.9.1-cu130").index == "https://download.pytorch.org/whl/cu130"
    assert config.variant("2.9.1-cpu").cuda_info is None
    assert any(v.base.image.startswith("docker.io/nvidia/cuda:") for v in config.variants.values())


def test_dockerfile_default_base_is_the_default_variants_base() -> None:
    config = variants.load()
    dockerfile = paths.DOCKERFILE.read_text()
    default_base = config.variant(config.default).base.image
    assert f"ARG BASE_IMAGE={default_base}\n" in dockerfile


def test_the_repository_allowlist_loads() -> None:
    allowlist.load(paths.ROOT / "scan-allowlist.toml", TODAY)
