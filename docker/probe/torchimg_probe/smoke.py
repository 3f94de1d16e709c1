"""Smoke checks: does this image work on this machine's GPUs (or CPU), the first time?

Every GPU check is skipped, with the reason, when no GPU is visible; `--require-gpu` makes
that a failure. Expected versions come from the image's labels (TORCHIMG_EXPECT, JSON).
"""

import json
import os
from typing import Any

# cuBLAS needs this before CUDA starts for deterministic GEMMs; setting it here (before
# torch initialises CUDA) also covers users who import the probe first.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import torch
from torch import nn

from torchimg_probe import gpus
from torchimg_probe.results import CannotCheckError, Report

# Allowed max abs error relative to the CPU fp32 reference's scale, per dtype.
TOLERANCE = {"fp32": 1e-4, "tf32": 5e-3, "fp16": 5e-3, "bf16": 3e-2}
DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _expected() -> dict[str, str]:
    raw = os.environ.get("TORCHIMG_EXPECT", "{}")
    return dict(json.loads(raw))


def _need_gpu() -> None:
    if not torch.cuda.is_available():
        raise CannotCheckError(
            "no GPU visible (run with --gpus all on a host with the NVIDIA container toolkit)"
        )


def check_versions() -> tuple[str, dict[str, Any]]:
    want = _expected()
    have = {
        "torch": torch.__version__.split("+")[0],
        "cuda": torch.version.cuda or "none",
        "cudnn": str(torch.backends.cudnn.version() or "none"),
        "nccl": ".".join(map(str, torch.cuda.nccl.version())) if torch.version.cuda else "none",
    }
    problems = []
    if "torch" in want and want["torch"] != have["torch"]:
        problems.append(f"torch {have['torch']} != label {want['torch']}")
    if "cuda" in want and want["cuda"] != "none" and not want["cuda"].startswith(have["cuda"]):
        problems.append(f"CUDA {have['cuda']} does not match label {want['cuda']}")
    if want.get("cudnn", "none") != "none":
        major, minor, patch = (int(x) for x in want["cudnn"].split(".")[:3])
        if have["cudnn"] != str(major * 10000 + minor * 100 + patch):
            problems.append(f"cuDNN {have['cudnn']} does not match label {want['cudnn']}")
    if want.get("nccl", "none") != "none" and not want["nccl"].startswith(have["nccl"]):
        problems.append(f"NCCL {have['nccl']} does not match label {want['nccl']}")
    if problems:
        raise AssertionError("; ".join(problems))
    return ", ".join(f"{k} {v}" for k, v in have.items()), have


def check_cuda_available() -> str:
    if torch.version.cuda is None:
        raise CannotCheckError("CPU-only torch build (no CUDA in this image)")
    _need_gpu()
    return f"{torch.cuda.device_count()} GPU(s)"


def check_driver() -> tuple[str, dict[str, Any]]:
    minimum = _expected().get("driver_min", "none")
    have = gpus.driver_version()
    if have is None:
        raise CannotCheckError("no NVIDIA driver visible in the container")
    if minimum != "none" and gpus.version_tuple(have) < gpus.version_tuple(minimum):
        raise AssertionError(
            f"host driver {have} is older than {minimum}, the minimum for CUDA {torch.version.cuda}: "
            f"upgrade the host's NVIDIA driver to {minimum} or newer, or use an image of an older "
            "CUDA variant"
        )
    return f"driver {have} >= {minimum}", {"driver": have, "minimum": minimum}


def check_architectures() -> tuple[str, dict[str, Any]]:
    _need_gpu()
    arch_list = torch.cuda.get_arch_list()
    devices, bad = [], []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        cap = (props.major, props.minor)
        ok, why = gpus.arch_supported(cap, arch_list)
        devices.append(
            {
                "index": i,
                "name": props.name,
                "capability": f"{cap[0]}.{cap[1]}",
                "memory_gb": round(props.total_memory / 1e9, 1),
                "supported": ok,
                "why": why,
            }
        )
        if not ok:
            bad.append(f"GPU {i} {props.name}: {why}")
    if bad:
        raise AssertionError("; ".join(bad))
    return "; ".join(f"{d['name']} sm_{d['capability']}: {d['why']}" for d in devices), {
        "devices": devices,
        "arch_list": arch_list,
    }


def _compare(name: str, dtype_name: str, gpu_out: torch.Tensor, ref: torch.Tensor) -> float:
    err = (gpu_out.float().cpu() - ref).abs().max().item()
    scale = ref.abs().max().item() or 1.0
    rel = float(err / scale)
    if rel > TOLERANCE[dtype_name]:
        raise AssertionError(f"{name} {dtype_name}: relative error {rel:.2e} > {TOLERANCE[dtype_name]:.0e}")
    return rel


