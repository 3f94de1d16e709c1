"""Smoke checks: does this image work on this machine's GPUs (or CPU), the first time?

Every GPU check is skipped, with the reason, when no GPU is visible; with `--require-gpu`
(the pipeline passes it whenever the engine gives a CUDA image the GPUs) that is a failure
naming CUDA's own start-up error. Numerics and AMP run on every visible GPU. Expected
versions come from the image's labels (TORCHIMG_EXPECT, JSON). The torch-only checks of
PyTorch's release smoke test each have a counterpart here.
"""

import copy
import importlib.metadata
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

# cuBLAS needs this before CUDA starts for deterministic GEMMs; setting it here (before
# torch initialises CUDA) also covers users who import the probe first.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import torch
from torch import nn

from torchimg_probe import attention, cuda_state, gpus, readiness, verdicts
from torchimg_probe.results import CannotCheckError, Outcome, Report, expected

# Allowed max abs error relative to the CPU fp32 reference's scale, per dtype.
TOLERANCE = {"fp32": 1e-4, "tf32": 5e-3, "fp16": 5e-3, "bf16": 3e-2}
DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_OPTIONS = {"emulated": False}
T = TypeVar("T")


def _devices() -> list[int]:
    cuda_state.need_gpu()
    return list(range(torch.cuda.device_count()))


def _on_each_gpu(check: Callable[[int], T]) -> dict[str, T]:
    """`check(i)` for every visible GPU i. A failure on one GPU does not hide the GPUs after
    it: every failing GPU is named, in one failure, at the end."""
    results: dict[str, T] = {}
    failures = []
    for i in _devices():
        try:
            results[str(i)] = check(i)
        except Exception as exc:  # an assertion, or CUDA's own error (ECC, Xid): this GPU failed
            text = " ".join(str(exc).split())[:300]
            failures.append(text if text.startswith(f"GPU {i}") else f"GPU {i}: {type(exc).__name__}: {text}")
    if failures:
        raise AssertionError("; ".join(failures))
    return results


def _device() -> str:
    return "cuda" if cuda_state.available() else "cpu"


def check_require_gpu() -> str:
    error = cuda_state.start()
    if error is not None:
        raise AssertionError(f"--require-gpu: CUDA did not start: {error}")
    return f"CUDA started with {torch.cuda.device_count()} GPU(s)"


