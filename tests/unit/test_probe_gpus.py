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
        ("NVIDIA GH200 480GB", "GH200"),
        ("NVIDIA H200 NVL", "H200 NVL"),  # not the SXM's 989 bf16: 835.5
        ("NVIDIA B200", "B200"),
        ("NVIDIA H100 80GB HBM3 MIG 1g.10gb", None),  # a slice: the full GPU's peak would be wrong
        ("NVIDIA A100-SXM4-40GB MIG 3g.20gb", None),
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


def test_fp8_rows_share_the_datasheet_figure_and_achievable_is_bf16_only() -> None:
    assert gpus.peak("H100 SXM", "fp8_fast") == gpus.peak("H100 SXM", "fp8") == 1978.9
    assert gpus.peak("H200 NVL", "bf16") == 835.5 and gpus.peak(None, "bf16") is None
    assert gpus.achievable("H100 SXM", "bf16") == 794.5 and gpus.achievable("H100 SXM", "fp16") is None
    assert gpus.achievable("B200", "bf16") == 1745 and gpus.achievable("GH200", "bf16") == 828.6


def test_pcie_bandwidth_and_cuda_version_text() -> None:
    assert gpus.pcie_gbs(5, 16) == 63.0 and gpus.pcie_gbs(4, 16) == 31.5
    assert gpus.pcie_gbs(4, 8) == 15.8 and gpus.pcie_gbs(9, 16) is None and gpus.pcie_gbs(4, 0) is None
    assert gpus.cuda_version_text(12080) == "12.8" and gpus.cuda_version_text(13020) == "13.2"
    assert gpus.cuda_version_text(12020) == "12.2"


def test_version_tuple() -> None:
    assert gpus.version_tuple("570.26") < gpus.version_tuple("570.124.06")


@pytest.mark.parametrize(
    ("device", "stem"),
    [
        ("NVIDIA H100 80GB HBM3", "NVIDIA-H100-80GB-HBM3"),
        ("NVIDIA A100-SXM4-80GB", "NVIDIA-A100-SXM4-80GB"),
        ("NVIDIA A100 80GB PCIe", "NVIDIA-A100-80GB-PCIe"),
        ("NVIDIA H100 80GB HBM3 MIG 1g.10gb", "NVIDIA-H100-80GB-HBM3-MIG-1g.10gb"),
        ("../../etc/passwd", "etc-passwd"),
        ("...", "unknown-gpu"),
    ],
)
def test_each_gpu_model_and_mig_profile_has_its_own_baseline(device: str, stem: str) -> None:
    assert gpus.baseline_name(device) == stem


def test_the_pci_address_nvml_finds_a_gpu_by() -> None:
    """NVML's fallback lookup when the UUID is unknown: never an index (NVML counts every GPU
    of the host, CUDA only the visible ones)."""
    from types import SimpleNamespace

    props = SimpleNamespace(pci_domain_id=0, pci_bus_id=0x3B, pci_device_id=0)
    assert gpus.pci_address(props) == "00000000:3b:00.0"
    assert (
        gpus.pci_address(SimpleNamespace(pci_domain_id=1, pci_bus_id=255, pci_device_id=31))
        == "00000001:ff:1f.0"
    )
    assert gpus.pci_address(SimpleNamespace(name="no PCI fields (an older torch)")) is None
    assert gpus.pci_address(SimpleNamespace(pci_domain_id=0, pci_bus_id=-1, pci_device_id=0)) is None
