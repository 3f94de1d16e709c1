"""Is this host ready for GPU work? Driver, /dev/shm, MIG, ECC, persistence, PCIe link and
copy bandwidth, each with the fix. NVML (nvidia-ml-py)
reads the GPU's state; where the host or a MIG slice hides a value, the check says "not
available" instead of guessing.
"""

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from torchimg_probe import cuda_state, gpus, verdicts
from torchimg_probe.results import CannotCheckError, ConcernError, expected

COPY_BYTES = 256 * 2**20


def check_driver() -> tuple[str, dict[str, Any]]:
    """The user-mode driver's CUDA version against the image's: what decides whether CUDA runs
    (under forward compatibility the kernel module is older, and that is fine)."""
    cuda_state.need_cuda_build()
    try:  # before CUDA's start: an old driver is exactly when CUDA does not start
        version, path = cuda_state.driver_cuda_version()
    except OSError as exc:
        cuda_state.need_gpu()  # skips, or fails when a GPU is required
        raise CannotCheckError(f"no NVIDIA driver library in the container ({exc})") from None
    compat = cuda_state.forward_compat(path)
    status, why = verdicts.driver_compatibility(version, torch.version.cuda, compat)
    kernel = gpus.kernel_driver_version()
    data = {
        "driver_cuda": version,
        "image_cuda": torch.version.cuda,
        "libcuda": path,
        "forward_compat": compat,
        "kernel_module": kernel,
        "toolkit_min_driver": expected().get("driver_min", "none"),
    }
    detail = f"{why}; kernel module {kernel or 'not visible'}"
    if status == "fail":
        raise AssertionError(detail)
    if status == "warn":
        raise ConcernError(detail, data, "upgrade the host's NVIDIA driver")
    return detail, data


def check_shm() -> tuple[str, dict[str, Any]]:
    if given := os.environ.get("TORCHIMG_SHM_SIZE"):
        raise CannotCheckError(
            f"/dev/shm was set to {given} by the pipeline that started this container: run "
            "`torchimg-probe doctor` in your own job's container or pod to check its setting"
        )
    st = os.statvfs("/dev/shm")
    size = st.f_blocks * st.f_frsize
    status, why = verdicts.shm(size)
    data = {"bytes": size}
    if status == "warn":
        raise ConcernError(
            why,
            data,
            "docker run --shm-size=16g (or --ipc=host); Kubernetes: an emptyDir of medium Memory on /dev/shm",
        )
    return why, data


@contextmanager
def _nvml() -> Iterator[Any]:
    """pynvml, initialised; CannotCheckError when the host gives the container no NVML."""
    cuda_state.need_gpu()
    try:
        import pynvml
    except ImportError:
        raise CannotCheckError("nvidia-ml-py is not installed in this image") from None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        if cuda_state.required():  # CUDA runs, NVML does not: MIG, ECC and PCIe would go unread
            raise AssertionError(f"NVML did not start although the GPU is required: {exc}") from None
        raise CannotCheckError(f"NVML not available: {exc}") from None
    try:
        yield pynvml
    finally:
        pynvml.nvmlShutdown()


def _value(nvml: Any, fn: Callable[..., Any], *args: Any) -> Any:
    """An NVML read; 'not available' where the host, the GPU or a MIG slice hides it, or where
    NVML does not know the GPU CUDA sees (its handle is None)."""
    if any(a is None for a in args):
        return "not available (NVML knows this GPU neither by UUID nor by PCI address)"
    try:
        return fn(*args)
    except nvml.NVMLError as exc:
        return f"not available ({exc})"


def _handles(nvml: Any) -> list[tuple[int, Any]]:
    """NVML's handle of the physical GPU behind each device CUDA sees, found by UUID, else by
    PCI address (a MIG instance maps to its parent GPU); None where neither is known. Never by
    index: NVML numbers every GPU of the host in PCI order, CUDA only the visible ones, fastest
    first, so an index would read another GPU without a sign."""
    out = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        uuid = str(getattr(props, "uuid", "") or "")
        handle = None
        for how, key in (
            *((nvml.nvmlDeviceGetHandleByUUID, name) for name in (uuid, f"GPU-{uuid}", f"MIG-{uuid}")),
            (nvml.nvmlDeviceGetHandleByPciBusId, gpus.pci_address(props)),
        ):
            try:
                handle = how(key) if key else None
            except nvml.NVMLError:
                continue
            if handle is not None:
                break
        if handle is None:
            out.append((i, None))
            continue
        try:
            if nvml.nvmlDeviceIsMigDeviceHandle(handle):
                handle = nvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(handle)
        except nvml.NVMLError:
            pass
        out.append((i, handle))
    return out


