"""Lockfile parsing, and the committed lockfiles of the default variant."""

import os
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


H1, H2 = "a" * 64, "b" * 64
EXACT = f"""--only-binary :all:
legacy-thing===2013b0 --hash=sha256:{H1}
filelock==3.20.0 \\
    --hash=sha256:{H1} \\
    --hash=sha256:{H2}
    # via torch
loose>=1.0 --hash=sha256:{H2}
torch==2.9.1+cu128 --hash=sha256:{H2}
marked==1.0 ; python_version >= "3.8" \\
    --hash=sha256:{H1}
"""


def test_pins_and_hashes_read_the_lines_verify_accepts_and_leave_out_the_rest() -> None:
    pinned = {"legacy-thing": "2013b0", "filelock": "3.20.0", "torch": "2.9.1+cu128", "marked": "1.0"}
    assert lockfile.pins(EXACT) == pinned
    assert lockfile.hashes(EXACT) == {
        "legacy-thing": {H1},
        "filelock": {H1, H2},
        "torch": {H2},
        "marked": {H1},
    }


def test_verify_accepts_arbitrary_equality_and_refuses_a_range(tmp_path: Path) -> None:
    path = tmp_path / "v" / "runtime.txt"
    path.parent.mkdir()
    path.write_text(EXACT.replace(f"loose>=1.0 --hash=sha256:{H2}\n", ""))
    assert lockfile.verify(path, "2.9.1+cu128", True) == lockfile.pins(EXACT)
    path.write_text(EXACT)
    with pytest.raises(PipelineError, match="line 7: loose is not pinned"):
        lockfile.verify(path, "2.9.1+cu128", True)


def test_only_the_leading_comment_block_is_the_header(tmp_path: Path) -> None:
    info = lockfile.LockInfo("v", "runtime", "3.13", "linux-x86_64", "https://pypi.org/simple")
    path = tmp_path / "runtime.txt"
    path.write_text(info.header() + "torch==2.9.1\n# index: https://evil.example/simple\n")
    assert lockfile.read_info(path) == info
    path.write_text(info.header() + "# index: https://evil.example/simple\ntorch==2.9.1\n")
    with pytest.raises(PipelineError, match="names index twice"):
        lockfile.read_info(path)


@pytest.mark.parametrize("kind", ["fifo", "device", "folder"])
def test_a_lockfile_that_is_not_a_regular_file_is_named_not_read(tmp_path: Path, kind: str) -> None:
    """A FIFO would hang the build, a link to /dev/zero exhaust the memory."""
    path = tmp_path / "2.9.1-cu128" / "runtime.txt"
    path.parent.mkdir()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        path.symlink_to("/dev/zero")
    else:
        path.mkdir()
    for read in (lockfile.read_text, lockfile.sha256, lockfile.read_info):
        with pytest.raises(PipelineError, match=r"runtime.txt: cannot be read as a lockfile") as exc:
            read(path)
        assert "nox -s lock -- --variant 2.9.1-cu128" in exc.value.fix
