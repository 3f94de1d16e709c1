"""Pure pass/fail rules over the numbers the probe measures (no torch import), each tested on
the host: a NaN must never pass, a fallback must never look like health."""

import math

SHM_WARN_BYTES = 1 << 30  # DataLoader workers pass batches through /dev/shm: Docker gives 64 MiB
COPY_MIN_SHARE = 0.5  # pinned copies below half of what the link should carry: a bad link or slot


def relative_error(max_abs_error: float, scale: float) -> float:
    """Max abs error relative to the reference's scale; NaN when either is not finite (a NaN
    or Inf result), so that every comparison against a tolerance fails."""
    if not (math.isfinite(max_abs_error) and math.isfinite(scale)):
        return math.nan
    return max_abs_error / (scale or 1.0)


def within(rel: float, tolerance: float) -> bool:
    """True only for a finite error at or below the tolerance (`nan > tol` is False: never
    write the test the other way round)."""
    return math.isfinite(rel) and rel <= tolerance


def driver_compatibility(driver_cuda: str, image_cuda: str, forward_compat: bool) -> tuple[str, str]:
    """('pass' | 'warn' | 'fail', why) for a user-mode driver's CUDA version against the CUDA
    the image's torch was built with. Same major, older minor runs (minor-version
    compatibility) without JIT of newer PTX; an older major does not run at all."""
    have, want = _major_minor(driver_cuda), _major_minor(image_cuda)
    how = " through CUDA forward compatibility (cuda-compat)" if forward_compat else ""
    if have >= want:
        return "pass", f"the driver supports CUDA {driver_cuda}{how}, the image needs {image_cuda}"
    if have[0] == want[0]:
        return "warn", (
            f"the driver supports CUDA {driver_cuda} < {image_cuda}: runs by minor-version "
            "compatibility, but PTX newer than the driver cannot be JIT-compiled (upgrade the "
            "driver for GPUs without a cubin in the wheel)"
        )
    return "fail", (
        f"the driver supports CUDA {driver_cuda}, the image needs {image_cuda}: upgrade the host "
        "driver, use an image of an older CUDA variant, or (datacenter GPUs) the -cuda variant "
        "with its forward-compatibility libraries"
    )


def _major_minor(version: str) -> tuple[int, int]:
    parts = [int(p) for p in version.split(".")[:2] if p.isdigit()]
    if len(parts) != 2:
        raise ValueError(f"not a CUDA version: {version!r}")
    return parts[0], parts[1]


def cudnn(runtime: tuple[int, int, int], compiled: tuple[int, int, int]) -> tuple[str, str]:
    """cuDNN loaded against the one torch was compiled with: within a major version cuDNN is
    backward compatible, so a newer runtime works (torch 2.9.1's PyPI wheels are compiled
    against 9.8.0 and pin nvidia-cudnn-cu12 9.10.2); an older one or another major does not."""
    have, want = ".".join(map(str, runtime)), ".".join(map(str, compiled))
    if runtime == compiled:
        return "pass", f"cuDNN {have} (runtime = compile time)"
    if runtime[0] == compiled[0] and runtime > compiled:
        return "pass", f"cuDNN {have}, compiled against {want}: newer within cuDNN {runtime[0]} (compatible)"
    return (
        "fail",
        f"cuDNN {have} loaded, torch was compiled against {want}: another cuDNN shadows the wheel's",
    )


def shm(size_bytes: int) -> tuple[str, str]:
    """/dev/shm big enough for DataLoader workers and NCCL's shared-memory transport?"""
    mib = size_bytes / 2**20
    if size_bytes >= SHM_WARN_BYTES:
        return "pass", f"/dev/shm is {mib:.0f} MiB"
    return "warn", (
        f"/dev/shm is only {mib:.0f} MiB: DataLoader workers crash with 'bus error' and NCCL "
        "may hang; run with --shm-size=16g (or --ipc=host)"
    )


