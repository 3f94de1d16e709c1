"""The kernel's binfmt_misc: whether this machine can run another architecture's binaries
(QEMU user emulation), which a foreign platform's image build and its CPU-mode test need."""

import platform as host
from pathlib import Path

from torchimg.errors import ToolError

BINFMT = Path("/proc/sys/fs/binfmt_misc")
# Docker platform -> (the machine name `uname -m` prints there, the binfmt_misc entry name)
_MACHINES = {"linux/amd64": ("x86_64", "qemu-x86_64"), "linux/arm64": ("aarch64", "qemu-aarch64")}
_FIX = (
    "enable QEMU user emulation for {machine}, QEMU 10 or newer (7.2, Debian 12's, crashes in "
    "`import torch`): on Debian 13 as root, `apt-get install "
    "qemu-user-static`, `mount -t binfmt_misc binfmt_misc {binfmt}` (if not mounted) and "
    "`cat /usr/lib/binfmt.d/{entry}.conf > {binfmt}/register`; where images can be pulled, "
    "`docker run --privileged --rm tonistiigi/binfmt --install {short}` does the same"
)


def engine_platform() -> str:
    """The platform this machine runs natively (what an image runs as without --platform)."""
    return next((p for p, (machine, _) in _MACHINES.items() if machine == host.machine()), host.machine())


def native(platform: str) -> bool:
    """This machine runs `platform`'s binaries without emulation."""
    return _MACHINES[platform][0] == host.machine()


def require(platform: str) -> None:
    """Fail (exit 3) with the exact fix when `platform` needs an emulator that isn't registered.

    The entry must be enabled and have the F flag (the interpreter opened at registration):
    without it the emulator is not found inside a container's root file system.
    """
    if native(platform):
        return
    machine, entry = _MACHINES[platform]
    fix = _FIX.format(machine=machine, binfmt=BINFMT, entry=entry, short=platform.split("/")[1])
    status = BINFMT / "status"
    if not status.exists():
        raise ToolError(f"{platform} needs emulation, and binfmt_misc is not mounted at {BINFMT}", fix)
    try:
        lines = (BINFMT / entry).read_text().splitlines()
    except OSError:
        what = f"{platform} needs emulation, and no {entry} entry is registered in {BINFMT}"
        raise ToolError(what, fix) from None
    flags = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("flags:")), "")
    if "enabled" not in lines or "F" not in flags:
        no_f = f"registered without the F flag (flags: {flags or 'none'})"
        state = "disabled" if "enabled" not in lines else no_f
        raise ToolError(f"{platform} needs emulation, and {BINFMT / entry} is {state}", fix)
