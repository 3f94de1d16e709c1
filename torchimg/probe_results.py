"""What the in-image probe reported, judged: pure functions over its JSON, so that each rule
is tested without an image (what to expect from the labels, a well-formed smoke result that
agrees with the probe's exit status, usable benchmark rows, regressions against a baseline)."""

import math
from pathlib import Path
from typing import Any

from torchimg import paths
from torchimg.errors import RefusedError
from torchimg.model import labels

BASELINES = paths.ROOT / "benchmarks" / "baselines"
STATUSES = {"pass", "fail", "skip"}


def expected(image_labels: dict[str, str]) -> dict[str, str]:
    """What the probe checks the image against, from the image's own labels."""
    return {name: image_labels[key] for name, key in labels.PROBED.items() if key in image_labels}


def check_smoke(smoke: dict[str, Any], code: int) -> None:
    """The smoke result must be well formed and agree with the probe's exit status."""
    checks = smoke.get("checks")
    if not isinstance(checks, list) or not checks or not all(isinstance(c, dict) for c in checks):
        raise RefusedError("the smoke probe reported no checks")
    unknown = sorted({str(c.get("status")) for c in checks} - STATUSES)
    if unknown:
        raise RefusedError(f"the smoke probe reported unknown check statuses: {', '.join(unknown)}")
    failed = any(c["status"] == "fail" for c in checks)
    if not any(c["status"] == "pass" for c in checks):
        raise RefusedError("the smoke probe passed no check at all (everything skipped)")
    if failed != (code == 1):
        raise RefusedError(
            f"the smoke probe exited {code}, which disagrees with its results (failed: {failed})"
        )


def baseline_path(peak_key: str) -> Path:
    return BASELINES / f"{peak_key.replace(' ', '-')}.json"


def unusable(bench: dict[str, Any]) -> list[str]:
    """Benchmark rows without a finite, positive throughput (NaN passes every comparison)."""
    rows = bench.get("results")
    if not isinstance(rows, list) or not rows:
        return ["bench: the probe reported no results"]
    return [
        f"bench: {r.get('dtype')} {r.get('m')}x{r.get('n')}x{r.get('k')}: "
        f"no usable result ({r.get('best')!r})"
        for r in rows
        if not isinstance(r.get("best"), int | float) or not math.isfinite(r["best"]) or r["best"] <= 0
    ]


def regressions(bench: dict[str, Any], baseline: dict[str, Any], threshold: float) -> list[str]:
    """Shapes/dtypes whose best throughput fell more than `threshold` below the baseline."""
    old = {(r["dtype"], r["m"], r["n"], r["k"]): r["best"] for r in baseline["results"]}
    out = []
    for r in bench["results"]:
        before = old.get((r["dtype"], r["m"], r["n"], r["k"]))
        if before and r["best"] < before * (1 - threshold):
            out.append(f"{r['dtype']} {r['m']}x{r['n']}x{r['k']}: {r['best']} < {before} -{threshold:.0%}")
    return out