def _read(value: Any) -> bool:
    return not (isinstance(value, str) and value.startswith("not available"))


def check_mig() -> tuple[str, dict[str, Any]]:
    cuda_names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    slices = [n for n in cuda_names if gpus.is_mig(n)]
    with _nvml() as nvml:
        data: dict[str, Any] = {"cuda_devices": cuda_names}
        enabled, unread = [], 0
        for i, h in _handles(nvml):
            mode = _value(nvml, nvml.nvmlDeviceGetMigMode, h)
            if not _read(mode):
                data[str(i)], unread = {"mig": mode}, unread + 1
                continue
            current, pending = mode
            instances = []
            if current:
                slots = _value(nvml, nvml.nvmlDeviceGetMaxMigDeviceCount, h)
                for j in range(slots if isinstance(slots, int) else 0):
                    mig = _value(nvml, nvml.nvmlDeviceGetMigDeviceHandleByIndex, h, j)
                    if _read(mig):
                        instances.append(str(_value(nvml, nvml.nvmlDeviceGetName, mig)))
                enabled.append(i)
            data[str(i)] = {"mig": bool(current), "pending": bool(pending), "instances": instances}
    if not enabled and not slices:
        if unread == len(cuda_names):
            raise CannotCheckError("MIG mode not available from NVML here, and CUDA sees no MIG instance")
        return f"MIG off; CUDA sees {len(cuda_names)} device(s)", data
    count = sum(len(data[str(i)]["instances"]) for i in enabled)
    raise ConcernError(
        f"MIG on ({count or 'unknown number of'} instance(s) on GPU(s) {enabled or 'not readable'}); "
        f"CUDA in this container sees {len(cuda_names)}: {', '.join(cuda_names)}",
        data,
        "a process uses one MIG instance: give each job one (NVIDIA_VISIBLE_DEVICES=MIG-<uuid>); "
        "benchmarks then measure that slice, not the full GPU",
    )


def check_ecc() -> tuple[str, dict[str, Any]]:
    bad, notes, data, read = [], [], {}, 0
    with _nvml() as nvml:
        for i, h in _handles(nvml):
            mode = _value(nvml, nvml.nvmlDeviceGetEccMode, h)
            volatile = _value(
                nvml,
                nvml.nvmlDeviceGetTotalEccErrors,
                h,
                nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
                nvml.NVML_VOLATILE_ECC,
            )
            rows = _value(nvml, nvml.nvmlDeviceGetRemappedRows, h)
            entry: dict[str, Any] = {
                "ecc": bool(mode[0]) if _read(mode) else mode,
                "uncorrected_volatile": volatile,
            }
            if _read(rows):
                read += 1
                corrected, uncorrected, pending, failed = rows
                entry |= {
                    "remapped_corrected": corrected,
                    "remapped_uncorrected": uncorrected,
                    "remap_pending": bool(pending),
                    "remap_failed": bool(failed),
                }
                if failed:
                    bad.append(f"GPU {i}: row remapping failed")
                elif pending:
                    notes.append(f"GPU {i}: a row remap is pending")
            else:
                entry["remapped_rows"] = rows
            if isinstance(volatile, int):
                read += 1
                if volatile > 0:
                    bad.append(f"GPU {i}: {volatile} uncorrectable ECC errors since the driver loaded")
            if entry["ecc"] is False:
                notes.append(f"GPU {i}: ECC is off")
            data[str(i)] = entry
    if bad:
        raise AssertionError("; ".join(bad) + ": drain the node and reset or replace the GPU")
    if not read:
        raise CannotCheckError(f"ECC counters and row remapping not available from NVML here: {data}")
    if notes:
        raise ConcernError(
            "; ".join(notes),
            data,
            "reset the GPU (nvidia-smi -r) to apply pending remaps; "
            "enable ECC (nvidia-smi -e 1) on datacenter GPUs",
        )
    return f"{len(data)} GPU(s): no uncorrectable ECC errors, no failed or pending row remaps", data


COMPUTE_MODES = {0: "default", 1: "exclusive thread", 2: "prohibited", 3: "exclusive process"}


