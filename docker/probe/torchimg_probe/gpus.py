"""What the GPUs are and whether this torch build can run on them: pure knowledge (no torch
import), so that every rule here is tested on a host without a GPU."""

import re
from pathlib import Path
from typing import Any

# Dense peak TFLOP/s (no sparsity) from the vendors' datasheets, per dtype; fp8 is the
# fast-accumulate figure. A GPU missing here gets no percentage: a guess would be worse than
# nothing. B200: the HGX B200 sheet's 8-GPU figures / 8, sparsity halved.
PEAKS: dict[str, dict[str, float]] = {
    "H100 SXM": {"fp32": 67, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4, "fp8": 1978.9},
    "H100 PCIe": {"fp32": 51, "tf32": 378, "fp16": 756, "bf16": 756, "fp8": 1513},
    "H100 NVL": {"fp32": 60, "tf32": 417.5, "fp16": 835.5, "bf16": 835.5, "fp8": 1670.5},
    "H200": {"fp32": 67, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4, "fp8": 1978.9},
    "H200 NVL": {"fp32": 60, "tf32": 417.5, "fp16": 835.5, "bf16": 835.5, "fp8": 1670.5},
    "GH200": {"fp32": 67, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4, "fp8": 1978.9},
    "B200": {"fp32": 75, "tf32": 1125, "fp16": 2250, "bf16": 2250, "fp8": 4500},
    "A100": {"fp32": 19.5, "tf32": 156, "fp16": 312, "bf16": 312},
    "L40S": {"fp32": 91.6, "tf32": 183, "fp16": 362.05, "bf16": 362.05, "fp8": 733},
    "L4": {"fp32": 30.3, "tf32": 60, "fp16": 121, "bf16": 121, "fp8": 242.5},
    "RTX 4090": {"fp32": 82.6, "tf32": 82.6, "fp16": 165.2, "bf16": 165.2, "fp8": 330.3},
    "A10": {"fp32": 31.2, "tf32": 62.5, "fp16": 125, "bf16": 125},
}

# The best published achievable bf16 matmul TFLOP/s (large square GEMMs at the GPU's real
# clocks): what a healthy node should come close to, where the datasheet peak never is.
ACHIEVABLE: dict[str, dict[str, float]] = {
    "H100 SXM": {"bf16": 794.5},
    "GH200": {"bf16": 828.6},
    "B200": {"bf16": 1745},
}

# PCIe payload bandwidth per lane and direction in GB/s, after line encoding, by generation.
PCIE_LANE_GBS = {1: 0.25, 2: 0.5, 3: 0.985, 4: 1.969, 5: 3.938, 6: 7.563}


def is_mig(name: str) -> bool:
    """A MIG instance: CUDA names it after the full GPU plus its profile ('... MIG 1g.10gb')."""
    return re.search(r"\bMIG\b", name.upper()) is not None


def peak_key(name: str) -> str | None:
    """Map a CUDA device name (e.g. 'NVIDIA H100 80GB HBM3') to a PEAKS entry, or None.

    A MIG instance maps to nothing: a slice has a fraction of the GPU's SMs (a 1g slice tops
    out near 14 % of the full GPU), so the full GPU's peak would report it as broken."""
    n = name.upper()
    if is_mig(n):
        return None
    if "GH200" in n:
        return "GH200"
    if re.search(r"\bB200\b", n):
        return "B200"
    if "H200" in n:
        return "H200 NVL" if "NVL" in n else "H200"
    if "H100" in n:
        if "NVL" in n:
            return "H100 NVL"
        return "H100 PCIe" if "PCIE" in n else "H100 SXM"
    for key in ("A100", "L40S", "RTX 4090", "A10"):
        if re.search(rf"\b{key}\b", n):
            return key
    if re.search(r"\bL4\b", n):
        return "L4"
    return None


def peak(key: str | None, dtype: str) -> float | None:
    """Datasheet peak for a bench dtype ('fp8_fast' and 'fp8' share the fp8 figure)."""
    return PEAKS.get(key or "", {}).get(dtype.removesuffix("_fast"))


def achievable(key: str | None, dtype: str) -> float | None:
    return ACHIEVABLE.get(key or "", {}).get(dtype)


def arch_supported(capability: tuple[int, int], arch_list: list[str]) -> tuple[bool, str]:
    """Whether kernels exist for `capability`: a cubin for it, or PTX it can JIT (forward)."""
    cc = capability[0] * 10 + capability[1]
    sms = {int(a[3:]) for a in arch_list if a.startswith("sm_") and a[3:].isdigit()}
    ptx = {int(a[8:]) for a in arch_list if a.startswith("compute_") and a[8:].isdigit()}
    if cc in sms:
        return True, f"sm_{cc} in the wheel"
    if same_major := [s for s in sms if s // 10 == cc // 10 and s <= cc]:
        return True, f"sm_{max(same_major)} binaries run on sm_{cc} (same major)"
    if older := [p for p in ptx if p <= cc]:
        return True, f"PTX compute_{max(older)} is JIT-compiled for sm_{cc} (slow first start)"
    return False, f"no kernel image for sm_{cc}: the wheel has {', '.join(sorted(arch_list))}"


def kernel_driver_version() -> str | None:
    """The host's NVIDIA kernel module version, as the container sees it. Under CUDA forward
    compatibility the user-mode driver (libcuda) is newer than this."""
    path = Path("/proc/driver/nvidia/version")
    if not path.exists():
        return None
    m = re.search(r"Kernel Module(?:\s+for\s+\S+)?\s+(\d+(?:\.\d+)+)", path.read_text())
    return m.group(1) if m else None


def version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v))


def cuda_version_text(encoded: int) -> str:
    """cuDriverGetVersion's integer (1000 * major + 10 * minor) as 'major.minor'."""
    return f"{encoded // 1000}.{encoded % 1000 // 10}"


def pcie_gbs(generation: int, width: int) -> float | None:
    """Payload bandwidth one way of a PCIe link, GB/s; None for an unknown generation."""
    lane = PCIE_LANE_GBS.get(generation)
    return round(lane * width, 1) if lane and width > 0 else None


def baseline_name(device_name: str) -> str:
    """The benchmark baseline's file stem for a GPU: its full CUDA name (model, memory, form
    factor, MIG profile), so that A100 PCIe and SXM, H200 NVL and SXM, and a MIG slice and its
    full GPU never share a baseline."""
    name = re.sub(r"[^A-Za-z0-9.]+", "-", device_name.strip()).strip("-.")
    return name or "unknown-gpu"


def pci_address(props: Any) -> str | None:
    """The PCI address NVML finds a GPU by (`domain:bus:device.0`, hex), from CUDA's device
    properties (`pci_domain_id`, `pci_bus_id`, `pci_device_id`); None where they are absent."""
    parts = [getattr(props, f"pci_{part}_id", None) for part in ("domain", "bus", "device")]
    if not all(isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in parts):
        return None
    domain, bus, device = parts
    return f"{domain:08x}:{bus:02x}:{device:02x}.0"
