"""`nox -s build`: one variant x flavor -> one image, through BuildKit, plus its record.

Every input is checked before BuildKit starts (lockfiles, their Python, engine, buildx,
base image), so a bad input fails in seconds with its fix and nothing gets tagged.
"""

import datetime
import hashlib
import sys
from dataclasses import dataclass, field
from pathlib import Path

from torchimg import compat, engine, gitinfo, lockfile, paths, record
from torchimg.credentials import Credentials
from torchimg.errors import PipelineError
from torchimg.variants import Variant

LABEL_NS = "io.torchimg"
# Packages whose versions the image labels report, by the name prefix of their wheels.
_LIB_PREFIXES = {
    "cuda": ("nvidia-cuda-runtime",),
    "cudnn": ("nvidia-cudnn",),
    "nccl": ("nvidia-nccl",),
}


@dataclass(frozen=True)
class BuildOptions:
    base: str | None = None
    creds: Credentials = field(default_factory=Credentials)
    cache: bool = True
    repository: str = ""
    builder: str | None = None  # a named buildx builder (remote BuildKit); None: the default
    cache_repository: str | None = None  # registry cache: <repo>:<variant>-<flavor>
    cache_export: bool = True  # False: import the registry cache only (read-only machines)
    compression: str = "gzip"
    attest: tuple[str, ...] = ()


COMPRESSIONS = ("gzip", "zstd")
ATTESTATIONS = ("provenance", "sbom")


def cache_ref(opts: BuildOptions, variant: Variant, flavor: str) -> str | None:
    """One registry cache ref per variant and flavor, so flavors never evict each other."""
    return f"{opts.cache_repository}:{variant.name}-{flavor}" if opts.cache_repository else None


def local_tag(repository: str, variant: Variant, flavor: str) -> str:
    return f"{repository}:{variant.name}-{flavor}"


def lockfiles(variant: Variant, flavor: str) -> list[Path]:
    """The variant's lockfiles this flavor installs; a clear error when one is missing."""
    needed = [variant.lock_dir / "runtime.txt"]
    if flavor == "dev":
        needed.append(variant.lock_dir / "dev.txt")
    for path in needed:
        if not path.exists():
            where = "" if variant.index == compat.PYPI_INDEX else f" (it needs {variant.index})"
            raise PipelineError(
                f"variant {variant.name}: lockfile {paths.shown(path)} is missing",
                f"make it with `nox -s lock -- --variant {variant.name}` on a machine that "
                f"reaches its index{where}, and commit it",
            )
    torch = variant.torch_requirement.split("==", 1)[1]
    pins = [lockfile.verify(path, torch, torch_required=path.name == "runtime.txt") for path in needed]
    if len(pins) == 2 and (mismatched := lockfile.shared_mismatches(pins[0], pins[1])):
        raise PipelineError(
            f"variant {variant.name}: dev.txt changes versions runtime.txt pins: {'; '.join(mismatched)}",
            f"re-lock it: `nox -s lock -- --variant {variant.name}`",
        )
    return needed


def check_inputs(variant: Variant, flavor: str, opts: BuildOptions) -> list[Path]:
    """Everything about one image's inputs that can be checked without the engine."""
    if flavor not in variant.flavors:
        raise PipelineError(
            f"variant {variant.name} has no flavor {flavor!r} (it has {', '.join(variant.flavors)})",
            "pick one of those with --flavor",
        )
    locks = lockfiles(variant, flavor)
    check_lock_python(variant, locks[0], opts.base)
    return locks


def check_lock_python(variant: Variant, runtime_lock: Path, base_override: str | None) -> str:
    """The lock's Python must be the base's; with --base, the Dockerfile checks the real one."""
    info = lockfile.read_info(runtime_lock)
    if base_override is None and info.python != variant.base.python:
        raise PipelineError(
            f"variant {variant.name}: {runtime_lock.name} was compiled for Python {info.python}, "
            f"but base {variant.base.key} has Python {variant.base.python}",
            f"re-lock it: `nox -s lock -- --variant {variant.name}`",
        )
    return info.python


def _lib_version(pins: dict[str, str], lib: str) -> str:
    for name, version in sorted(pins.items()):
        if any(name == p or name.startswith(p + "-cu") for p in _LIB_PREFIXES[lib]):
            return version
    return "none"