def check_versions() -> tuple[str, dict[str, Any]]:
    want = expected()
    have = {
        "torch": torch.__version__.split("+")[0],
        "cuda": torch.version.cuda or "none",
        "cudnn": str(torch.backends.cudnn.version() or "none"),
        # (major, minor, patch) and, for a suffixed NCCL, the suffix: the label has no suffix
        "nccl": ".".join(map(str, tuple(torch.cuda.nccl.version())[:3])) if torch.version.cuda else "none",
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


def check_openmp() -> str:
    if not torch.backends.openmp.is_available():
        raise AssertionError("torch was built without OpenMP: CPU ops run on one thread")
    return f"OpenMP, {torch.get_num_threads()} threads"


def check_cuda_available() -> tuple[str, dict[str, Any]]:
    cuda_state.need_cuda_build()
    names = [torch.cuda.get_device_name(i) for i in _devices()]
    return f"{len(names)} GPU(s): {', '.join(names)}", {"devices": names}


def check_architectures() -> tuple[str, dict[str, Any]]:
    arch_list = torch.cuda.get_arch_list() if torch.version.cuda else []
    devices, bad = [], []
    for i in _devices():
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
    return "; ".join(f"GPU {d['index']} {d['name']} sm_{d['capability']}: {d['why']}" for d in devices), {
        "devices": devices,
        "arch_list": arch_list,
    }


def _compare(what: str, dtype_name: str, out: torch.Tensor, ref: torch.Tensor) -> float:
    """Relative max error against the reference; NaN or Inf anywhere fails (NaN > tol is False)."""
    err = (out.float().cpu() - ref).abs().max().item()
    rel = verdicts.relative_error(err, ref.abs().max().item())
    if not verdicts.within(rel, TOLERANCE[dtype_name]):
        raise AssertionError(f"{what} {dtype_name}: relative error {rel:.2e} > {TOLERANCE[dtype_name]:.0e}")
    return rel


def check_numerics() -> tuple[str, dict[str, Any]]:
    """Matmul and conv on every GPU against a CPU fp32 reference, per dtype."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(512, 512, generator=gen), torch.randn(512, 512, generator=gen)
    x, w = torch.randn(8, 16, 32, 32, generator=gen), torch.randn(32, 16, 3, 3, generator=gen)
    ref_mm, ref_conv = a @ b, torch.nn.functional.conv2d(x, w, padding=1)

    def on(i: int) -> dict[str, float]:
        dev, per = f"cuda:{i}", {}
        for name, dtype in DTYPES.items():
            tf32 = name == "tf32"
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
            mm = a.to(dev, dtype) @ b.to(dev, dtype)
            conv = torch.nn.functional.conv2d(x.to(dev, dtype), w.to(dev, dtype), padding=1)
            per[f"matmul_{name}"] = _compare(f"GPU {i} matmul", name, mm, ref_mm)
            per[f"conv_{name}"] = _compare(f"GPU {i} conv2d", name, conv, ref_conv)
        return per

    old_tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        errors = _on_each_gpu(on)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old_tf32
    worst = max(((i, k, v) for i, per in errors.items() for k, v in per.items()), key=lambda t: t[2])
    return (
        f"{len(errors)} GPU(s) within tolerance (worst GPU {worst[0]} {worst[1]}: {worst[2]:.1e})",
        {"relative_errors": errors},
    )


def check_amp_step() -> tuple[str, dict[str, Any]]:
    def on(i: int) -> list[float]:
        dev = f"cuda:{i}"
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(256, 512), nn.GELU(), nn.Linear(512, 10)).to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        scaler = torch.amp.GradScaler("cuda")
        x, y = torch.randn(64, 256, device=dev), torch.randint(0, 10, (64,), device=dev)
        run = []
        for _ in range(3):
            with torch.autocast("cuda", dtype=torch.float16):
                loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            run.append(loss.item())
        if not all(torch.isfinite(torch.tensor(run))):
            raise AssertionError(f"GPU {i}: non-finite AMP loss: {run}")
        return run

    losses = _on_each_gpu(on)
    first = next(iter(losses.values()))
    return (
        f"fp16 autocast + GradScaler on {len(losses)} GPU(s), GPU 0 loss {first[0]:.3f} -> {first[-1]:.3f}",
        {"losses": losses},
    )


def check_conv2d() -> str:
    """PyTorch's own conv2d smoke shapes: CPU, then fp16/fp32/fp64 on CUDA and under autocast."""
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 33, (3, 5), stride=(2, 1), padding=(4, 2), dilation=(3, 1))
    x = torch.randn(20, 16, 50, 100)
    ref = conv(x)
    if ref.shape != (20, 33, 26, 100) or not torch.isfinite(ref).all():
        raise AssertionError(f"CPU conv2d gave shape {tuple(ref.shape)} or non-finite values")
    if not cuda_state.available():
        return "CPU (GPU part skipped: no GPU visible)"
    with torch.autocast("cuda"):
        out = nn.Conv2d(3, 3, 3).cuda()(torch.randn(1, 3, 24, 24, device="cuda"))
    if out.dtype != torch.float16:
        raise AssertionError(f"conv2d under autocast gave {out.dtype}, not float16")
    old_tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # on by default: fp32 convs would run in TF32
    try:
        for dtype, name in ((torch.float16, "fp16"), (torch.float32, "fp32"), (torch.float64, "fp32")):
            got = copy.deepcopy(conv).to("cuda", dtype)(x.to("cuda", dtype))
            _compare(f"conv2d {dtype}", name, got, ref)
    finally:
        torch.backends.cudnn.allow_tf32 = old_tf32
    return "CPU, CUDA fp16/fp32/fp64 against CPU, and autocast"


def _svd_ok(a: torch.Tensor, full: bool) -> None:
    u, s, vh = torch.linalg.svd(a, full_matrices=full)
    k = s.shape[-1]
    rebuilt = u[..., :k] @ torch.diag_embed(s) @ vh[..., :k, :]
    err = (rebuilt - a).abs().max().item()
    tol = 1e-3 if a.dtype == torch.float32 else 1e-9
    if not verdicts.within(err, tol * max(1.0, a.abs().max().item())):
        raise AssertionError(f"svd on {a.device} {a.dtype}: U S Vh differs from A by {err:.1e}")


