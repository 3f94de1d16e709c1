"""The benchmark chart: throughput against matrix size per dtype, with the GPU's peaks."""

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def bench_chart(bench: dict[str, Any], out: Path) -> Path:
    """Write a PNG of best throughput per dtype for the square sizes; dashed: dense peaks."""
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    squares = [r for r in bench["results"] if r["m"] == r["n"] == r["k"]]
    for dtype in dict.fromkeys(r["dtype"] for r in squares):
        rows = [r for r in squares if r["dtype"] == dtype]
        line = ax.plot([r["m"] for r in rows], [r["best"] for r in rows], marker="o", label=dtype)[0]
        if peak := bench.get("peaks", {}).get(dtype):
            ax.axhline(peak, linestyle="--", linewidth=0.8, color=line.get_color())
    ax.set_xscale("log", base=2)
    sizes = sorted({r["m"] for r in squares})
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.set_xlabel("square matrix size n (n x n x n)")
    ax.set_ylabel(f"best {bench['unit']}")
    peak_note = f", dashed: dense peak of {bench['peak_key']}" if bench.get("peak_key") else ""
    ax.set_title(f"matmul on {bench['device']} (torch {bench['torch']}){peak_note}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
