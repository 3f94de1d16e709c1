"""Unit-test fixtures: a small repository of their own (a frozen variants file and lockfiles
written here), so that no unit test depends on the project's current variants or locks."""

import shutil
from pathlib import Path

import pytest

from torchimg.model import variants

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "repo" / "variants.toml"
HASH = "--hash=sha256:" + "0" * 64  # test data: these lockfiles are never installed


def _pin(name: str, version: str) -> str:
    return f"{name}=={version} \\\n    {HASH}\n    # via -r requirements/runtime.in\n"


def lockfile_text(variant: str, flavor: str, pins: dict[str, str], python: str = "3.13") -> str:
    """A lockfile in the shape `nox -s lock` writes: its header, pip's option, hashed pins."""
    header = (
        f"# Lockfile of variant {variant}, flavor {flavor}. Made by `nox -s lock`: do not edit.\n"
        f"# variant: {variant}\n# flavor: {flavor}\n# python: {python}\n"
        "# platform: linux-x86_64\n# index: https://pypi.org/simple\n--only-binary :all:\n\n"
    )
    return header + "".join(_pin(n, v) for n, v in sorted(pins.items()))


RUNTIME_PINS = {
    "filelock": "4.3.1",
    "nvidia-cuda-runtime-cu12": "12.8.90",
    "nvidia-cudnn-cu12": "9.10.2.21",
    "nvidia-nccl-cu12": "2.27.5",
    "torch": "2.9.1",
}
DEV_PINS = {"filelock": "4.3.1", "jupyterlab": "4.4.9"}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository root: variants.toml and the lockfiles of the default variant only."""
    shutil.copy(FIXTURE, tmp_path / "variants.toml")
    locks = tmp_path / "requirements" / "locks" / "2.9.1-cu128"
    locks.mkdir(parents=True)
    (locks / "runtime.txt").write_text(lockfile_text("2.9.1-cu128", "runtime", RUNTIME_PINS))
    (locks / "dev.txt").write_text(lockfile_text("2.9.1-cu128", "dev", DEV_PINS))
    return tmp_path


@pytest.fixture
def config(repo: Path) -> variants.Config:
    return variants.load(repo / "variants.toml")