def check_svd() -> str:
    """torch.linalg.svd (LAPACK on CPU, cuSOLVER on CUDA): the factors must rebuild A."""
    torch.manual_seed(0)
    for shape in ((5, 3), (7, 5, 3)):
        for full in (False, True):
            _svd_ok(torch.randn(*shape), full)
    if not cuda_state.available():
        return "CPU fp32 (GPU part skipped: no GPU visible)"
    for dtype in (torch.float32, torch.float64):
        _svd_ok(torch.randn(20, 16, 50, 100, device="cuda", dtype=dtype), False)
    return "CPU fp32, CUDA fp32 and fp64"


def check_numpy() -> str:
    import numpy as np

    x = np.arange(5)
    t = torch.tensor(x)
    if t.tolist() != x.tolist() or not np.array_equal(torch.from_numpy(x).numpy(), x):
        raise AssertionError("numpy -> torch -> numpy changed the values")
    return f"numpy {np.__version__} <-> torch"


def check_cudnn_nccl() -> tuple[str, dict[str, Any]]:
    """cuDNN's runtime version is compatible with its compile-time one, and the pip nvidia-cudnn-* and
    nvidia-nccl-* packages are the versions torch reports (a stray pip install shows here)."""
    cuda_state.need_cuda_build()
    runtime = torch.backends.cudnn.version() or 0
    compiled = tuple(torch._C._cudnn.getCompileVersion())
    runtime_t = (runtime // 10000, runtime // 100 % 100, runtime % 100)
    nccl = ".".join(map(str, tuple(torch.cuda.nccl.version())[:3]))
    cudnn = ".".join(map(str, runtime_t))
    # the runtime wheels only (nvidia-cudnn-cu12, nvidia-nccl-cu13): not nvidia-cudnn-frontend
    pip = {str(d.metadata["Name"]).lower(): d.version for d in importlib.metadata.distributions()}
    pip_cudnn = next((v for n, v in pip.items() if re.fullmatch(r"nvidia-cudnn-cu\d+", n)), None)
    pip_nccl = next((v for n, v in pip.items() if re.fullmatch(r"nvidia-nccl-cu\d+", n)), None)
    if pip_cudnn is None and pip_nccl is None and not expected():
        raise CannotCheckError("this torch's cuDNN and NCCL are not pip packages here (a host's torch)")
    status, cudnn_text = verdicts.cudnn(runtime_t, (compiled[0], compiled[1], compiled[2]))
    problems = [cudnn_text] if status == "fail" else []
    if pip_cudnn is None or pip_cudnn.split(".")[:3] != cudnn.split("."):
        problems.append(f"pip nvidia-cudnn {pip_cudnn} is not torch's cuDNN {cudnn}")
    if pip_nccl is None or pip_nccl.split(".")[:3] != nccl.split("."):
        problems.append(f"pip nvidia-nccl {pip_nccl} is not torch's NCCL {nccl}")
    if problems:
        raise AssertionError("; ".join(problems))
    data: dict[str, Any] = {"cudnn": cudnn, "compiled_cudnn": ".".join(map(str, compiled)), "nccl": nccl}
    data |= {"pip_cudnn": pip_cudnn, "pip_nccl": pip_nccl}
    return f"{cudnn_text}, = pip; NCCL {nccl} = pip", data


_ASSERT_SCRIPT = """
import torch
zero = torch.tensor(0, device="cuda")
torch.cuda.synchronize()
print("READY", flush=True)
try:
    torch._assert_async(zero)
    torch.cuda.synchronize()
except RuntimeError as exc:
    print("CAUGHT", " ".join(str(exc).split())[:300], flush=True)
"""


def check_device_assert() -> str:
    """A device-side assert surfaces as a CUDA RuntimeError (in a child process: it leaves the
    CUDA context unusable)."""
    cuda_state.need_gpu()
    out = subprocess.run(
        [sys.executable, "-u", "-c", _ASSERT_SCRIPT], capture_output=True, text=True, timeout=300, check=False
    )
    lines = out.stdout.splitlines()
    if "READY" not in lines:
        raise AssertionError(f"the child process could not use the GPU: {(out.stderr or out.stdout)[-300:]}")
    caught = next((line for line in lines if line.startswith("CAUGHT")), None)
    if caught is None or "device-side assert" not in caught:
        raise AssertionError(f"a device-side assert was not reported as one: {caught or out.stderr[-300:]}")
    return caught.removeprefix("CAUGHT ")[:200]


# cuFile's words for a host or file system without a GDS path (an overlay, no nvidia-fs with
# compatibility mode off): a skip that says so. Any other cuFile error is a broken install.
_NO_GDS_PATH = ("not supported", "unsupported", "nvidia-fs")


def check_gds() -> str:
    """GPUDirect Storage: 4 KiB written from GPU memory through cuFile and read back. (cuFile's
    library always loads with torch, which links it; whether it works is what counts.) A file
    system without a GDS path (an overlay, tmpfs) is a skip that says so, not a pass."""
    cuda_state.need_gpu()
    # cuFile logs to cufile.log in the working directory unless told otherwise
    os.environ.setdefault("CUFILE_LOGFILE_PATH", str(Path(tempfile.gettempdir()) / "torchimg-cufile.log"))
    with tempfile.NamedTemporaryFile() as f:
        try:
            gds = torch.cuda.gds.GdsFile(f.name, os.O_CREAT | os.O_RDWR)  # opens with O_DIRECT
        except OSError as exc:  # tmpfs (and some overlays) refuse O_DIRECT before cuFile is asked
            raise CannotCheckError(
                f"{tempfile.gettempdir()} cannot be opened with O_DIRECT ({exc})"
            ) from None
        except RuntimeError as exc:
            said = str(exc).lower()
            if "cufile" in said and any(w in said for w in _NO_GDS_PATH):
                raise CannotCheckError(
                    f"cuFile has no GDS path for {tempfile.gettempdir()} here ({str(exc)[:120]})"
                ) from None
            raise AssertionError(f"cuFile failed to register a file: {str(exc)[:300]}") from None
        written = torch.arange(1024, dtype=torch.int32, device="cuda")
        read = torch.zeros_like(written)
        torch.cuda.synchronize()  # cuFile's I/O is not ordered with the CUDA stream
        gds.save_storage(written.untyped_storage(), offset=0)
        gds.load_storage(read.untyped_storage(), offset=0)
        torch.cuda.synchronize()
        del gds  # deregisters the handle and closes the file
        if not torch.equal(written, read):
            raise AssertionError("4 KiB written through cuFile read back as other bytes")
    return "4 KiB GPU memory -> file -> GPU memory through cuFile (GDS, or its compatibility mode)"


def check_nvshmem() -> str:
    cuda_state.need_cuda_build()
    try:
        from torch._C._distributed_c10d import _is_nvshmem_available
    except ImportError:
        if gpus.version_tuple(torch.__version__)[:2] < (2, 9):
            raise CannotCheckError("torch < 2.9 is not built with NVSHMEM") from None
        if not expected():  # run by hand with a host's torch: its build, not an image's
            raise CannotCheckError("this torch is not built with NVSHMEM (not the image's)") from None
        raise AssertionError("torch >= 2.9 but not compiled with NVSHMEM") from None
    at_run_time = _is_nvshmem_available() if cuda_state.available() else "not checked (no GPU)"
    return f"compiled in; available at run time: {at_run_time}"


def _sin_cos(x: torch.Tensor) -> torch.Tensor:
    return torch.sin(x) + torch.cos(x)


def check_compile() -> str:
    device = _device()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 8)).to(device)
    x = torch.randn(32, 64, device=device)
    torch.testing.assert_close(torch.compile(model)(x), model(x), rtol=1e-3, atol=1e-3)
    if _OPTIONS["emulated"]:
        return f"torch.compile (inductor) MLP on {device} (fp16/fp64 compiles: natively only)"
    for dtype in (torch.float16, torch.float32, torch.float64):
        y = torch.rand(3, 3, device=device).to(dtype)
        torch.testing.assert_close(torch.compile(_sin_cos)(y), _sin_cos(y))
    return f"torch.compile (inductor) on {device}: an MLP, and sin+cos in fp16, fp32, fp64"


