"""The variant matrix, declared once in variants.toml and validated on load.

A variant is torch x CUDA x base image; each variant builds the flavors `runtime` and `dev`.
"""

import difflib
import re
import tomllib
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torchimg import paths, userfiles
from torchimg.errors import PipelineError
from torchimg.model import references, torch_builds

FLAVORS = ("runtime", "dev")
# The platforms an image can be built for, and the machine name (platform_machine) of each.
PLATFORMS = {"linux/amd64": "x86_64", "linux/arm64": "aarch64"}
NATIVE_PLATFORM = "linux/amd64"
MIN_PYTHON_MINOR = 10
_PYTORCH_TAG = re.compile(r"https://download\.pytorch\.org/whl/(?P<tag>[a-z0-9]+)/?", re.ASCII)
_DIGEST = re.compile(r"(?P<name>[^@\s]+)@(?P<digest>sha256:[0-9a-f]{64})", re.ASCII)
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*", re.ASCII)
_INDEX = re.compile(r"https://[A-Za-z0-9.-]+(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~%/+-]*)?", re.ASCII)


@dataclass(frozen=True)
class Base:
    """A base image pinned by digest, and the Python minor version it provides."""

    key: str
    image: str
    python: str

    @property
    def name(self) -> str:
        """The reference without its digest, e.g. docker.io/library/debian:trixie-slim."""
        return self.image.split("@", 1)[0]

    @property
    def digest(self) -> str:
        return self.image.split("@", 1)[1]


@dataclass(frozen=True)
class Variant:
    """One image line: torch version, CUDA build, the one index torch comes from, the base."""

    name: str
    torch: str
    cuda: str
    index: str
    base: Base
    flavors: tuple[str, ...]
    lock_dir: Path
    platforms: tuple[str, ...] = (NATIVE_PLATFORM,)

    @property
    def cuda_info(self) -> torch_builds.Cuda | None:
        return torch_builds.CUDA.get(self.cuda)

    @property
    def locked(self) -> bool:
        """Its lockfiles are committed, so it can be built anywhere."""
        return (self.lock_dir / "runtime.txt").exists()

    @property
    def torch_requirement(self) -> str:
        return torch_builds.torch_requirement(self.torch, self.cuda, self.index)

    def lock_index(self, flavor: str) -> str:
        """The index a flavor's lockfile resolves from: the runtime lock torch's (with its CUDA
        wheels), the dev lock PyPI's (what dev adds: Jupyter and friends)."""
        return self.index if flavor == "runtime" else torch_builds.PYPI_INDEX


