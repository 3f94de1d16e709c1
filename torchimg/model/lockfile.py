"""Reading and writing lockfiles: the header the pipeline adds, the pins pip-compile wrote."""

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from torchimg import userfiles
from torchimg.errors import PipelineError

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


def pins(text: str) -> dict[str, str]:
    """name -> exact version for every requirement line of a pip-compile output (lines that are
    not one exact pin are left out: `verify` is what refuses them)."""
    return {name: version for name, version, _ in _pinned(text)}


def _fix(path: Path) -> str:
    return f"recompile it: `nox -s lock -- --variant {path.parent.name}` (never edit a lockfile by hand)"


def _bytes(path: Path) -> bytes:
    """A lockfile's bytes; one that cannot be read (a folder, unreadable) is named."""
    try:
        return read_bytes(path)
    except OSError as exc:
        raise PipelineError(
            f"{path}: cannot be read as a lockfile ({exc.strerror or exc})", _fix(path)
        ) from None


def read_text(path: Path) -> str:
    """A lockfile's text (UTF-8, a regular file of at most MAX_BYTES); PipelineError naming it."""
    try:
        return _bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        raise PipelineError(f"{path.name}: not UTF-8 text", _fix(path)) from None


def read_info(path: Path) -> LockInfo:
    """The header fields of a lockfile written by `nox -s lock`."""
    values = {}
    fix = _fix(path)
    for line in read_text(path).splitlines():
        if not line.startswith("#"):
            break  # the header is the leading comment block: a comment further down is not it
        for key in _FIELDS:
            if line.startswith(f"# {key}: "):
                if key in values:
                    raise PipelineError(f"{path}: lockfile header names {key} twice", fix)
                values[key] = line.split(": ", 1)[1].strip()
    missing = [k for k in _FIELDS if k not in values]
    if missing:
        raise PipelineError(
            f"{path}: lockfile header lacks {', '.join(missing)}",
            "recompile it with `nox -s lock` (never edit a lockfile by hand)",
        )
    return LockInfo(**values)


MAX_BYTES = 16 * 2**20  # the largest lockfile here is about 150 kB


def read_bytes(path: Path) -> bytes:
    """A lockfile's bytes: a regular file of at most MAX_BYTES (a FIFO or a link to a device put
    in its place would hang the read or never end). Raises OSError with strerror."""
    return userfiles.read(path, MAX_BYTES)


def sha256(path: Path) -> str:
    """The lockfile's sha256 (hex); PipelineError naming it when it cannot be read."""
    return hashlib.sha256(_bytes(path)).hexdigest()


def shared_mismatches(runtime: dict[str, str], dev: dict[str, str]) -> list[str]:
    """Packages both locks pin, at different versions: the dev image must not change them."""
    return [
        f"{n}: runtime {runtime[n]}, dev {dev[n]}"
        for n in sorted(runtime.keys() & dev.keys())
        if runtime[n] != dev[n]
    ]


# The only pip option a lockfile may carry: wheels only (pip-compile writes it from --pip-args).
_ALLOWED_OPTIONS = ("--only-binary :all:", "--only-binary=:all:")
_HASH = re.compile(r"^--hash=sha256:[0-9a-f]{64}$")


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, text) of each requirement line, continuations joined, comments dropped."""
    out: list[tuple[int, str]] = []
    pending, start = "", 0
    for n, raw in enumerate(text.splitlines(), start=1):
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if not pending:
            start = n
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        pending += line
        if pending.strip():
            out.append((start, pending.strip()))
        pending = ""
    if pending.strip():
        out.append((start, pending.strip()))
    return out


def _parse(line: str) -> tuple[Requirement, list[str]]:
    """One logical requirement line: the requirement, and its `--` options (hashes).
    Raises ValueError (InvalidRequirement is one) for a line that is not a requirement."""
    words = line.split()  # not shlex: an environment marker's quotes are the requirement's
    spec = [w for w in words if not w.startswith("--")]
    return Requirement(" ".join(spec)), [w for w in words if w.startswith("--")]


def _exact(req: Requirement) -> str | None:
    """The one version a requirement pins (`==` or `===`, no wildcard, no URL), else None."""
    specs = list(req.specifier)
    if req.url or len(specs) != 1 or specs[0].operator not in ("==", "===") or "*" in specs[0].version:
        return None
    return specs[0].version


def _pinned(text: str) -> list[tuple[str, str, list[str]]]:
    """(normalized name, version, options) of each line that pins one exact version."""
    out: list[tuple[str, str, list[str]]] = []
    for _, line in _logical_lines(text):
        if line.startswith("-"):
            continue
        try:
            req, options = _parse(line)
        except ValueError:
            continue
        if (version := _exact(req)) is not None:
            out.append((canonicalize_name(req.name), version, options))
    return out


def verify(path: Path, torch: str, torch_required: bool) -> dict[str, str]:
    """A lockfile installs exactly what it names: every requirement pinned to one version (`==`,
    or `===`) with sha256 hashes, no index, find-links or other pip option, and torch (required,
    or where present) pinned to exactly `torch` (local version label included: 2.9.1+cu126).
    Returns its pins."""
    fix = _fix(path)
    text = read_text(path)
    found: dict[str, str] = {}
    for n, line in _logical_lines(text):
        where = f"{path.name} line {n}"
        if line.startswith("-"):
            if line in _ALLOWED_OPTIONS:
                continue
            raise PipelineError(f"{where}: pip option(s) {line[:100]!r} in a lockfile", fix)
        try:
            req, options = _parse(line)
        except ValueError as exc:
            raise PipelineError(f"{where}: not a requirement ({exc})", fix) from None
        version = _exact(req)
        if version is None:
            raise PipelineError(f"{where}: {req.name} is not pinned with == to one version", fix)
        bad = [o for o in options if not _HASH.match(o)]
        if bad or not options:
            what = f"option {bad[0]!r}" if bad else "no --hash=sha256:..."
            raise PipelineError(f"{where}: {req.name}: {what}", fix)
        name = canonicalize_name(req.name)
        if name in found:
            raise PipelineError(f"{where}: {req.name} pinned twice ({found[name]}, {version})", fix)
        found[name] = version
    if ("torch" in found or torch_required) and found.get("torch") != torch:
        raise PipelineError(
            f"{path.name} pins torch {found.get('torch', '(none)')}, "
            f"but variants.toml asks for torch {torch}",
            fix,
        )
    return found


def hashes(text: str) -> dict[str, set[str]]:
    """name -> the sha256 hashes a lockfile allows for it (every wheel of the pinned version)."""
    return {
        name: {o.split(":", 1)[1] for o in options if _HASH.match(o)} for name, _, options in _pinned(text)
    }