def scratch(
    *,
    user: str | None,
    needs_user: bool,
    compile_problem: str,
    triton_problem: str,
    triton_for_compile: bool,
    home: str | None,
    home_writable: bool,
) -> tuple[str, str, str]:
    """('pass' | 'warn' | 'fail', why, fix): can this UID compile? torch.compile names its cache
    folder after the user (unless TORCHINDUCTOR_CACHE_DIR names one) and loads the code it
    compiles from there, and on the GPU Triton builds its launchers in its own cache: no user
    name, or such a folder where code cannot be written or run (a noexec tmpfs), stops the
    first compile (`compile_problem`; `triton_problem` with `triton_for_compile`). Triton's
    cache alone, where torch.compile does not use Triton (a CPU build), and a home that cannot
    be written (torch.hub, Hugging Face, Jupyter): warnings."""
    entrypoint = "start the container through the image's entrypoint"
    entrypoint += " (Kubernetes: the command as `args:`, not `command:`)"
    if needs_user and user is None:
        why = "this UID has no user name: torch.compile stops at its first call"
        return "fail", why, f"{entrypoint}, or set USER (or TORCHINDUCTOR_CACHE_DIR)"
    if compile_problem:
        why = f"{compile_problem}: torch.compile stops at its first call"
        scratch_fix = (
            "a writable temporary folder that runs programs: docker run --tmpfs /tmp:exec (a tmpfs "
            "is noexec by default); Kubernetes: an emptyDir on /tmp; or TORCHINDUCTOR_CACHE_DIR "
            "on such a folder"
        )
        return "fail", why, scratch_fix
    if triton_problem:
        triton_fix = f"{entrypoint}: it gives any UID a home; or TRITON_CACHE_DIR on a writable folder"
        if triton_for_compile:
            return (
                "fail",
                f"Triton's cache: {triton_problem}: torch.compile stops at its first call",
                triton_fix,
            )
        why = f"Triton's cache: {triton_problem}: kernels written with triton.jit cannot be compiled"
        return "warn", why, triton_fix
    if not home_writable:
        why = (
            f"HOME ({home or 'none'}) is not writable: torch.hub, Hugging Face and Jupyter cannot save there"
        )
        return "warn", why, f"{entrypoint}: it gives any UID a home; or set HOME to a writable folder"
    return "pass", f"user {user}, HOME {home} writable, compiled code can be written and run", ""


def copy_bandwidth(measured_gbs: float, link_gbs: float | None) -> tuple[str, str]:
    """Pinned host-to-device copy speed against what the PCIe link should carry."""
    if not math.isfinite(measured_gbs) or measured_gbs <= 0:
        return "fail", f"no usable copy bandwidth measured ({measured_gbs})"
    if link_gbs is None:
        return "pass", f"{measured_gbs:.1f} GB/s (link speed not reported: nothing to compare)"
    share = measured_gbs / link_gbs
    text = f"{measured_gbs:.1f} GB/s, {share:.0%} of the link's {link_gbs:.1f} GB/s"
    if share < COPY_MIN_SHARE:
        return "warn", text + ": check the slot, the link's width and generation, and NUMA placement"
    return "pass", text


def bus_bandwidth(size_bytes: int, seconds: float, ranks: int) -> tuple[float, float]:
    """(algbw, busbw) in GB/s of an all_reduce, as nccl-tests define them: busbw = algbw *
    2(n-1)/n, what each link carried, comparable across rank counts."""
    if seconds <= 0 or ranks < 1:
        raise ValueError(f"no bandwidth from {seconds} s over {ranks} ranks")
    algbw = size_bytes / seconds / 1e9
    return algbw, algbw * 2 * (ranks - 1) / ranks


def attention_fallback(backend: str, flash_capable: bool) -> bool:
    """A GPU that can run flash attention but dispatches to the math kernel: silently slow."""
    return flash_capable and backend == "math"