def labels(
    variant: Variant,
    flavor: str,
    git: gitinfo.GitInfo,
    base_ref: str,
    base_id: str,
    locks: list[Path],
) -> dict[str, str]:
    """OCI labels plus ours: every value read from the inputs, none typed by hand."""
    pins = lockfile.pins(locks[0].read_text())
    pinned = base_ref == variant.base.image
    created = datetime.datetime.fromtimestamp(git.epoch, datetime.UTC).isoformat().replace("+00:00", "Z")
    cuda = variant.cuda_info
    out = {
        "org.opencontainers.image.title": f"pytorch {variant.name} {flavor}",
        "org.opencontainers.image.version": f"{variant.name}-{flavor}",
        "org.opencontainers.image.revision": git.revision,
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.source": git.source,
        "org.opencontainers.image.base.name": variant.base.name if pinned else base_ref,
        "org.opencontainers.image.base.digest": variant.base.digest if pinned else base_id,
        f"{LABEL_NS}.variant": variant.name,
        f"{LABEL_NS}.flavor": flavor,
        f"{LABEL_NS}.torch.version": pins.get("torch", "none"),
        f"{LABEL_NS}.cuda.tag": variant.cuda,
        f"{LABEL_NS}.cuda.version": _lib_version(pins, "cuda"),
        f"{LABEL_NS}.cudnn.version": _lib_version(pins, "cudnn"),
        f"{LABEL_NS}.nccl.version": _lib_version(pins, "nccl"),
        f"{LABEL_NS}.driver.min": cuda.min_driver if cuda else "none",
        f"{LABEL_NS}.python.version": lockfile.read_info(locks[0]).python,
        f"{LABEL_NS}.base.pinned": str(pinned).lower(),
    }
    for lock in locks:
        out[f"{LABEL_NS}.lock.{lock.stem}.sha256"] = lockfile.sha256(lock)
    return out


def tree_sha256(folder: Path) -> str:
    """One hash over every file under `folder` (path and content): the image's own sources."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def layer_epoch(variant: Variant, git: gitinfo.GitInfo) -> int:
    """File times for the layers: when the variant's runtime lockfile was last committed (the
    repository's file, found by variant name, even when a build reads a copy of the locks)."""
    return gitinfo.path_epoch(paths.LOCKS / variant.name / "runtime.txt", git.epoch)


def build_args(variant: Variant, base_ref: str, git: gitinfo.GitInfo, lock_python: str) -> dict[str, str]:
    """SOURCE_DATE_EPOCH (the commit's time) dates the image config only; file times in the
    layers come from the runtime lockfile's last commit, so a commit that changes nothing the
    layers depend on reuses every layer."""
    cuda = variant.cuda_info
    return {
        "BASE_IMAGE": base_ref,
        "SOURCE_DATE_EPOCH": str(git.epoch),
        "LAYER_EPOCH": str(layer_epoch(variant, git)),
        "VARIANT": variant.name,
        "LOCK_PYTHON": lock_python,
        "TORCH_INDEX": variant.index,
        "PYPI_INDEX": compat.PYPI_INDEX,
        "NVIDIA_REQUIRE_CUDA": f"cuda>={cuda.version}" if cuda else "",
        "NVIDIA_VISIBLE_DEVICES": "all" if cuda else "void",
    }


def build(variant: Variant, flavor: str, opts: BuildOptions) -> record.Record:
    """Build and tag one image; write and return its record."""
    return build_with_log(variant, flavor, opts)[0]


def build_with_log(variant: Variant, flavor: str, opts: BuildOptions) -> tuple[record.Record, list[str]]:
    """Like build(), also returning BuildKit's log (the build report reads its steps)."""
    locks = check_inputs(variant, flavor, opts)
    lock_python = check_lock_python(variant, locks[0], opts.base)
    engine.preflight()
    base_ref = opts.base or variant.base.image
    base_id = engine.require_base(base_ref)
    git = gitinfo.current()
    tag = local_tag(opts.repository, variant, flavor)
    args = build_args(variant, base_ref, git, lock_python)
    image_labels = labels(variant, flavor, git, base_ref, base_id, locks)
    print(f"== build {variant.name} {flavor} -> {tag}", file=sys.stderr)
    result = engine.build(
        context=paths.DOCKER,
        dockerfile=paths.DOCKERFILE,
        target=flavor,
        tags=[tag],
        build_args=args,
        contexts={"lock": variant.lock_dir, "requirements": paths.REQUIREMENTS},
        secrets=opts.creds.buildkit_secrets(),
        labels=image_labels,
        cache=opts.cache,
        what=f"{variant.name} {flavor}",
        builder=opts.builder,
        cache_ref=cache_ref(opts, variant, flavor),
        cache_export=opts.cache_export,
        compression=opts.compression,
        attest=opts.attest,
    )
    rec = record.Record(
        variant=variant.name,
        flavor=flavor,
        image_id=result.image_id,
        tags=[tag],
        build=record.Built(
            ok=True,
            image_id=result.image_id,
            seconds=round(result.seconds, 1),
            cache=opts.cache,
            builder=opts.builder or "default",
            cache_ref=cache_ref(opts, variant, flavor),
            compression=opts.compression,
            attest=list(opts.attest),
            finished=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        ),
        inputs=record.Inputs(
            docker_sha256=tree_sha256(paths.DOCKER),
            lockfiles={paths.shown(p): lockfile.sha256(p) for p in locks},
            base=record.BaseInput(ref=base_ref, id=base_id, pinned=base_ref == variant.base.image),
            build_args=args,
            git=record.GitInput(revision=git.revision, dirty=git.dirty),
        ),
        labels=image_labels,
    )
    path = record.write(rec)
    print(
        f"== built {tag} ({result.image_id[:19]}) in {result.seconds:.1f} s; record {path}", file=sys.stderr
    )
    return rec, result.log
