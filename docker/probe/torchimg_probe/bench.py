"""Matmul throughput: TFLOP/s per dtype and shape, timed with CUDA events after warm-up.

Reports best and median of the timed repeats, and the share of the GPU's dense datasheet peak
when the GPU is in gpus.PEAKS. On CPU: small sizes, GFLOP/s, no peak.
"""

import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from torchimg_probe import gpus

SQUARES = (1024, 2048, 4096, 8192)
# (M, N, K) of an 8B-class LLM's GEMMs at 8192 tokens: attention projection, MLP up, MLP down.
LLM_SHAPES = ((8192, 4096, 4096), (8192, 14336, 4096), (8192, 4096, 14336))
CPU_SQUARES = (256, 512, 1024)


def _fp8_supported() -> bool:
    if not torch.cuda.is_available() or not hasattr(torch, "_scaled_mm"):
        return False
    return bool(torch.cuda.get_device_capability() >= (8, 9))


def _operands(m: int, n: int, k: int, dtype: str, device: str) -> Callable[[], Any]:
    if dtype == "fp8":
        a = torch.randn(m, k, device=device).to(torch.float8_e4m3fn)
        b = torch.randn(n, k, device=device).to(torch.float8_e4m3fn).t()  # column-major, as cuBLASLt wants
        one = torch.tensor(1.0, device=device)
        return lambda: torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
    torch_dtype = {
        "fp32": torch.float32,
        "tf32": torch.float32,
        "fp16": torch.float16,
        "bf16": torch.bfloat16,
    }[dtype]
    a = torch.randn(m, k, device=device, dtype=torch_dtype)
    b = torch.randn(k, n, device=device, dtype=torch_dtype)
    out = torch.empty(m, n, device=device, dtype=torch_dtype)
    return lambda: torch.matmul(a, b, out=out)


def _time_gpu(fn: Callable[[], Any], inner: int, repeats: int, warmup_s: float = 0.3) -> list[float]:
    """Per-call seconds of `repeats` timings of `inner` back-to-back calls, after the GPU has
    been kept busy for `warmup_s` (clocks ramp up, cuBLAS picks and caches its kernel)."""
    start = time.perf_counter()
    while True:
        for _ in range(inner):
            fn()
        torch.cuda.synchronize()
        if time.perf_counter() - start >= warmup_s:
            break
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3 / inner)
    return times


def _time_cpu(fn: Callable[[], Any], inner: int, repeats: int) -> list[float]:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - start) / inner)
    return times


def run(quick: bool = False) -> dict[str, Any]:
    gpu = torch.cuda.is_available()
    device = "cuda" if gpu else "cpu"
    name = torch.cuda.get_device_name() if gpu else "cpu"
    key = gpus.peak_key(name) if gpu else None
    dtypes = ["fp32", "tf32", "fp16", "bf16"] + (["fp8"] if _fp8_supported() else [])
    if not gpu:
        dtypes = ["fp32", "bf16"]
    shapes = [(s, s, s) for s in (CPU_SQUARES if not gpu else SQUARES)] + (
        [] if not gpu or quick else list(LLM_SHAPES)
    )
    unit = 1e12 if gpu else 1e9
    rows = []
    old_tf32 = torch.backends.cuda.matmul.allow_tf32
    try:
        for dtype in dtypes:
            torch.backends.cuda.matmul.allow_tf32 = dtype == "tf32"
            for m, n, k in shapes:
                flops = 2.0 * m * n * k
                fn = _operands(m, n, k, dtype, device)
                if gpu:
                    inner = max(1, min(50, math.ceil(5e11 / flops)))
                    times = _time_gpu(fn, inner, 5 if quick else 20)
                else:
                    times = _time_cpu(fn, 1, 3)
                best, median = flops / min(times) / unit, flops / statistics.median(times) / unit
                peak = gpus.PEAKS.get(key, {}).get(dtype) if key else None
                rows.append(
                    {
                        "dtype": dtype,
                        "m": m,
                        "n": n,
                        "k": k,
                        "best": round(best, 2),
                        "median": round(median, 2),
                        "peak_pct": round(100 * best / peak, 1) if peak else None,
                    }
                )
                pct = f" ({rows[-1]['peak_pct']}% of peak)" if peak else ""
                print(
                    f"{dtype:>5} {m}x{n}x{k}: best {best:8.1f} median {median:8.1f} "
                    f"{'TFLOP/s' if gpu else 'GFLOP/s'}{pct}",
                    flush=True,
                )
                del fn
                if gpu:
                    torch.cuda.empty_cache()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old_tf32
    return {
        "kind": "bench",
        "device": name,
        "peak_key": key,
        "unit": "TFLOP/s" if gpu else "GFLOP/s",
        "peaks": gpus.PEAKS.get(key, {}) if key else {},
        "torch": torch.__version__,
        "results": rows,
    }
