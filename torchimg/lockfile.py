"""Reading and writing lockfiles: the header the pipeline adds, the pins pip-compile wrote."""

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from torchimg.errors import PipelineError

_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)")
_FIELDS = ("variant", "flavor", "python", "platform", "index")


@dataclass(frozen=True)
class LockInfo:
    """What a lockfile was compiled for: the build refuses a base whose Python differs."""

    variant: str
    flavor: str
    python: str
    platform: str
    index: str

    def header(self) -> str:
        lines = [
            f"# Lockfile of variant {self.variant}, flavor {self.flavor}. Made by `nox -s lock`: "
            "do not edit.",
            *(f"# {k}: {getattr(self, k)}" for k in _FIELDS),
        ]
        return "\n".join(lines) + "\n"


def normalize(name: str) -> str:
    """PEP 503 normalized project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(text: str) -> dict[str, str]:
    """name -> exact version for every requirement line of a pip-compile output."""
    found = {}
    for line in text.splitlines():
        if m := _PIN.match(line):
            found[normalize(m["name"])] = m["version"]
    return found


def read_info(path: Path) -> LockInfo:
    """The header fields of a lockfile written by `nox -s lock`."""
    values = {}
    for line in path.read_text().splitlines():
        for key in _FIELDS:
            if line.startswith(f"# {key}: "):
                values[key] = line.split(": ", 1)[1].strip()
    missing = [k for k in _FIELDS if k not in values]
    if missing:
        raise PipelineError(
            f"{path}: lockfile header lacks {', '.join(missing)}",
            "recompile it with `nox -s lock` (never edit a lockfile by hand)",
        )
    return LockInfo(**values)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def shared_mismatches(runtime: dict[str, str], dev: dict[str, str]) -> list[str]:
    """Packages both locks pin, at different versions: the dev image must not change them."""
    return [
        f"{n}: runtime {runtime[n]}, dev {dev[n]}"
        for n in sorted(runtime.keys() & dev.keys())
        if runtime[n] != dev[n]
    ]
