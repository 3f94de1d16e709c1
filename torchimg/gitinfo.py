"""The commit an image is built from: revision, its time (SOURCE_DATE_EPOCH), source URL."""

import os
from dataclasses import dataclass
from pathlib import Path

from plumbum import local
from plumbum.commands.processes import CommandNotFound, ProcessExecutionError

from torchimg import paths


@dataclass(frozen=True)
class GitInfo:
    revision: str
    epoch: int
    dirty: bool
    source: str


def _git(*args: str) -> str:
    git = local["git"]["-C", str(paths.ROOT)]
    return str(git(*args)).strip()


def current() -> GitInfo:
    """Read from git; outside a checkout, SOURCE_DATE_EPOCH (or 0) and revision 'unknown'."""
    source = os.environ.get("TORCHIMG_SOURCE", "")
    try:
        revision = _git("rev-parse", "HEAD")
        epoch = int(_git("log", "-1", "--format=%ct"))
        dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
        if not source:
            source = _git("config", "--default", "", "--get", "remote.origin.url")
    except (ProcessExecutionError, CommandNotFound):
        revision, epoch, dirty = "unknown", int(os.environ.get("SOURCE_DATE_EPOCH", "0")), True
    return GitInfo(revision, epoch, dirty, source or "unknown")


def path_epoch(path: Path, fallback: int) -> int:
    """Commit time of the last commit that touched `path` (fallback: not committed yet)."""
    try:
        out = _git("log", "-1", "--format=%ct", "--", str(path))
    except (ProcessExecutionError, CommandNotFound):
        return fallback
    return int(out) if out else fallback
