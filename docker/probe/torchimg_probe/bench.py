"""Matmul throughput: TFLOP/s per dtype and shape on GPU 0, timed with CUDA events.

Reports best and median of the timed repeats, the share of the GPU's dense datasheet peak
and, where published, of the best achievable figure; a bare `torch.matmul` loop timed in the
same run is the reference the probe's own timing must match. The GPU first waits
(`torch.cuda._sleep`) while the timed calls of a row are queued (up to 400 behind one wait),
then runs them back to back:
a small shape times the GPU, not the CPU's launches, and no idle gap between repeats lets
the clocks boost above what the GPU sustains under load. A
row that cannot run (fp8 on an odd configuration, out of memory on a small MIG slice) records
its error and the others go on. On CPU: small sizes, GFLOP/s, no peak.
"""

import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from torchimg_probe import cuda_state, gpus

SQUARES = (1024, 2048, 4096, 8192)
# (M, N, K) of an 8B-class LLM's GEMMs at 8192 tokens: attention projection, MLP up, MLP down.
LLM_SHAPES = ((8192, 4096, 4096), (8192, 14336, 4096), (8192, 4096, 14336))
CPU_SQUARES = (256, 512, 1024)
REFERENCE = ("bf16", 8192)  # the row compared with a bare torch.matmul loop
# fp8 e4m3 through cuBLASLt: "fp8" accumulates in full precision (what training recipes use),
# "fp8_fast" with fast accumulation (what the datasheet's fp8 peak assumes).
FP8_MODES = {"fp8": False, "fp8_fast": True}
# GPU clock cycles the GPU waits per call queued behind the wait: ~50 us at 2 GHz, several
# times what a launch from Python takes; at least ~1 ms in all. At most MAX_QUEUED_CALLS calls
# wait behind one wait: CUDA holds about 1024 pending launches, then the CPU blocks while the
# GPU runs, and the rest would be queued against a running GPU.
QUEUE_FILL_CYCLES_PER_CALL = 100_000
QUEUE_FILL_MIN_CYCLES = 2_000_000
MAX_QUEUED_CALLS = 400


def _fp8_supported() -> bool:
    if not cuda_state.available() or not hasattr(torch, "_scaled_mm"):
        return False
    return bool(torch.cuda.get_device_capability() >= (8, 9))


def inner_calls(flops: float) -> int:
    """Calls per timed repeat: enough for ~0.5 TFLOP of work, between 1 and 50."""
    return max(1, min(50, math.ceil(5e11 / flops)))


def _operands(m: int, n: int, k: int, dtype: str, device: str) -> Callable[[], Any]:
    if dtype in FP8_MODES:
        a = torch.randn(m, k, device=device).to(torch.float8_e4m3fn)
        b = torch.randn(n, k, device=device).to(torch.float8_e4m3fn).t()  # column-major, as cuBLASLt wants
        one = torch.tensor(1.0, device=device)
        fast = FP8_MODES[dtype]
        return lambda: torch._scaled_mm(
            a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16, use_fast_accum=fast
        )
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


def _warm_up(fn: Callable[[], Any], inner: int, seconds: float) -> None:
    """Keep the GPU busy for `seconds`: clocks ramp up, cuBLAS picks and caches its kernel."""
    start = time.perf_counter()
    while True:
        for _ in range(inner):
            fn()
        torch.cuda.synchronize()
        if time.perf_counter() - start >= seconds:
            return


