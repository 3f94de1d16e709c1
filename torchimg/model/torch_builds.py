"""What PyTorch ships: which CUDA builds exist for a torch release, and what each CUDA needs.

Kept as data so that a variant asking for a pair PyTorch never published fails at load time,
not after a 4 GB download.
"""

from dataclasses import dataclass

from torchimg.errors import PipelineError

PYPI_INDEX = "https://pypi.org/simple"
PYTORCH_INDEX = "https://download.pytorch.org/whl/{tag}"


@dataclass(frozen=True)
class Cuda:
    """A CUDA build tag of torch wheels, its CUDA version and the oldest driver it needs."""

    tag: str
    version: str
    min_driver: str  # the CUDA toolkit's own minimum Linux driver, GA release (release notes, table 3)


CUDA: dict[str, Cuda] = {
    c.tag: c
    for c in (
        Cuda("cu118", "11.8", "520.61.05"),
        Cuda("cu126", "12.6", "560.28.03"),
        Cuda("cu128", "12.8", "570.26"),
        Cuda("cu129", "12.9", "575.51.03"),
        Cuda("cu130", "13.0", "580.65.06"),
        # 13.2 GA. Any 13.x also runs on an R580 driver (>= 580, NVIDIA's minor-version
        # compatibility), without the features that need the newer driver (PTX JIT of 13.2 PTX).
        Cuda("cu132", "13.2", "595.45.04"),
    )
}
CPU = "cpu"


@dataclass(frozen=True)
class TorchRelease:
    """The builds of one torch minor release: its CUDA tags, and the one PyPI carries."""

    minor: str
    builds: frozenset[str]
    pypi_cuda: str
    patches: tuple[str, ...]  # the releases published (a typo such as 2.9.99 fails at load)
    # Machines on which PyPI's wheel is the CUDA build. Before 2.15 PyPI's aarch64 wheel is the
    # CPU build (its NVIDIA dependencies carry `platform_machine == "x86_64"`); the CUDA aarch64
    # builds of those releases are on PyTorch's index only.
    pypi_cuda_machines: tuple[str, ...] = ("x86_64",)


RELEASES: dict[str, TorchRelease] = {
    r.minor: r
    for r in (
        TorchRelease("2.7", frozenset({"cu118", "cu126", "cu128", CPU}), "cu126", ("2.7.0", "2.7.1")),
        TorchRelease("2.8", frozenset({"cu126", "cu128", "cu129", CPU}), "cu128", ("2.8.0",)),
        TorchRelease("2.9", frozenset({"cu126", "cu128", "cu130", CPU}), "cu128", ("2.9.0", "2.9.1")),
        # PyPI's 2.15.0 (2026-10-28) depends on the CUDA 13.2 wheels (cuda-toolkit==13.2.2) on
        # both machines. Only the builds known here are listed.
        TorchRelease("2.15", frozenset({"cu132", CPU}), "cu132", ("2.15.0",), ("x86_64", "aarch64")),
    )
}


def release(torch: str) -> TorchRelease:
    """The release table entry for a torch version such as 2.9.1."""
    minor = ".".join(torch.split(".")[:2])
    if minor not in RELEASES:
        known = ", ".join(sorted(RELEASES))
        raise PipelineError(
            f"torch {torch}: no entry for torch {minor} in the compatibility table ({known})",
            "add the release and its CUDA builds to RELEASES in torchimg/model/torch_builds.py",
        )
    return RELEASES[minor]


def check_pair(torch: str, cuda: str) -> None:
    """Fail when PyTorch does not publish torch `torch` for `cuda`."""
    rel = release(torch)
    if torch not in rel.patches:
        raise PipelineError(
            f"torch {torch} was never released; torch {rel.minor} releases: {', '.join(rel.patches)}",
            "pick one of those, or add the new release to RELEASES in torchimg/model/torch_builds.py",
        )
    if cuda not in rel.builds:
        raise PipelineError(
            f"torch {torch} is not published for {cuda}; "
            f"torch {rel.minor} ships {', '.join(sorted(rel.builds))}",
            "pick one of those CUDA tags, or another torch version, in variants.toml",
        )


def default_index(torch: str, cuda: str) -> str:
    """PyPI when it carries this build (it holds one CUDA build per release), else PyTorch's."""
    return PYPI_INDEX if release(torch).pypi_cuda == cuda else PYTORCH_INDEX.format(tag=cuda)


def torch_requirement(torch: str, cuda: str, index: str) -> str:
    """The pin for the lock input: PyPI's build (or a mirror's) has no local version label,
    the builds on PyTorch's index have one (2.9.1+cu126)."""
    on_pytorch_index = index.startswith(PYTORCH_INDEX.split("{")[0])
    if cuda == release(torch).pypi_cuda and not on_pytorch_index:
        return f"torch=={torch}"
    return f"torch=={torch}+{cuda}"
