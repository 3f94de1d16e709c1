"""The commit an image is built from: revision, its time (SOURCE_DATE_EPOCH), source URL."""

import os
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from torchimg import paths
from torchimg.adapters import commands
from torchimg.errors import PipelineError, ToolError
from torchimg.model import record


@dataclass(frozen=True)
class GitInfo:
    revision: str
    epoch: int
    dirty: bool
    source: str


class _NoGitError(Exception):
    """git is missing, or this is not a checkout: callers fall back."""


def _git(*args: str) -> str:
    try:
        ran = commands.run("git", ["-C", str(paths.ROOT), *args])
    except ToolError:
        raise _NoGitError from None
    if ran.code != 0:
        raise _NoGitError(ran.err.strip())
    return ran.out.strip()


def show(revision: str, path: str) -> str | None:
    """A file as committed at `revision` (None: this clone lacks the commit or the file). A
    revision may come from a registry's label: one git would read as an option is none."""
    if revision.startswith("-"):
        return None
    try:
        return _git("show", f"{revision}:{path}")
    except _NoGitError:
        return None


def changed(revision: str, folder: Path) -> list[str]:
    """Files under `folder` that differ between `revision` and the working tree."""
    try:
        return _git("diff", "--name-only", revision, "--", str(folder.relative_to(paths.ROOT))).split()
    except _NoGitError as exc:
        raise ToolError(
            f"git cannot compare {paths.shown(folder)} with {revision} ({exc})",
            "run from a git checkout with full history (`git fetch --unshallow`)",
        ) from None


# What goes into the image: untracked files there make the tree dirty too.
IMAGE_INPUTS = ("docker", "requirements")
_SCP_LIKE = re.compile(r"(?P<host>[A-Za-z0-9.-]+):(?P<path>.+)", re.ASCII)


def public_url(url: str) -> str:
    """The origin URL without credentials: `https://user:token@host/x` -> `https://host/x`,
    `user:token@host:org/x.git` -> `https://host/org/x`; it goes into labels, records and
    manifests. Anything else that names a user is reduced to "unknown", never passed on."""
    url = url.strip()
    if "://" in url:
        parts = urllib.parse.urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            return "unknown"
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host  # an IPv6 address keeps its brackets
        netloc = host + (f":{port}" if port else "")
        clean = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    elif "@" in url:
        m = _SCP_LIKE.fullmatch(url.rsplit("@", 1)[1])
        if m is None:
            return "unknown"
        clean = f"https://{m['host']}/{m['path'].lstrip('/')}"
    else:
        return url  # a local path or a name without a user
    if "@" in clean:
        return "unknown"
    return clean.removesuffix(".git") if clean.startswith("https://") else clean


def current() -> GitInfo:
    """Read from git; outside a checkout, SOURCE_DATE_EPOCH (or 0) and revision 'unknown'."""
    source = os.environ.get("TORCHIMG_SOURCE", "")
    try:
        revision = _git("rev-parse", "HEAD")
        epoch = int(_git("log", "-1", "--format=%ct"))
        dirty = bool(_git("status", "--porcelain", "--untracked-files=no")) or bool(
            _git("status", "--porcelain", "--untracked-files=all", "--", *IMAGE_INPUTS)
        )
        if not source:
            source = _git("config", "--default", "", "--get", "remote.origin.url")
    except _NoGitError:
        revision, epoch, dirty = "unknown", _source_date_epoch(), True
    return GitInfo(revision, epoch, dirty, public_url(source) or "unknown")


def _source_date_epoch() -> int:
    """$SOURCE_DATE_EPOCH outside a checkout (0 when unset): whole seconds since 1970, up to
    9999-12-31 (a date tags and labels can carry)."""
    text = os.environ.get("SOURCE_DATE_EPOCH", "").strip() or "0"
    epoch = record.epoch_seconds(text)
    if epoch is None:
        raise PipelineError(
            f"$SOURCE_DATE_EPOCH {text[:40]!r} is not a time in whole seconds since 1970",
            "set it to the commit's time (`git log -1 --format=%ct`), or unset it",
        )
    return epoch


def shallow_cut(path: Path) -> str | None:
    """The commit that dates `path` when it is where this clone's history is cut (a shallow
    clone: git counts every file as changed in its oldest commit), so the date is not the
    file's own; None when it is (full history, or the file changed within the clone's)."""
    try:
        if _git("rev-parse", "--is-shallow-repository") != "true":
            return None
        last = _git("log", "-1", "--format=%H", "--", str(path))
        shallow = Path(_git("rev-parse", "--git-path", "shallow"))
        cut = (shallow if shallow.is_absolute() else paths.ROOT / shallow).read_text().split()
    except (_NoGitError, OSError):
        return None
    return last if last in cut else None


def path_epoch(path: Path, fallback: int) -> int:
    """Commit time of the last commit that touched `path` (fallback: not committed yet)."""
    try:
        out = _git("log", "-1", "--format=%ct", "--", str(path))
    except _NoGitError:
        return fallback
    return int(out) if out else fallback