def _time_gpu(fn: Callable[[], Any], inner: int, repeats: int, warmup_s: float = 0.3) -> list[float]:
    """Per-call seconds of `repeats` timings of `inner` calls each. The repeats are queued in
    groups of at most MAX_QUEUED_CALLS calls, each group behind one wait, and run back to back
    (each repeat between its own pair of events)."""
    _warm_up(fn, inner, warmup_s)
    per_group = max(1, MAX_QUEUED_CALLS // inner)
    times: list[float] = []
    for done in range(0, repeats, per_group):
        events = [
            (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            for _ in range(min(per_group, repeats - done))
        ]
        torch.cuda._sleep(max(QUEUE_FILL_MIN_CYCLES, QUEUE_FILL_CYCLES_PER_CALL * inner * len(events)))
        for start, end in events:
            start.record()
            for _ in range(inner):
                fn()
            end.record()
        events[-1][1].synchronize()
        times += [start.elapsed_time(end) / 1e3 / inner for start, end in events]
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


def bare_matmul_tflops(n: int, seconds: float = 2.0) -> float:
    """A user's own loop: `torch.matmul(a, b)` in bf16, wall clock over synchronize."""
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    _warm_up(lambda: torch.matmul(a, b), 10, 0.3)
    calls, start = 0, time.perf_counter()
    while True:
        for _ in range(10):
            torch.matmul(a, b)
        torch.cuda.synchronize()
        calls += 10
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return 2.0 * n**3 * calls / elapsed / 1e12


def _row(dtype: str, m: int, n: int, k: int, gpu: bool, quick: bool, key: str | None) -> dict[str, Any]:
    row: dict[str, Any] = {"dtype": dtype, "m": m, "n": n, "k": k, "device_index": 0 if gpu else None}
    flops = 2.0 * m * n * k
    fn = _operands(m, n, k, dtype, "cuda" if gpu else "cpu")
    try:
        times = _time_gpu(fn, inner_calls(flops), 5 if quick else 20) if gpu else _time_cpu(fn, 1, 3)
    finally:
        del fn
    unit = 1e12 if gpu else 1e9
    best, median = flops / min(times) / unit, flops / statistics.median(times) / unit
    peak, top = gpus.peak(key, dtype), gpus.achievable(key, dtype)
    row |= {
        "best": round(best, 2),
        "median": round(median, 2),
        "peak_pct": round(100 * best / peak, 1) if peak else None,
        "achievable_pct": round(100 * best / top, 1) if top else None,
        "seconds_per_call": min(times),
    }
    if dtype in FP8_MODES:
        row["fast_accum"] = FP8_MODES[dtype]
    return row


def run(quick: bool = False) -> dict[str, Any]:
    gpu = cuda_state.available()
    name = torch.cuda.get_device_name(0) if gpu else "cpu"
    key = gpus.peak_key(name) if gpu else None
    dtypes = ["fp32", "tf32", "fp16", "bf16"] + (list(FP8_MODES) if _fp8_supported() else [])
    if not gpu:
        dtypes = ["fp32", "bf16"]
    shapes = [(s, s, s) for s in (CPU_SQUARES if not gpu else SQUARES)] + (
        [] if not gpu or quick else list(LLM_SHAPES)
    )
    rows: list[dict[str, Any]] = []
    reference: dict[str, Any] = {}
    old_tf32 = torch.backends.cuda.matmul.allow_tf32
    try:
        for dtype in dtypes:
            torch.backends.cuda.matmul.allow_tf32 = dtype == "tf32"
            for m, n, k in shapes:
                try:
                    row = _row(dtype, m, n, k, gpu, quick, key)
                    if gpu:
                        torch.cuda.empty_cache()
                except Exception as exc:  # one row failing (a sticky CUDA error too) loses no other
                    row = {"dtype": dtype, "m": m, "n": n, "k": k, "device_index": 0 if gpu else None}
                    row |= {"best": None, "median": None, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
                rows.append(row)
                _print(row, gpu)
                if gpu and (dtype, m, n, k) == (REFERENCE[0], *[REFERENCE[1]] * 3):
                    reference = _reference(row)  # at once: same clocks and temperature as the row
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old_tf32
    result: dict[str, Any] = {
        "kind": "bench",
        "device": name,
        "peak_key": key,
        "mig": gpus.is_mig(name),
        "baseline": gpus.baseline_name(name) if gpu else None,
        "unit": "TFLOP/s" if gpu else "GFLOP/s",
        "peaks": gpus.PEAKS.get(key or "", {}),
        "achievable": gpus.ACHIEVABLE.get(key or "", {}),
        "torch": torch.__version__,
        "results": rows,
    }
    if gpu:
        result["reference"] = reference or {"error": f"no {REFERENCE[0]} {REFERENCE[1]}^3 row was timed"}
    return result


def _reference(ours: dict[str, Any]) -> dict[str, Any]:
    """The bare loop, timed right after the probe's own row of the same shape. Its figure is a
    mean over the loop, so the probe's share is of its median (its best would flatter it)."""
    dtype, n = REFERENCE
    ref: dict[str, Any] = {"what": f"bare torch.matmul loop, {dtype} {n}^3, wall clock, mean"}
    try:
        ref["tflops"] = round(bare_matmul_tflops(n), 2)
    except Exception as exc:
        ref["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        return ref
    if ours.get("median"):
        ref["probe_pct"] = round(100 * ours["median"] / ref["tflops"], 1)
        ref["probe_best_pct"] = round(100 * ours["best"] / ref["tflops"], 1)
    print(
        f"reference: {ref['what']}: {ref['tflops']} TFLOP/s; probe median {ref.get('probe_pct')}% of it",
        flush=True,
    )
    return ref


def problems(result: dict[str, Any]) -> list[str]:
    """Why a bench result cannot be trusted (its exit status): a row that did not run or gave
    no finite figure, or on a GPU a reference loop that did not run."""
    found = []
    for r in result.get("results", []):
        best = r.get("best")
        if r.get("error") or not isinstance(best, (int, float)) or not math.isfinite(best) or best <= 0:
            found.append(f"{r.get('dtype')} {r.get('m')}x{r.get('n')}x{r.get('k')}: {r.get('error') or best}")
    if not result.get("results"):
        found.append("no results")
    if "reference" in result and "tflops" not in result["reference"]:
        found.append(f"reference: {result['reference'].get('error')}")
    return found


def _print(row: dict[str, Any], gpu: bool) -> None:
    shape = f"{row['dtype']:>8} {row['m']}x{row['n']}x{row['k']}"
    if row.get("error"):
        print(f"{shape}: ERROR {row['error']}", flush=True)
        return
    pct = f" ({row['peak_pct']}% of peak)" if row.get("peak_pct") else ""
    if row.get("achievable_pct"):
        pct += f" ({row['achievable_pct']}% of achievable)"
    unit = "TFLOP/s" if gpu else "GFLOP/s"
    print(f"{shape}: best {row['best']:8.1f} median {row['median']:8.1f} {unit}{pct}", flush=True)