@dataclass(frozen=True)
class Config:
    """Everything variants.toml declares."""

    default: str
    repository: str
    bases: dict[str, Base]
    variants: dict[str, Variant]
    builder: str | None = None
    cache: str | None = None
    staging: str | None = None
    source: Path = paths.VARIANTS_FILE

    def variant(self, name: str) -> Variant:
        if name not in self.variants:
            close = difflib.get_close_matches(name, self.variants, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise PipelineError(
                f"unknown variant {name!r}; declared: {', '.join(self.variants)}",
                f"{hint}pick one of those, or declare it in variants.toml",
            )
        return self.variants[name]

    def select(self, names: list[str], everything: bool = False, locked: bool = False) -> list[Variant]:
        """The variants named on a command line: all, those with committed lockfiles, the
        named ones, or the default."""
        if names and (everything or locked):
            raise PipelineError(
                f"--variant {' --variant '.join(names)} together with --{'all' if everything else 'locked'}",
                "give either --variant NAME (repeatable) or --all / --locked, not both",
            )
        if everything and locked:
            raise PipelineError("--all together with --locked", "give one of them")
        if everything:
            return list(self.variants.values())
        if locked:
            return [v for v in self.variants.values() if v.locked]
        return [self.variant(n) for n in dict.fromkeys(names or [self.default])]  # each once


def _field(table: dict[str, Any], key: str, where: str, kind: type = str) -> Any:
    if key not in table:
        raise PipelineError(f"{where}: missing key {key!r}", f"add {key} = ... to {where}")
    value = table[key]
    if not isinstance(value, kind):
        raise PipelineError(
            f"{where}: {key} must be a {kind.__name__}, got {value!r}",
            f"fix {key} in {where}",
        )
    return value


def _no_unknown(table: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        hints = [f"{k!r} -> {m[0]!r}" for k in unknown if (m := difflib.get_close_matches(k, allowed, n=1))]
        raise PipelineError(
            f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}",
            (f"did you mean {', '.join(hints)}? " if hints else "")
            + "remove or correct them (a typo here would silently change nothing)",
        )


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PipelineError(f"{where}: must be a table, got {value!r}", f"write it as a [table] in {where}")
    return value


def _base(key: str, value: Any, src: Path) -> Base:
    where = f"{src.name} [bases.{key}]"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", key):
        raise PipelineError(
            f"{src.name}: base name {key[:80]!r} is not a plain name (it appears in tables, the "
            "refresh's pull request and its branch name)",
            "use letters, digits, '.', '_' and '-', e.g. [bases.debian-trixie]",
        )
    table = _table(value, where)
    _no_unknown(table, {"image", "python"}, where)
    image = _field(table, "image", where)
    if not _DIGEST.fullmatch(image):
        raise PipelineError(
            f"{where}: image {image!r} is not pinned by digest",
            "write it as NAME:TAG@sha256:<64 hex> (a tag alone can change content); "
            "`docker buildx imagetools inspect NAME:TAG` shows the digest",
        )
    references.image(image, f"{where} image")
    python = _field(table, "python", where)
    if not re.fullmatch(r"3\.[0-9]{1,2}", python):
        raise PipelineError(f"{where}: python {python!r} is not a minor version", 'e.g. python = "3.13"')
    if int(python.split(".")[1]) < MIN_PYTHON_MINOR:  # torch 2.6 and newer ship no older wheels
        raise PipelineError(
            f"{where}: python {python!r}: torch ships wheels for Python 3.{MIN_PYTHON_MINOR} and newer",
            "name the Python the base image really has (`docker run --rm IMAGE python3 --version`)",
        )
    return Base(key=key, image=image, python=python)


def _flavors(table: dict[str, Any], where: str) -> tuple[str, ...]:
    value = table.get("flavors", list(FLAVORS))
    if not isinstance(value, list) or not all(isinstance(f, str) for f in value):
        raise PipelineError(
            f"{where}: flavors must be a list of names, got {value!r}", 'e.g. flavors = ["runtime", "dev"]'
        )
    flavors = tuple(value)
    bad = [f for f in flavors if f not in FLAVORS]
    if bad or not flavors or flavors[0] != "runtime" or len(set(flavors)) != len(flavors):
        raise PipelineError(
            f"{where}: flavors {list(flavors)} invalid; known: {', '.join(FLAVORS)}, each once",
            "list runtime first (dev is built on top of it), each flavor once",
        )
    return flavors


def _platforms(table: dict[str, Any], where: str, torch: str, cuda: str, index: str) -> tuple[str, ...]:
    value = table.get("platforms", [NATIVE_PLATFORM])
    if not isinstance(value, list) or not value or not all(isinstance(p, str) for p in value):
        raise PipelineError(
            f"{where}: platforms must be a non-empty list of platforms, got {value!r}",
            'e.g. platforms = ["linux/amd64", "linux/arm64"]',
        )
    bad = [p for p in value if p not in PLATFORMS]
    if bad or len(set(value)) != len(value):
        raise PipelineError(
            f"{where}: platforms {value} invalid; known: {', '.join(PLATFORMS)}, each once",
            "list each platform once, from those",
        )
    if cuda != torch_builds.CPU and index == torch_builds.PYPI_INDEX:
        for platform in value:
            machine = PLATFORMS[platform]
            if machine not in torch_builds.release(torch).pypi_cuda_machines:
                raise PipelineError(
                    f"{where}: torch {torch} on PyPI is a CPU-only build on {platform} ({machine}); "
                    f"a {cuda} image for it would carry no CUDA",
                    f"drop {platform} from platforms, or declare a variant with "
                    f'index = "{torch_builds.PYTORCH_INDEX.format(tag=cuda)}" for it',
                )
    return tuple(value)


def _index(table: dict[str, Any], where: str, torch: str, cuda: str) -> str:
    if "index" not in table:
        return torch_builds.default_index(torch, cuda)
    index: str = _field(table, "index", where)
    try:
        url = urllib.parse.urlsplit(index)
        port = url.port  # ValueError when out of range or not a number
    except ValueError as exc:
        raise PipelineError(
            f"{where}: index {index!r} is not a URL ({exc})", "use the index's https URL"
        ) from None
    if port == 0:
        raise PipelineError(f"{where}: index {index!r} names port 0", "use the index's https URL")
    if url.username or url.password:
        raise PipelineError(
            f"{where}: index URL carries credentials; they would end up in lockfiles, labels and logs",
            "remove them from the URL and give them to the build as a secret: --netrc PATH "
            "(or $TORCHIMG_NETRC)",
        )
    if url.scheme != "https" or not url.netloc or not _INDEX.fullmatch(index):
        raise PipelineError(
            f"{where}: index {index!r} is not a plain https:// URL (host, optional port and path; "
            "no spaces, query or shell characters)",
            "use the index's https URL (e.g. https://pypi.org/simple)",
        )
    served = _PYTORCH_TAG.fullmatch(index)
    if served and served["tag"] != cuda:
        raise PipelineError(
            f"{where}: index {index!r} serves PyTorch's {served['tag']} builds, not {cuda}",
            f'index = "{torch_builds.PYTORCH_INDEX.format(tag=cuda)}", or drop `index` for the default',
        )
    return index


def _variant(value: Any, bases: dict[str, Base], src: Path, n: int) -> Variant:
    where = f"{src.name} [[variant]] #{n}"
    table = _table(value, where)
    _no_unknown(table, {"name", "torch", "cuda", "base", "index", "flavors", "platforms"}, where)
    name = _field(table, "name", where)
    where = f"{src.name} variant {name!r}"
    if not _NAME.fullmatch(name):
        raise PipelineError(f"{where}: name must match {_NAME.pattern}", "rename it")
    torch = _field(table, "torch", where)
    if not re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+", torch):
        raise PipelineError(f"{where}: torch {torch!r} is not an exact version", 'e.g. torch = "2.9.1"')
    cuda = _field(table, "cuda", where)
    if cuda != torch_builds.CPU and cuda not in torch_builds.CUDA:
        raise PipelineError(
            f"{where}: unknown CUDA tag {cuda!r}; known: {', '.join([*torch_builds.CUDA, torch_builds.CPU])}",
            "use one of those tags",
        )
    try:
        torch_builds.check_pair(torch, cuda)
    except PipelineError as exc:
        raise PipelineError(f"{where}: {exc.what}", exc.fix) from None
    base_key = _field(table, "base", where)
    if base_key not in bases:
        raise PipelineError(
            f"{where}: unknown base {base_key!r}; declared: {', '.join(bases)}",
            "declare it under [bases.NAME] or pick a declared one",
        )
    flavors = _flavors(table, where)
    index = _index(table, where, torch, cuda)
    platforms = _platforms(table, where, torch, cuda, index)
    lock_dir = src.parent / "requirements" / "locks" / name
    return Variant(name, torch, cuda, index, bases[base_key], flavors, lock_dir, platforms)


def load(src: Path = paths.VARIANTS_FILE) -> Config:
    """Read and validate variants.toml; every problem is a PipelineError naming the entry."""
    try:
        data = tomllib.loads(userfiles.read(src, 2**20).decode("utf-8"))
    except FileNotFoundError:
        raise PipelineError(
            f"{src}: no such file",
            "run from the repository root, or name the file: --config / $TORCHIMG_CONFIG",
        ) from None
    except OSError as exc:  # a folder, unreadable, a symlink loop, a path through a file
        raise PipelineError(
            f"{src}: cannot be read as the variants file ({exc.strerror or exc})",
            "name a readable TOML file: --config / $TORCHIMG_CONFIG",
        ) from None
    except RecursionError:
        raise PipelineError(f"{src}: nested too deeply to be a variants file", f"fix {src.name}") from None
    except UnicodeDecodeError as exc:
        raise PipelineError(
            f"{src}: not UTF-8 text ({exc.reason} at byte {exc.start})", f"save {src.name} as UTF-8"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise PipelineError(f"{src}: not valid TOML: {exc}", f"fix the syntax in {src.name}") from None
    _no_unknown(data, {"default", "repository", "bases", "variant", "builder", "cache", "staging"}, src.name)
    bases = {k: _base(k, v, src) for k, v in _field(data, "bases", src.name, dict).items()}
    variants: dict[str, Variant] = {}
    for n, table in enumerate(_field(data, "variant", src.name, list), start=1):
        v = _variant(table, bases, src, n)
        if v.name in variants:
            raise PipelineError(f"{src.name}: variant {v.name!r} declared twice", "remove one")
        variants[v.name] = v
    default = _field(data, "default", src.name)
    if default not in variants:
        raise PipelineError(f"{src.name}: default {default!r} is not a declared variant", "fix default")
    optional = {k: _field(data, k, src.name) for k in ("builder", "cache", "staging") if k in data}
    for key, value in optional.items():
        if not str(value).strip():  # an empty flag is refused too: never silently "not set"
            raise PipelineError(f"{src.name} {key} is empty", f"give {key} a value, or remove the line")
    for key in ("cache", "staging"):
        if key in optional:
            references.repository(optional[key], f"{src.name} {key}")
    repository = references.repository(_field(data, "repository", src.name), f"{src.name} repository")
    return Config(default, repository, bases, variants, **optional, source=src)