def check_numerics() -> tuple[str, dict[str, Any]]:
    """Matmul and conv on the GPU against a CPU fp32 reference, per dtype."""
    _need_gpu()
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(512, 512, generator=gen), torch.randn(512, 512, generator=gen)
    x, w = torch.randn(8, 16, 32, 32, generator=gen), torch.randn(32, 16, 3, 3, generator=gen)
    ref_mm, ref_conv = a @ b, torch.nn.functional.conv2d(x, w, padding=1)
    errors: dict[str, float] = {}
    old_tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        for name, dtype in DTYPES.items():
            tf32 = name == "tf32"
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
            mm = a.cuda().to(dtype) @ b.cuda().to(dtype)
            conv = torch.nn.functional.conv2d(x.cuda().to(dtype), w.cuda().to(dtype), padding=1)
            errors[f"matmul_{name}"] = _compare("matmul", name, mm, ref_mm)
            errors[f"conv_{name}"] = _compare("conv2d", name, conv, ref_conv)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old_tf32
    worst = max(errors, key=lambda k: errors[k])
    return f"all within tolerance (worst {worst}: {errors[worst]:.1e})", {"relative_errors": errors}


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_amp_step() -> str:
    _need_gpu()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 512), nn.GELU(), nn.Linear(512, 10)).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda")
    x, y = torch.randn(64, 256, device="cuda"), torch.randint(0, 10, (64,), device="cuda")
    losses = []
    for _ in range(3):
        with torch.autocast("cuda", dtype=torch.float16):
            loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(loss.item())
    if not all(torch.isfinite(torch.tensor(losses))):
        raise AssertionError(f"non-finite AMP loss: {losses}")
    return f"fp16 autocast + GradScaler, loss {losses[0]:.3f} -> {losses[-1]:.3f}"


def check_compile() -> str:
    device = _device()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 8)).to(device)
    compiled = torch.compile(model)
    x = torch.randn(32, 64, device=device)
    torch.testing.assert_close(compiled(x), model(x), rtol=1e-3, atol=1e-3)
    return f"torch.compile (inductor) on {device}"


def _train_once(device: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
    torch.manual_seed(1234)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16 * 16, 10))
    model = model.to(device)
    x = torch.randn(16, 3, 16, 16, device=device)
    out = model(x)
    out.square().mean().backward()
    return out.detach().cpu(), [p.grad.detach().cpu() for p in model.parameters() if p.grad is not None]


def check_determinism() -> str:
    device = _device()
    torch.use_deterministic_algorithms(True)
    try:
        out1, grads1 = _train_once(device)
        out2, grads2 = _train_once(device)
    finally:
        torch.use_deterministic_algorithms(False)
    same = torch.equal(out1, out2) and all(torch.equal(a, b) for a, b in zip(grads1, grads2, strict=True))
    if not same:
        raise AssertionError("two identical forward+backward runs differ bitwise")
    return f"forward + backward bitwise identical twice on {device}"


def check_transformer_step() -> str:
    device = _device()
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(d_model=128, nhead=4, dim_feedforward=256, batch_first=True)
    model = nn.Sequential(
        nn.Embedding(1000, 128), nn.TransformerEncoder(layer, num_layers=2), nn.Linear(128, 1000)
    )
    model = model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tokens = torch.randint(0, 1000, (8, 64), device=device)
    losses = []
    for _ in range(3):
        logits = model(tokens[:, :-1])
        loss = nn.functional.cross_entropy(logits.reshape(-1, 1000), tokens[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    if not losses[-1] < losses[0]:
        raise AssertionError(f"loss did not fall: {losses}")
    return f"2-layer transformer on {device}: loss {losses[0]:.3f} -> {losses[-1]:.3f}"


def check_memory() -> tuple[str, dict[str, Any]]:
    _need_gpu()
    data = {
        "allocated_mb": round(torch.cuda.memory_allocated() / 2**20, 1),
        "reserved_mb": round(torch.cuda.memory_reserved() / 2**20, 1),
        "max_allocated_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
    }
    free, total = torch.cuda.mem_get_info()
    data |= {"free_gb": round(free / 1e9, 1), "total_gb": round(total / 1e9, 1)}
    return ", ".join(f"{k} {v}" for k, v in data.items()), data


CHECKS = (
    ("versions match labels", check_versions),
    ("CUDA available", check_cuda_available),
    ("host driver new enough", check_driver),
    ("GPU architecture in the wheel", check_architectures),
    ("matmul/conv vs CPU (fp32, tf32, fp16, bf16)", check_numerics),
    ("AMP training step", check_amp_step),
    ("torch.compile", check_compile),
    ("determinism", check_determinism),
    ("transformer training step", check_transformer_step),
    ("GPU memory", check_memory),
)


def run(require_gpu: bool) -> Report:
    report = Report("smoke")
    report.info = {
        "torch": torch.__version__,
        "cuda_build": torch.version.cuda,
        "gpu": torch.cuda.is_available(),
    }
    if require_gpu and not torch.cuda.is_available():
        report.run(
            "GPU required", lambda: (_ for _ in ()).throw(AssertionError("--require-gpu: no GPU visible"))
        )
    for name, fn in CHECKS:
        report.run(name, fn)
    return report
