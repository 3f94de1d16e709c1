"""`nox -s test`: run the in-image probe (smoke checks, matmul benchmark) in the built image.

With `--gpus all` when the engine has the NVIDIA runtime (detected, not assumed); otherwise in
CPU mode, where the probe reports every GPU check as skipped with its reason. Results go into
the image's record and reports/<variant>-<flavor>/; a benchmark regression against a stored
baseline for the same GPU model fails the stage.
"""

import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from python_on_whales import docker

from torchimg import charts, paths, record
from torchimg.errors import PipelineError
from torchimg.variants import Variant

BASELINES = paths.ROOT / "benchmarks" / "baselines"
PROBE_TIMEOUT_S = 1800


@dataclass(frozen=True)
class TestOptions:
    require_gpu: bool = False
    bench: bool = True
    threshold: float = 0.10
    update_baseline: bool = False


def gpu_runtime() -> bool:
    """Whether containers can get GPUs here: the engine knows the NVIDIA runtime."""
    return "nvidia" in (docker.system.info().runtimes or {})


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


def _probe(image: str, what: str, out: Path, gpu: bool, env: dict[str, str], extra: list[str]) -> None:
    args = ["timeout", str(PROBE_TIMEOUT_S), "torchimg-probe", what, "--json", f"/out/{what}.json", *extra]
    print(f"== test: {what} in {image[:19]} ({'GPU' if gpu else 'CPU mode'})", file=sys.stderr)
    try:
        for _, chunk in docker.run(
            image,
            args,
            remove=True,
            stream=True,
            gpus="all" if gpu else None,
            volumes=[(str(out), "/out", "rw")],
            envs=env,
            shm_size="2g",
        ):
            print(chunk.decode(errors="replace"), end="", file=sys.stderr, flush=True)
    except Exception as exc:  # the probe exits 1 on a failed check: the JSON says which
        if not (out / f"{what}.json").exists():
            raise PipelineError(f"the {what} probe did not finish in {image}: {exc}") from None


def baseline_path(peak_key: str) -> Path:
    return BASELINES / f"{peak_key.replace(' ', '-')}.json"


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
    gpu = gpu_runtime()
    if opts.require_gpu and not gpu:
        raise PipelineError(
            "--require-gpu: the engine has no NVIDIA runtime, so containers cannot see a GPU",
            "install the NVIDIA Container Toolkit and `nvidia-ctk runtime configure --runtime=docker`",
        )
    env = {"TORCHIMG_EXPECT": json.dumps(expected(rec["labels"]))}
    reports = paths.reports_dir() / f"{variant.name}-{flavor}"
    reports.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="torchimg-test-") as tmp:
        out = Path(tmp)
        out.chmod(0o777)
        _probe(rec["image_id"], "smoke", out, gpu, env, ["--require-gpu"] if opts.require_gpu else [])
        if opts.bench:
            _probe(rec["image_id"], "bench", out, gpu, env, [])
        for f in out.glob("*.json"):
            shutil.copy(f, reports / f.name)
    smoke = json.loads((reports / "smoke.json").read_text())
    problems = [f"smoke: {c['name']}: {c['detail']}" for c in smoke["checks"] if c["status"] == "fail"]
    result: dict[str, Any] = {"image_id": rec["image_id"], "gpu": gpu, "smoke": smoke["counts"]}
    if opts.bench:
        bench = json.loads((reports / "bench.json").read_text())
        charts.bench_chart(bench, reports / "bench.png")
        result["bench"] = {"device": bench["device"], "unit": bench["unit"], "results": bench["results"]}
        key = bench.get("peak_key")
        if gpu and key:
            base = baseline_path(key)
            if opts.update_baseline:
                base.parent.mkdir(parents=True, exist_ok=True)
                base.write_text(json.dumps(bench, indent=2) + "\n")
            elif base.exists():
                problems += [
                    f"bench regression: {r}"
                    for r in regressions(bench, json.loads(base.read_text()), opts.threshold)
                ]
    result["ok"] = not problems
    result["problems"] = problems
    rec["test"] = result
    record.write(rec)
    if problems:
        raise PipelineError(f"test of {variant.name} {flavor} failed:\n  " + "\n  ".join(problems))
    return rec
