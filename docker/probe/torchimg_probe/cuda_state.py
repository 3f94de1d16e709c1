"""Whether CUDA started, and which user-mode driver it started with.

`torch.cuda.is_available()` turns a start-up failure (error 802 on an NVSwitch node without
fabricmanager, 804 forward-compatibility refused, a driver/library mismatch) into a bare
False with a warning: every GPU check would then skip on a node that has GPUs. `start()`
keeps the real error so that the probe can say it.
"""

import ctypes
import functools
from pathlib import Path
from typing import Any

import torch

from torchimg_probe import gpus
from torchimg_probe.results import CannotCheckError

CPU_BUILD = "CPU-only torch build (no CUDA in this image)"


@functools.cache
def start() -> str | None:
    """Initialise CUDA once: None when it started, else the error (the reason GPUs are unusable)."""
    if torch.version.cuda is None:
        return CPU_BUILD
    try:
        torch.cuda.init()
    except Exception as exc:  # torch raises RuntimeError/AssertionError with the driver's words
        return f"{type(exc).__name__}: {str(exc).strip()[:500]}"
    if torch.cuda.device_count() == 0:
        return "CUDA started but sees no device (NVIDIA_VISIBLE_DEVICES or CUDA_VISIBLE_DEVICES empty?)"
    return None


def available() -> bool:
    return start() is None


def need_cuda_build() -> None:
    if torch.version.cuda is None:
        raise CannotCheckError(CPU_BUILD)


def info() -> dict[str, Any]:
    """The head of every report: which torch, whether CUDA started and why not."""
    return {
        "torch": torch.__version__,
        "cuda_build": torch.version.cuda,
        "gpu": available(),
        "cuda_error": start(),
    }


def libcuda_path() -> str | None:
    """The libcuda this process loaded (after start()): a cuda-compat copy means forward compatibility."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        path = line.split(maxsplit=5)[-1] if len(line.split()) >= 6 else ""
        if Path(path).name.startswith("libcuda.so"):
            return path
    return None


def driver_cuda_version() -> tuple[str, str | None]:
    """The CUDA version the user-mode driver supports (cuDriverGetVersion), and libcuda's path.

    Raises OSError when no libcuda can be loaded (no driver in the container)."""
    path = libcuda_path()
    lib = ctypes.CDLL(path or "libcuda.so.1")
    version = ctypes.c_int(0)
    status = lib.cuDriverGetVersion(ctypes.byref(version))
    if status != 0 or version.value <= 0:
        raise OSError(f"cuDriverGetVersion failed (CUresult {status})")
    return gpus.cuda_version_text(version.value), path or libcuda_path()


def forward_compat(path: str | None) -> bool:
    """cuda-compat ships libcuda under .../compat/: loaded from there, the kernel module is older."""
    return path is not None and "/compat/" in path


_REQUIRED = {"gpu": False}


def require(flag: bool) -> None:
    """--require-gpu: from now on a GPU check without a GPU fails instead of skipping."""
    _REQUIRED["gpu"] = flag


def gpus_given() -> bool:
    """The container has a GPU's device node (/dev/nvidia0, ...): it was given GPUs, so a CUDA
    that does not start is a finding, never a reason to skip. (/dev/nvidiactl alone is also
    there with NVIDIA_VISIBLE_DEVICES=none.)"""
    return torch.version.cuda is not None and any(Path("/dev").glob("nvidia[0-9]*"))


def required() -> bool:
    return _REQUIRED["gpu"]


def need_gpu() -> None:
    """Skip without a GPU, with CUDA's own reason; fail instead when the GPU is required."""
    error = start()
    if error is None:
        return
    if _REQUIRED["gpu"]:
        raise AssertionError(f"--require-gpu: CUDA did not start: {error}")
    first = error.split(". ")[0][:160]
    raise CannotCheckError(
        f"no GPU visible ({first}); run with --gpus all on a host with the NVIDIA container toolkit"
    )
