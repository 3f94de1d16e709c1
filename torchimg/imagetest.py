"""`nox -s test`: run the in-image probe (smoke checks, matmul benchmark) in the built image.

With `--gpus all` when the engine has the NVIDIA runtime (detected, not assumed); otherwise in
CPU mode, where the probe reports every GPU check as skipped with its reason. Results go into
the image's record and reports/<variant>-<flavor>/; a benchmark regression against a stored
baseline for the same GPU model fails the stage.
"""

import argparse
import datetime
import json
import math
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torchimg import charts, engine, paths, record
from torchimg.errors import PipelineError, RefusedError
from torchimg.variants import Variant

BASELINES = paths.ROOT / "benchmarks" / "baselines"
PROBE_TIMEOUT_S = 1800
_RESULTS_IN_CONTAINER = "/tmp"  # the image's user can write there; nothing of the host is mounted


@dataclass(frozen=True)
class TestOptions:
    require_gpu: bool = False
    bench: bool = True
    threshold: float = 0.10
    update_baseline: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.threshold) and 0 < self.threshold < 1):
            raise PipelineError(
                f"--threshold {self.threshold}: the regression gate needs a fraction between 0 and 1",
                "e.g. --threshold 0.10 (fail when a benchmark is more than 10 % below its baseline)",
            )


def threshold(text: str) -> float:
    """argparse type for --threshold: a finite number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value < 1):
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction between 0 and 1 (e.g. 0.10)")
    return value


def expected(labels: dict[str, str]) -> dict[str, str]:
    """What the probe checks the image against, from the image's own labels."""
    ns = "io.torchimg."
    keys = {
        "torch": "torch.version",
        "cuda": "cuda.version",
        "cudnn": "cudnn.version",
        "nccl": "nccl.version",
        "driver_min": "driver.min",
    }
    return {k: labels[ns + v] for k, v in keys.items() if ns + v in labels}


_STATUSES = {"pass", "fail", "skip"}


def run_probe(image: str, what: str, gpu: bool, env: dict[str, str], extra: list[str]) -> dict[str, Any]:
    """Run `torchimg-probe WHAT` in the image and return its JSON result.

    The result is copied out of the stopped container as one regular file under a size cap (no
    host folder is shared with the container), from a path made up for this run (a file the
    image already holds can never stand in for it). The probe exits 0 when every check passed
    and 1 when one failed: any other exit, or an exit that disagrees with the JSON, fails the test.
    """
    result = f"{_RESULTS_IN_CONTAINER}/torchimg-{what}-{uuid.uuid4().hex}.json"
    args = ["timeout", str(PROBE_TIMEOUT_S), "torchimg-probe", what, "--json", result, *extra]
    print(f"== test: {what} in {image[:19]} ({'GPU' if gpu else 'CPU mode'})", file=sys.stderr)
    name = engine.new_container_name(f"torchimg-{what}")
    try:
        exited = engine.run_kept(image, args, name, gpus=gpu, env=env, shm_size="2g")
        data = engine.copy_file_out(name, result) if exited.code in (0, 1) else None
    finally:
        engine.remove_container(name)
    if data is None:
        tail = "\n    ".join(exited.output.strip().splitlines()[-5:]) or "(no output)"
        raise RefusedError(
            f"the {what} probe did not finish in {image[:19]} (exit {exited.code}"
            + (", timed out" if exited.code == 124 else "")
            + f"):\n    {tail}",
            "run it by hand: `inv shell --run 'torchimg-probe " + what + "'`",
        )
    try:
        parsed = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise RefusedError(f"the {what} probe wrote unreadable JSON in {image[:19]} ({exc})") from None
    if not isinstance(parsed, dict):
        raise RefusedError(f"the {what} probe wrote {type(parsed).__name__}, not a JSON object")
    if what == "smoke":
        _check_smoke(parsed, exited.code)
    return parsed


def _check_smoke(smoke: dict[str, Any], code: int) -> None:
    """The smoke result must be well formed and agree with the probe's exit status."""
    checks = smoke.get("checks")
    if not isinstance(checks, list) or not checks or not all(isinstance(c, dict) for c in checks):
        raise RefusedError("the smoke probe reported no checks")
    unknown = sorted({str(c.get("status")) for c in checks} - _STATUSES)
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


def test(variant: Variant, flavor: str, opts: TestOptions) -> record.Record:
    rec = record.of_built_image(variant.name, flavor)
    gpu = engine.gpu_runtime()
    if opts.require_gpu and not gpu:
        raise PipelineError(
            "--require-gpu: the engine has no NVIDIA runtime, so containers cannot see a GPU",
            "install the NVIDIA Container Toolkit and `nvidia-ctk runtime configure --runtime=docker`",
        )
    env = {"TORCHIMG_EXPECT": json.dumps(expected(rec.labels))}
    reports = paths.reports_dir() / f"{variant.name}-{flavor}"
    reports.mkdir(parents=True, exist_ok=True)
    smoke = run_probe(rec.image_id, "smoke", gpu, env, ["--require-gpu"] if opts.require_gpu else [])
    _save(reports / "smoke.json", smoke)
    problems = [
        f"smoke: {c.get('name')}: {c.get('detail')}" for c in smoke["checks"] if c["status"] == "fail"
    ]
    counts = {k: v for k, v in (smoke.get("counts") or {}).items() if isinstance(v, int)}
    result = record.Tested(ok=False, image_id=rec.image_id, gpu=gpu, smoke=counts)
    if opts.bench:
        bench = run_probe(rec.image_id, "bench", gpu, env, [])
        _save(reports / "bench.json", bench)
        unusable_rows = unusable(bench)
        problems += unusable_rows
        if not unusable_rows:
            charts.bench_chart(bench, reports / "bench.png")
            result.bench = {
                "device": bench.get("device"),
                "unit": bench.get("unit"),
                "results": bench["results"],
            }
            problems += _against_baseline(bench, gpu, opts)
    result.ok = not problems
    result.problems = problems
    result.finished = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    rec = record.save_section(variant.name, flavor, "test", result)
    if problems:
        raise RefusedError(
            f"test of {variant.name} {flavor} failed:\n  " + "\n  ".join(problems),
            f"read reports/{variant.name}-{flavor}/smoke.json",
        )
    return rec


def _save(file: Path, data: dict[str, Any]) -> None:
    file.write_text(json.dumps(data, indent=2) + "\n")


def _against_baseline(bench: dict[str, Any], gpu: bool, opts: TestOptions) -> list[str]:
    key = bench.get("peak_key")
    if not (gpu and key):
        return []
    base = baseline_path(key)
    if opts.update_baseline:
        base.parent.mkdir(parents=True, exist_ok=True)
        _save(base, bench)
        return []
    if not base.exists():
        return []
    return [
        f"bench regression: {r}" for r in regressions(bench, json.loads(base.read_text()), opts.threshold)
    ]