def check_cpu_isa() -> str:
    """Inductor found a vector ISA for this CPU (else its CPU kernels are scalar)."""
    try:
        from torch._inductor.cpu_vec_isa import pick_vec_isa
    except ImportError:
        from torch._inductor.codecache import pick_vec_isa
    isa = pick_vec_isa()
    if not isa:
        raise AssertionError("inductor detected no vector ISA for this CPU")
    return f"{type(isa).__name__}, {isa.bit_width()} bit"


class _Net(nn.Module):  # type: ignore[misc]
    """PyTorch's smoke-test CNN for the max-autotune compile."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 32, 3, 1), nn.Conv2d(32, 64, 3, 1)
        self.fc1 = nn.Linear(9216, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(self.conv2(self.conv1(x)), 2)
        return self.fc1(torch.flatten(x, 1))


def check_max_autotune() -> str:
    if _OPTIONS["emulated"]:
        raise CannotCheckError("emulated: max-autotune benchmarks kernels, meaningless (and slow) here")
    device = _device()
    torch._dynamo.reset()
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        torch.manual_seed(0)
        model = _Net().to(device)
        x = torch.rand(64, 1, 28, 28, device=device)
        got = torch.compile(model, mode="max-autotune")(x)
        torch.testing.assert_close(got, model(x), rtol=2e-2, atol=2e-2)
    finally:
        torch.set_float32_matmul_precision(old)
        torch._dynamo.reset()
    return f"small CNN compiled with mode='max-autotune' on {device}"


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
    return f"forward + backward bitwise identical twice on {device}{':0' if device == 'cuda' else ''}"


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
    where = "cuda:0" if device == "cuda" else device
    return f"2-layer transformer on {where}: loss {losses[0]:.3f} -> {losses[-1]:.3f}"


def check_attention() -> Outcome:
    return attention.check(_device())


def check_memory() -> tuple[str, dict[str, Any]]:
    def on(i: int) -> dict[str, float]:
        free, total = torch.cuda.mem_get_info(i)
        return {
            "allocated_mb": round(torch.cuda.memory_allocated(i) / 2**20, 1),
            "max_allocated_mb": round(torch.cuda.max_memory_allocated(i) / 2**20, 1),
            "free_gb": round(free / 1e9, 1),
            "total_gb": round(total / 1e9, 1),
        }

    per = _on_each_gpu(on)
    return "; ".join(f"GPU {i}: {d['free_gb']} of {d['total_gb']} GB free" for i, d in per.items()), {
        "devices": per
    }


CHECKS: tuple[tuple[str, Callable[[], Outcome]], ...] = (
    # first: in EXCLUSIVE_PROCESS compute mode its child process gets no GPU once this process
    # holds a context, and nothing before it opens one (CUDA's start and device queries do not)
    ("device-side assert surfaces", check_device_assert),
    ("versions match labels", check_versions),
    ("OpenMP", check_openmp),
    ("CUDA available", check_cuda_available),
    ("host driver new enough", readiness.check_driver),
    ("GPU architecture in the wheel", check_architectures),
    ("cuDNN and NCCL versions", check_cudnn_nccl),
    ("NVSHMEM compiled in", check_nvshmem),
    ("matmul/conv vs CPU (fp32, tf32, fp16, bf16)", check_numerics),
    ("conv2d (PyTorch smoke shapes)", check_conv2d),
    ("linalg.svd", check_svd),
    ("numpy interop", check_numpy),
    ("AMP training step", check_amp_step),
    ("torch.compile", check_compile),
    ("CPU vector ISA", check_cpu_isa),
    ("torch.compile max-autotune", check_max_autotune),
    ("determinism", check_determinism),
    ("transformer training step", check_transformer_step),
    ("attention backend", check_attention),
    ("GPUDirect Storage (cuFile)", check_gds),
    ("GPU memory", check_memory),
)


def run(require_gpu: bool, emulated: bool = False) -> Report:
    cuda_state.require(require_gpu or (not emulated and cuda_state.gpus_given()))
    _OPTIONS["emulated"] = emulated
    report = Report("smoke")
    report.info = cuda_state.info() | {"emulated": emulated}
    if cuda_state.required():
        report.run("GPU required", check_require_gpu)
    for name, fn in CHECKS:
        report.run(name, fn)
    return report
