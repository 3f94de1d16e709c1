"""What goes into one image build, read from the repository: the lockfiles (checked), the
labels, the build arguments, the hash of docker/. No engine here: the build stage, the lock
stage and the build report all take their inputs from this one place."""

import datetime
import hashlib
from pathlib import Path

from torchimg import paths
from torchimg.adapters import gitinfo
from torchimg.errors import PipelineError
from torchimg.model import labels, lockfile, torch_builds
from torchimg.model.variants import PLATFORMS, Variant

# Packages whose versions the image labels report, by the name prefix of their wheels.
_LIB_PREFIXES = {
    "cuda": ("nvidia-cuda-runtime",),
    "cudnn": ("nvidia-cudnn",),
    "nccl": ("nvidia-nccl",),
}


def lockfiles(variant: Variant, flavor: str) -> list[Path]:
    """The variant's lockfiles this flavor installs; a clear error when one is missing."""
    needed = [variant.lock_dir / "runtime.txt"]
    if flavor == "dev":
        needed.append(variant.lock_dir / "dev.txt")
    for path in needed:
        if not path.exists():
            where = "" if variant.index == torch_builds.PYPI_INDEX else f" (it needs {variant.index})"
            raise PipelineError(
                f"variant {variant.name}: lockfile {paths.shown(path)} is missing",
                f"make it with `nox -s lock -- --variant {variant.name}` on a machine that "
                f"reaches its index{where}, and commit it",
            )
    for path in needed:
        _check_header(variant, path)
    torch = variant.torch_requirement.split("==", 1)[1]
    pins = [lockfile.verify(path, torch, torch_required=path.name == "runtime.txt") for path in needed]
    if len(pins) == 2 and (mismatched := lockfile.shared_mismatches(pins[0], pins[1])):
        raise PipelineError(
            f"variant {variant.name}: dev.txt changes versions runtime.txt pins: {'; '.join(mismatched)}",
            f"re-lock it: `nox -s lock -- --variant {variant.name}`",
        )
    return needed


def _check_header(variant: Variant, path: Path) -> None:
    """A lockfile is compiled for one variant, flavor and index (its header says which): one
    copied from another variant's folder, or left from before the variant's `index` changed,
    would build an image its labels and release notes misdescribe."""
    info = lockfile.read_info(path)
    expected = {"variant": variant.name, "flavor": path.stem, "index": variant.lock_index(path.stem)}
    wrong = [
        f"{k} {getattr(info, k)!r} (expected {v!r})" for k, v in expected.items() if getattr(info, k) != v
    ]
    machines = [f"linux-{PLATFORMS[p]}" for p in variant.platforms if p in PLATFORMS]
    if info.platform not in machines:  # compiled on a machine of none of its platforms
        wrong.append(f"platform {info.platform!r} (expected {' or '.join(map(repr, machines))})")
    if wrong:
        raise PipelineError(
            f"variant {variant.name}: {paths.shown(path)} was compiled for another {', '.join(wrong)}",
            f"re-lock it: `nox -s lock -- --variant {variant.name}`, and commit it",
        )


def check(variant: Variant, flavor: str, base_override: str | None) -> list[Path]:
    """Everything about one image's inputs that can be checked without the engine; returns
    its lockfiles."""
    if flavor not in variant.flavors:
        raise PipelineError(
            f"variant {variant.name} has no flavor {flavor!r} (it has {', '.join(variant.flavors)})",
            "pick one of those with --flavor",
        )
    locks = lockfiles(variant, flavor)
    check_lock_python(variant, locks[0], base_override)
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


def image_labels(
    variant: Variant,
    flavor: str,
    git: gitinfo.GitInfo,
    base_ref: str,
    base_id: str,
    locks: list[Path],
) -> dict[str, str]:
    """OCI labels plus ours: every value read from the inputs, none typed by hand."""
    pins = lockfile.pins(lockfile.read_text(locks[0]))
    pinned = base_ref == variant.base.image
    created = datetime.datetime.fromtimestamp(git.epoch, datetime.UTC).isoformat().replace("+00:00", "Z")
    cuda = variant.cuda_info
    out = {
        labels.TITLE: f"pytorch {variant.name} {flavor}",
        labels.VERSION: f"{variant.name}-{flavor}",
        labels.REVISION: git.revision,
        labels.CREATED: created,
        labels.SOURCE: git.source,
        labels.BASE_NAME: variant.base.name if pinned else base_ref,
        labels.BASE_DIGEST: variant.base.digest if pinned else base_id,
        labels.VARIANT: variant.name,
        labels.FLAVOR: flavor,
        labels.TORCH: pins.get("torch", "none"),
        labels.CUDA_TAG: variant.cuda,
        labels.CUDA: _lib_version(pins, "cuda"),
        labels.CUDNN: _lib_version(pins, "cudnn"),
        labels.NCCL: _lib_version(pins, "nccl"),
        labels.DRIVER_MIN: cuda.min_driver if cuda else "none",
        labels.PYTHON: lockfile.read_info(locks[0]).python,
        labels.BASE_PINNED: str(pinned).lower(),
    }
    for lock in locks:
        out[labels.lock_sha256(lock.stem)] = lockfile.sha256(lock)
    return out


def tree_sha256(folder: Path) -> str:
    """One hash over every file under `folder` (path and content): the image's own sources."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def layer_epoch_file(variant: Variant) -> Path:
    """The file whose last commit dates every layer: the variant's runtime lockfile (the
    repository's, found by variant name, even when a build reads a copy of the locks)."""
    return paths.LOCKS / variant.name / "runtime.txt"


def layer_epoch(variant: Variant, git: gitinfo.GitInfo) -> int:
    """File times for the layers: when the variant's runtime lockfile was last committed."""
    return gitinfo.path_epoch(layer_epoch_file(variant), git.epoch)


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
        "PYPI_INDEX": torch_builds.PYPI_INDEX,
        # the fallback: an NVIDIA CUDA base's own NVIDIA_REQUIRE_CUDA wins (docker/Dockerfile)
        # the CUDA major: an older minor runs by minor-version compatibility (the doctor warns)
        "TORCHIMG_REQUIRE_CUDA": f"cuda>={cuda.version.split('.')[0]}.0" if cuda else "",
        "TORCHIMG_HOST_DRIVER": "/usr/local/nvidia" if cuda else "",
        "NVIDIA_VISIBLE_DEVICES": "all" if cuda else "void",
    }
