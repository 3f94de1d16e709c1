"""`torchimg-probe doctor`: is this node, with this image, ready for GPU work?

Host readiness (driver and forward compatibility, /dev/shm, the user and scratch space
torch.compile needs, MIG, ECC, persistence, PCIe and copy bandwidth) and the multi-GPU path
(torchrun, NCCL all_reduce bus bandwidth, P2P access). Each finding carries its fix; the
exit status is 1 when a check failed. Warnings do not fail.
"""

from typing import Any

import torch

from torchimg_probe import collectives, cuda_state, gpus, readiness, scratch
from torchimg_probe.results import CannotCheckError, ConcernError, Report


def check_p2p() -> tuple[str, dict[str, Any]]:
    cuda_state.need_gpu()
    n = torch.cuda.device_count()
    if n < 2:
        raise CannotCheckError(f"{n} GPU: no peer to access")
    matrix = [[i == j or torch.cuda.can_device_access_peer(i, j) for j in range(n)] for i in range(n)]
    missing = [f"{i}->{j}" for i in range(n) for j in range(n) if not matrix[i][j]]
    data = {"matrix": matrix}
    if missing:
        raise ConcernError(
            f"no P2P access for {len(missing)} of {n * (n - 1)} pairs ({', '.join(missing[:8])})",
            data,
            "NCCL then goes through host memory: "
            "check NVLink/NVSwitch (fabricmanager), IOMMU and ACS settings",
        )
    return f"all {n * (n - 1)} GPU pairs have P2P access", data


def check_all_reduce() -> tuple[str, dict[str, Any]]:
    """NCCL on every GPU; gloo with 2 CPU processes when no GPU is visible (the same torchrun path)."""
    gpu = cuda_state.available()
    if gpu and torch.cuda.device_count() < 2:
        raise CannotCheckError("one GPU: no collective to measure (NCCL needs 2 or more)")
    if not gpu and cuda_state.required():
        cuda_state.need_gpu()  # fails, naming CUDA's own error
    result = collectives.launch(torch.cuda.device_count() if gpu else 0)
    largest = result["results"][-1]
    text = f"{result['backend']} x{result['ranks']}: busbw {largest['busbw_gbs']} GB/s at {largest['mb']} MB"
    name = torch.cuda.get_device_name(0) if gpu else ""
    if gpu and result["ranks"] == 8 and gpus.peak_key(name) in ("H100 SXM", "H200"):
        ref = collectives.PUBLISHED
        text += f" (published 8x H100/H200: ~{ref['ring']:.0f} ring, ~{ref['nvls']:.0f} NVLS)"
        result["published"] = ref
        if largest["busbw_gbs"] < 0.5 * ref["ring"]:
            raise ConcernError(
                text + ": under half of the published ring figure",
                result,
                "check NVLink/NVSwitch health (nvidia-smi nvlink -s, fabricmanager) and NCCL_DEBUG=INFO",
            )
    return text, result


# torchrun's workers first: this process then holds no CUDA context yet (under the
# EXCLUSIVE_PROCESS compute mode a context here would lock the workers out).
CHECKS = (
    ("all_reduce bandwidth (torchrun)", check_all_reduce),
    ("host driver new enough", readiness.check_driver),
    ("/dev/shm size", readiness.check_shm),
    ("user, home and compile scratch", scratch.check),
    ("MIG", readiness.check_mig),
    ("ECC and row remapping", readiness.check_ecc),
    ("persistence and compute mode", readiness.check_modes),
    ("PCIe link and copy bandwidth", readiness.check_pcie),
    ("P2P access", check_p2p),
)


def run(require_gpu: bool) -> Report:
    cuda_state.require(require_gpu or cuda_state.gpus_given())
    report = Report("doctor")
    devices = range(torch.cuda.device_count()) if cuda_state.available() else range(0)
    report.info = cuda_state.info() | {"devices": [torch.cuda.get_device_name(i) for i in devices]}
    for name, fn in CHECKS:
        report.run(name, fn)
    return report
