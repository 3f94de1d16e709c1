"""What the GPUs are and whether this torch build can run on them."""

import re
from pathlib import Path

# Dense peak TFLOP/s (no sparsity) from the vendors' datasheets, per dtype. A GPU missing
# here gets no percentage: a guess would be worse than nothing.
PEAKS: dict[str, dict[str, float]] = {
    "H100 SXM": {"fp32": 67, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4, "fp8": 1978.9},
    "H100 PCIe": {"fp32": 51, "tf32": 378, "fp16": 756, "bf16": 756, "fp8": 1513},
    "H100 NVL": {"fp32": 60, "tf32": 417.5, "fp16": 835, "bf16": 835, "fp8": 1670.5},
    "H200": {"fp32": 67, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4, "fp8": 1978.9},
    "A100": {"fp32": 19.5, "tf32": 156, "fp16": 312, "bf16": 312},
    "L40S": {"fp32": 91.6, "tf32": 183, "fp16": 362.05, "bf16": 362.05, "fp8": 733},
    "L4": {"fp32": 30.3, "tf32": 60, "fp16": 121, "bf16": 121, "fp8": 242.5},
    "RTX 4090": {"fp32": 82.6, "tf32": 82.6, "fp16": 165.2, "bf16": 165.2, "fp8": 330.3},
    "A10": {"fp32": 31.2, "tf32": 62.5, "fp16": 125, "bf16": 125},
}


def peak_key(name: str) -> str | None:
    """Map a CUDA device name (e.g. 'NVIDIA H100 80GB HBM3') to a PEAKS entry, or None."""
    n = name.upper()
    if "GH200" in n:
        return None  # Grace Hopper runs at other clocks and power: no datasheet peak here
    if "H200" in n:
        return "H200"
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


def driver_version() -> str | None:
    """The host's NVIDIA kernel driver version, as the container sees it."""
    path = Path("/proc/driver/nvidia/version")
    if not path.exists():
        return None
    m = re.search(r"Kernel Module(?:\s+for\s+\S+)?\s+(\d+(?:\.\d+)+)", path.read_text())
    return m.group(1) if m else None


def version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v))
