"""NCCL all_reduce bus bandwidth across the node's GPUs, through torchrun, as a multi-GPU job
runs; gloo with 2 processes on CPU, so that the same path is exercised without GPUs.

`launch()` runs `python -m torch.distributed.run --standalone` with this module as the worker;
rank 0 writes the figures as JSON. A hang (the classic NCCL failure) ends at the timeout with
the workers' last output.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from torchimg_probe import verdicts

GPU_SIZES_MB = (8, 16, 32, 64, 128, 256, 512, 1024)
CPU_SIZES_MB = (8, 16, 32)
TIMEOUT_S = 600
# nccl-tests all_reduce busbw on 8x H100/H200 with NVLink (GB/s): what a healthy node reaches.
PUBLISHED = {"ring": 370.0, "nvls": 475.0}


def launch(gpus: int) -> dict[str, Any]:
    """Run the workers: one per GPU with NCCL, or 2 CPU processes with gloo when gpus == 0."""
    nproc, backend = (gpus, "nccl") if gpus else (2, "gloo")
    with tempfile.TemporaryDirectory(prefix="torchimg-collectives-") as tmp:
        out = Path(tmp) / "result.json"
        env = dict(os.environ)
        if backend == "gloo":
            env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # one node: the loopback is enough and always there
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "torchimg_probe.collectives", "--backend", backend, "--json", str(out),
        ]  # fmt: skip
        log = Path(tmp) / "torchrun.log"  # a file, not a pipe: a stuck worker cannot hold it open
        hung = False
        with log.open("w") as sink:
            proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, text=True, env=env)
            try:
                proc.wait(timeout=TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _stop(proc)
                hung = True
            except BaseException:  # Ctrl-C, SIGTERM: never leave workers on the GPUs
                _stop(proc)
                raise
        tail = "\n".join(log.read_text(errors="replace").strip().splitlines()[-8:])
        if hung:
            raise AssertionError(f"all_reduce did not finish in {TIMEOUT_S} s (a hang): {tail}")
        if proc.returncode != 0 or not out.exists():
            raise AssertionError(f"torchrun exited {proc.returncode}: {tail}")
        return dict(json.loads(out.read_text()))


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (torchrun starts each worker in a session of its own, so a
    process-group kill would miss them)."""
    found = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            kids = [int(k) for k in children.read_text().split()]
        except OSError:
            continue
        for kid in kids:
            found += [kid, *_descendants(kid)]
    return found


def _stop(proc: "subprocess.Popen[str]") -> None:
    """SIGTERM torchrun (it stops its workers within 30 s), then SIGKILL whatever is left."""
    workers = _descendants(proc.pid)
    proc.terminate()
    try:
        proc.wait(timeout=35)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for pid in workers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue


def _worker(backend: str, result: Path) -> None:
    import torch
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    gpu = backend == "nccl"
    if gpu:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    device = torch.device("cuda", torch.cuda.current_device()) if gpu else torch.device("cpu")
    dist.init_process_group(backend, device_id=device if gpu else None)
    rows = []
    for mb in GPU_SIZES_MB if gpu else CPU_SIZES_MB:
        n = mb * 2**20 // 4
        x = torch.ones(n, dtype=torch.float32, device=device)
        dist.all_reduce(x)  # warm-up, and the check: every element is the world size
        if gpu:
            torch.cuda.synchronize()
        if not bool((x == world).all()):
            raise AssertionError(f"all_reduce of {mb} MB gave wrong values (expected {world})")
        iters = 20 if gpu else 3
        dist.barrier()
        start = time.perf_counter()
        for _ in range(iters):
            dist.all_reduce(x)
        if gpu:
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / iters
        algbw, busbw = verdicts.bus_bandwidth(n * 4, seconds, world)
        rows.append(
            {
                "mb": mb,
                "ms": round(seconds * 1e3, 3),
                "algbw_gbs": round(algbw, 2),
                "busbw_gbs": round(busbw, 2),
            }
        )
        del x
    dist.barrier()
    if rank == 0:
        result.write_text(json.dumps({"backend": backend, "ranks": world, "results": rows}))
    dist.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser(prog="torchimg_probe.collectives")
    p.add_argument("--backend", choices=("nccl", "gloo"), required=True)
    p.add_argument("--json", type=Path, required=True)
    args = p.parse_args()
    _worker(args.backend, args.json)


if __name__ == "__main__":
    main()
