"""The emulation check reads binfmt_misc: each way it can be missing is named, with the fix."""

from pathlib import Path

import pytest

from torchimg.adapters import emulation
from torchimg.errors import ToolError

ENABLED = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POF\noffset 0\n"


@pytest.fixture
def binfmt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(emulation, "BINFMT", tmp_path)
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    return tmp_path


def problem(platform: str = "linux/arm64") -> str:
    with pytest.raises(ToolError) as exc:
        emulation.require(platform)
    assert "qemu-user-static" in exc.value.fix and "binfmt" in exc.value.fix
    return exc.value.what


def test_the_native_platform_needs_nothing(binfmt: Path) -> None:
    emulation.require("linux/amd64")
    assert emulation.native("linux/amd64") and not emulation.native("linux/arm64")


def test_binfmt_misc_not_mounted(binfmt: Path) -> None:
    assert "binfmt_misc is not mounted" in problem()


def test_no_entry_disabled_entry_and_entry_without_the_f_flag(binfmt: Path) -> None:
    (binfmt / "status").write_text("enabled\n")
    assert "no qemu-aarch64 entry" in problem()
    (binfmt / "qemu-aarch64").write_text(ENABLED.replace("enabled", "disabled"))
    assert "is disabled" in problem()
    (binfmt / "qemu-aarch64").write_text(ENABLED.replace("POF", "P"))
    assert "without the F flag (flags: P)" in problem()
    (binfmt / "qemu-aarch64").write_text(ENABLED)
    emulation.require("linux/arm64")
