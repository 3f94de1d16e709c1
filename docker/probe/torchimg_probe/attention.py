"""Which scaled-dot-product-attention kernel runs for a typical bf16 causal attention.

torch picks flash, memory-efficient, cuDNN or the plain math kernel per call from the GPU,
the dtype and the shapes, and says nothing when it falls back: math is several times slower
and needs memory quadratic in the sequence. The dispatcher's own choice
(`torch._fused_sdp_choice`) is reported, and the chosen kernel's output checked against math.
"""

from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from torchimg_probe import verdicts
from torchimg_probe.results import ConcernError

# (batch, heads, sequence, head dim): a 7B-class model's layer at 2k tokens; smaller on CPU.
GPU_SHAPE = (4, 32, 2048, 128)
CPU_SHAPE = (2, 8, 256, 64)
TOLERANCE = 3e-2  # bf16 against the math kernel in fp32


def backend_names() -> dict[int, str]:
    return {int(member.value): name.lower() for name, member in SDPBackend.__members__.items()}


def check(device: str) -> tuple[str, dict[str, Any]]:
    shape = GPU_SHAPE if device == "cuda" else CPU_SHAPE
    torch.manual_seed(0)
    q, k, v = (torch.randn(*shape, device=device, dtype=torch.bfloat16) for _ in range(3))
    choice = int(torch._fused_sdp_choice(q, k, v, is_causal=True))
    backend = backend_names().get(choice, f"unknown ({choice})")
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    with sdpa_kernel([SDPBackend.MATH]):  # one batch element at a time: ~1 GB, fits a MIG slice
        ref = torch.cat(
            [
                torch.nn.functional.scaled_dot_product_attention(
                    q[i : i + 1].float(), k[i : i + 1].float(), v[i : i + 1].float(), is_causal=True
                )
                for i in range(shape[0])
            ]
        )
    err = (out.float() - ref).abs().max().item()
    rel = verdicts.relative_error(err, ref.abs().max().item())
    if not verdicts.within(rel, TOLERANCE):
        raise AssertionError(f"{backend} attention differs from math by {rel:.1e} (> {TOLERANCE})")
    capability = torch.cuda.get_device_capability() if device == "cuda" else None
    data = {"backend": backend, "shape": list(shape), "device": device, "relative_error": rel}
    detail = f"bf16 causal {'x'.join(map(str, shape))} on {device}: {backend} (matches math, {rel:.1e})"
    if verdicts.attention_fallback(backend, capability is not None and capability >= (8, 0)):
        raise ConcernError(
            detail + ": this GPU can run flash attention but falls back to the slow math kernel",
            data,
            "check head dim (<= 256, multiple of 8), dtype (fp16/bf16), contiguous inputs, and that "
            "torch.backends.cuda.flash_sdp_enabled() is not turned off",
        )
    return detail, data
