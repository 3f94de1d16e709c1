"""The probe's pure GPU knowledge (docker/probe, run inside the image), tested on the host:
which datasheet peak a device name maps to, and whether a wheel has kernels for a GPU."""

import pytest
from torchimg_probe import gpus


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM"),
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("NVIDIA H100 NVL", "H100 NVL"),
        ("NVIDIA H200", "H200"),
        ("NVIDIA GH200 480GB", None),  # other clocks and power: no datasheet peak
        ("NVIDIA A100-SXM4-80GB", "A100"),
        ("NVIDIA L40S", "L40S"),
        ("NVIDIA L4", "L4"),
        ("NVIDIA A10", "A10"),
        ("NVIDIA A10G", None),  # not the A10's datasheet
        ("NVIDIA GeForce RTX 4090", "RTX 4090"),
        ("Some Future GPU", None),
    ],
)
def test_peak_key(name: str, key: str | None) -> None:
    assert gpus.peak_key(name) == key


ARCHS = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90", "compute_90"]


@pytest.mark.parametrize(
    ("capability", "supported", "why"),
    [
        ((9, 0), True, "sm_90 in the wheel"),
        ((8, 9), True, "sm_86 binaries run on sm_89"),
        ((10, 0), True, "PTX compute_90 is JIT-compiled for sm_100"),
        ((3, 7), False, "no kernel image for sm_37"),
    ],
)
def test_arch_supported(capability: tuple[int, int], supported: bool, why: str) -> None:
    ok, detail = gpus.arch_supported(capability, ARCHS)
    assert ok is supported and why in detail


def test_no_ptx_means_no_forward_compatibility() -> None:
    ok, detail = gpus.arch_supported((12, 0), ["sm_80", "sm_90"])
    assert not ok and "no kernel image for sm_120" in detail


def test_version_tuple() -> None:
    assert gpus.version_tuple("570.26") < gpus.version_tuple("570.124.06")
