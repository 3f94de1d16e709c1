"""Lockfile parsing, and the committed lockfiles of the default variant."""

from pathlib import Path

import pytest

from torchimg.errors import PipelineError
from torchimg.model import lockfile

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
