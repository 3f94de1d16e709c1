"""Lockfile parsing, and the committed lockfiles of the default variant."""

from pathlib import Path

import pytest

from torchimg import lockfile, variants
from torchimg.errors import PipelineError

SAMPLE = """# Lockfile of variant v, flavor runtime. Made by `nox -s lock`: do not edit.
# variant: v
# flavor: runtime
# python: 3.13
# platform: linux-x86_64
# index: https://pypi.org/simple
--only-binary :all:

Jinja2==3.1.6 \\
    --hash=sha256:abc
    # via torch
torch==2.9.1 \\
    --hash=sha256:def
typing_extensions==4.16.0 \\
    --hash=sha256:123
"""


def test_pins_are_normalized_names_to_versions() -> None:
    assert lockfile.pins(SAMPLE) == {
        "jinja2": "3.1.6",
        "torch": "2.9.1",
        "typing-extensions": "4.16.0",
    }


def test_header_round_trip(tmp_path: Path) -> None:
    info = lockfile.LockInfo("v", "runtime", "3.13", "linux-x86_64", "https://pypi.org/simple")
    path = tmp_path / "runtime.txt"
    path.write_text(info.header() + "torch==2.9.1\n")
    assert lockfile.read_info(path) == info


def test_a_lockfile_without_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "runtime.txt"
    path.write_text("torch==2.9.1\n")
    with pytest.raises(PipelineError, match="lockfile header lacks variant, flavor, python"):
        lockfile.read_info(path)


def test_shared_mismatches() -> None:
    assert lockfile.shared_mismatches({"a": "1", "b": "2"}, {"a": "1", "b": "3", "c": "4"}) == [
        "b: runtime 2, dev 3"
    ]


def test_committed_default_locks_are_consistent() -> None:
    variant = variants.load().variant("2.9.1-cu128")
    runtime = variant.lock_dir / "runtime.txt"
    dev = variant.lock_dir / "dev.txt"
    info = lockfile.read_info(runtime)
    assert (info.variant, info.flavor, info.python, info.index) == (
        "2.9.1-cu128",
        "runtime",
        variant.base.python,
        variant.index,
    )
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