def check_modes() -> tuple[str, dict[str, Any]]:
    """Persistence mode (off: every CUDA start re-initialises the GPU, seconds) and compute
    mode (exclusive process: a second process, e.g. a torchrun worker, cannot use the GPU)."""
    with _nvml() as nvml:
        handles = _handles(nvml)
        persistence = {str(i): _value(nvml, nvml.nvmlDeviceGetPersistenceMode, h) for i, h in handles}
        compute = {str(i): _value(nvml, nvml.nvmlDeviceGetComputeMode, h) for i, h in handles}
    data = {
        "persistence": persistence,
        "compute_mode": {i: COMPUTE_MODES.get(v, v) for i, v in compute.items()},
    }
    if not any(_read(v) for v in [*persistence.values(), *compute.values()]):
        raise CannotCheckError(f"persistence and compute mode not available from NVML here: {data}")
    prohibited = [i for i, v in compute.items() if v == 2]
    if prohibited:
        raise AssertionError(
            f"compute mode PROHIBITED on GPU(s) {', '.join(prohibited)}: no process may use them"
        )
    concerns = []
    if off := [i for i, v in persistence.items() if v == 0]:
        concerns.append(f"persistence mode off on GPU(s) {', '.join(off)}")
    if exclusive := [i for i, v in compute.items() if v in (1, 3)]:
        concerns.append(f"compute mode exclusive on GPU(s) {', '.join(exclusive)}")
    if concerns:
        raise ConcernError(
            "; ".join(concerns),
            data,
            "run nvidia-persistenced on the host; "
            "nvidia-smi -c DEFAULT unless one process per GPU is intended",
        )
    shown = {
        "persistence": {i: {0: "off", 1: "on"}.get(v, "not available") for i, v in persistence.items()},
        "compute mode": {i: COMPUTE_MODES.get(v, "not available") for i, v in compute.items()},
    }
    return "; ".join(f"{what}: {_per_gpu(values)}" for what, values in shown.items()), data


def _per_gpu(values: dict[str, str]) -> str:
    """'on' when every GPU says the same, else 'GPU 0 on, GPU 1 not available'."""
    if len(set(values.values())) == 1:
        return next(iter(values.values()))
    return ", ".join(f"GPU {i} {v}" for i, v in values.items())


def _copy_gbs(device: int, to_device: bool) -> float:
    host = torch.empty(COPY_BYTES, dtype=torch.uint8, pin_memory=True)
    dev = torch.empty(COPY_BYTES, dtype=torch.uint8, device=f"cuda:{device}")
    src, dst = (host, dev) if to_device else (dev, host)
    with torch.cuda.device(device):
        for _ in range(3):
            dst.copy_(src, non_blocking=True)
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(10):
            dst.copy_(src, non_blocking=True)
        end.record()
        end.synchronize()
    return float(10 * COPY_BYTES / (start.elapsed_time(end) / 1e3) / 1e9)


def check_pcie() -> tuple[str, dict[str, Any]]:
    """The PCIe link (generation, width) and pinned host<->device copies against what it carries.
    Copies run first: an idle link trains down to a lower generation to save power."""
    data: dict[str, Any] = {}
    concerns, failures = [], []
    with _nvml() as nvml:
        for i, h in _handles(nvml):
            try:
                h2d, d2h = _copy_gbs(i, True), _copy_gbs(i, False)
            except Exception as exc:  # out of memory on a slice, a GPU fallen off the bus: said, and on
                failures.append(f"GPU {i}: pinned copies failed: {type(exc).__name__}: {str(exc)[:200]}")
                continue
            gen = _value(nvml, nvml.nvmlDeviceGetMaxPcieLinkGeneration, h)
            width = _value(nvml, nvml.nvmlDeviceGetMaxPcieLinkWidth, h)
            now = (
                _value(nvml, nvml.nvmlDeviceGetCurrPcieLinkGeneration, h),
                _value(nvml, nvml.nvmlDeviceGetCurrPcieLinkWidth, h),
            )
            link = gpus.pcie_gbs(gen, width) if isinstance(gen, int) and isinstance(width, int) else None
            mig = gpus.is_mig(torch.cuda.get_device_name(i))  # a slice has a share of the copy engines
            status, why = verdicts.copy_bandwidth(min(h2d, d2h), None if mig else link)
            data[str(i)] = {
                "max_generation": gen,
                "max_width": width,
                "current": list(now),
                "link_gbs": link,
                "h2d_gbs": round(h2d, 1),
                "d2h_gbs": round(d2h, 1),
            }
            if status == "fail":  # said after every GPU was measured
                failures.append(f"GPU {i}: {why}")
            narrower = isinstance(now[1], int) and isinstance(width, int) and now[1] < width
            if status == "warn" or narrower:
                concerns.append(f"GPU {i}: {why}; link x{now[1]} of x{width}")
    text = "; ".join(
        f"GPU {i}: Gen{d['max_generation']} x{d['max_width']}, H2D {d['h2d_gbs']} / D2H {d['d2h_gbs']} GB/s"
        for i, d in data.items()
    )
    if failures:
        raise AssertionError("; ".join(failures))
    if concerns:
        raise ConcernError(
            "; ".join(concerns),
            data,
            "reseat the GPU or riser, check the BIOS PCIe settings and the NUMA placement of the job",
        )
    return text, data
