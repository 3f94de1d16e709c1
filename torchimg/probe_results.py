"""What the in-image probe reported, judged: pure functions over its JSON, so that each rule
is tested without an image (what to expect from the labels, a well-formed smoke result that
agrees with the probe's exit status, usable benchmark rows, regressions against a baseline,
what `pip check` found in the image)."""

import math
import re
from pathlib import Path
from typing import Any

from torchimg import paths
from torchimg.errors import RefusedError, ToolError
from torchimg.model import labels

BASELINES = paths.ROOT / "benchmarks" / "gpu"  # one bench JSON per GPU (validate.sh writes them too)
BASELINE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,120}")
STATUSES = {"pass", "warn", "fail", "skip"}


def expected(image_labels: dict[str, str]) -> dict[str, str]:
    """What the probe checks the image against, from the image's own labels."""
    return {name: image_labels[key] for name, key in labels.PROBED.items() if key in image_labels}


def check_checks(what: str, result: dict[str, Any], code: int) -> None:
    """A smoke or doctor result must be well formed and agree with the probe's exit status
    (a warning does not fail; a run where nothing passed is not a pass)."""
    checks = result.get("checks")
    if not isinstance(checks, list) or not checks or not all(isinstance(c, dict) for c in checks):
        raise RefusedError(f"the {what} probe reported no checks")
    unknown = sorted({str(c.get("status")) for c in checks} - STATUSES)
    if unknown:
        raise RefusedError(f"the {what} probe reported unknown check statuses: {', '.join(unknown)}")
    failed = any(c["status"] == "fail" for c in checks)
    if not failed and not any(c["status"] in ("pass", "warn") for c in checks):
        raise RefusedError(f"the {what} probe passed no check at all (everything skipped)")
    if failed != (code == 1):
        raise RefusedError(
            f"the {what} probe exited {code}, which disagrees with its results (failed: {failed})"
        )


def failures(result: dict[str, Any], prefix: str = "") -> list[str]:
    """'PREFIX: check: detail' for each failed check of a smoke or doctor result (checked
    well formed by check_checks)."""
    lead = f"{prefix}: " if prefix else ""
    return [
        f"{lead}{c.get('name')}: {c.get('detail')}" for c in result["checks"] if c.get("status") == "fail"
    ]


def baseline_path(name: object) -> Path:
    """The baseline file the probe named for its GPU (its full device name, MIG profile
    included: the probe's gpus.baseline_name). Read from the image's output, so checked."""
    if not isinstance(name, str) or not BASELINE_NAME.fullmatch(name):
        raise RefusedError(f"the bench probe named an unusable baseline file: {name!r}")
    return BASELINES / f"{name}.json"


def unusable(bench: dict[str, Any]) -> list[str]:
    """Benchmark rows without a finite, positive throughput (NaN passes every comparison)."""
    rows = bench.get("results")
    if bench.get("error"):
        return [f"bench: {bench['error']}"]
    if not isinstance(rows, list) or not rows:
        return ["bench: the probe reported no results"]
    found = [
        f"bench: {r.get('dtype')} {r.get('m')}x{r.get('n')}x{r.get('k')}: "
        + (f"error: {r['error']}" if r.get("error") else f"no usable result ({r.get('best')!r})")
        for r in rows
        if not isinstance(r.get("best"), int | float) or not math.isfinite(r["best"]) or r["best"] <= 0
    ]
    reference = bench.get("reference")  # GPU runs only: the bare loop the probe's timing is checked by
    if reference is not None and not isinstance((reference or {}).get("tflops"), int | float):
        found.append(f"bench: the reference loop did not run ({(reference or {}).get('error', reference)})")
    return found


def compare(bench: dict[str, Any], baseline: dict[str, Any], threshold: float) -> tuple[int, list[str]]:
    """(rows compared, rows whose best throughput fell more than `threshold` below the baseline)."""
    old = {
        (r["dtype"], r["m"], r["n"], r["k"]): r["best"]
        for r in baseline["results"]
        if isinstance(r.get("best"), int | float) and r["best"] > 0
    }
    compared, out = 0, []
    for r in bench["results"]:
        before = old.get((r["dtype"], r["m"], r["n"], r["k"]))
        if before is None or not isinstance(r.get("best"), int | float):
            continue
        compared += 1
        if r["best"] < before * (1 - threshold):
            out.append(f"{r['dtype']} {r['m']}x{r['n']}x{r['k']}: {r['best']} < {before} -{threshold:.0%}")
    return compared, out


# what `pip check` says of a wheel for another machine (the in-image snippet matches it too)
UNSUPPORTED = re.compile(r"(?P<name>\S+) (?P<version>\S+) is not supported on this platform")
_PIP_FINDINGS = (  # the three things `pip check` reports (pip 23 to 26)
    UNSUPPORTED,
    re.compile(r"\S+ \S+ requires \S+, which is not installed\."),
    re.compile(r"\S+ \S+ has requirement .+, but you have \S+ \S+\."),
)


def _sbsa_only(tags: object) -> bool:
    """Whether a WHEEL file's tags are all `py3-none-*_sbsa`: NVIDIA's pure-Python label for
    arm64 servers, which pip does not know (compressed tags expanded)."""
    if not isinstance(tags, list) or not tags:
        return False
    for tag in tags:
        parts = str(tag).split("-")
        if len(parts) != 3:
            return False
        interpreters, abis, platforms = (set(part.split(".")) for part in parts)
        if interpreters != {"py3"} or abis != {"none"} or not all(p.endswith("_sbsa") for p in platforms):
            return False
    return True


def pip_check(result: object, machine: str) -> tuple[list[str], list[str]]:
    """(problems, warnings) of `pip check` in the image, from what the in-image snippet printed:
    {"code": pip's exit, "stdout", "stderr", "tags": {package: its WHEEL file's tags}} for each
    package pip calls "not supported on this platform", or {"error": why it could not run}.
    A broken requirement or a wheel for another machine is a problem; on aarch64 a wheel whose
    WHEEL file names only `py3-none-*_sbsa` (NVIDIA's label for arm64 servers, inside a file
    published as manylinux2014_aarch64) is a warning. A check that could not run, or output
    this does not know, is a ToolError: never a pass."""
    if isinstance(result, dict) and isinstance(result.get("error"), str):
        return [f"pip check could not run in the image: {result['error']}"], []
    if not isinstance(result, dict) or not isinstance(result.get("code"), int):
        raise ToolError(
            f"pip check in the image printed no result: {str(result)[-300:]}", "run the test again"
        )
    code, tags = result["code"], result.get("tags") or {}
    lines = [line.strip() for line in str(result.get("stdout", "")).splitlines() if line.strip()]
    if code == 0:
        return [], []
    unknown = [line for line in lines if not any(f.fullmatch(line) for f in _PIP_FINDINGS)]
    if code != 1 or not lines or unknown:
        said = " | ".join((unknown or lines or str(result.get("stderr", "")).splitlines())[-3:])
        raise ToolError(
            f"pip check in the image ended with exit {code}: {said or 'no output'}", "run the test again"
        )
    problems, warnings = [], []
    for line in lines:
        found = UNSUPPORTED.fullmatch(line)
        if found and machine == "aarch64" and isinstance(tags, dict) and _sbsa_only(tags.get(found["name"])):
            named = ", ".join(map(str, tags[found["name"]]))
            warnings.append(
                f"pip check: {line}: its WHEEL file names {named} (NVIDIA's label for arm64 "
                "servers) though the wheel is published as aarch64; the lock chose it for aarch64"
            )
        else:
            problems.append(f"pip check: {line}")
    return problems, warnings
