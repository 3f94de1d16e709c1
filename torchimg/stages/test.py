"""`nox -s test`: run the in-image probe (smoke checks, matmul benchmark, and with `--doctor`
the node's readiness and multi-GPU checks) in the built image.

With `--gpus all` when the engine has the NVIDIA runtime (detected, not assumed), and then a
CUDA image must see its GPUs: CUDA failing to start is a failure, never a skip. Otherwise in
CPU mode, where the probe reports every GPU check as skipped with its reason. Results go into
the image's record and reports/<variant>-<flavor>/; a benchmark regression against the stored
baseline of the same GPU (full device name, MIG profile included) fails the stage.
"""

import argparse
import datetime
import json
import math
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torchimg import paths, probe_results
from torchimg.adapters import emulation, engine
from torchimg.errors import PipelineError, RefusedError
from torchimg.model import record, variants
from torchimg.output import log
from torchimg.settings import Settings
from torchimg.stages import Image, Selection, StageResult, built, each_image

HELP = "run the smoke checks and matmul benchmark (and --doctor) in the built images"
SELECTS = "images"  # variants x flavors
BY_DIGEST = True  # --image REPOSITORY@DIGEST, --staged
PROBE_TIMEOUT_S = 1800
PROBE_SHM = "2g"
_RESULTS_IN_CONTAINER = "/tmp"  # the image's user can write there; nothing of the host is mounted


@dataclass(frozen=True)
class Options:
    require_gpu: bool = False
    bench: bool = True
    threshold: float = 0.10
    update_baseline: bool = False
    doctor: bool = False
    native_only: bool = False  # the other platforms are tested where they run natively

    def __post_init__(self) -> None:
        if not _is_fraction(self.threshold):
            raise PipelineError(
                f"--threshold {self.threshold}: the regression gate needs a fraction between 0 and 1",
                "e.g. --threshold 0.10 (fail when a benchmark is more than 10 % below its baseline)",
            )


def _is_fraction(value: float) -> bool:
    """The regression gate's threshold: a finite number strictly between 0 and 1."""
    return math.isfinite(value) and 0 < value < 1


def _fraction(text: str) -> float:
    """argparse type for --threshold (see _is_fraction)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not _is_fraction(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction between 0 and 1 (e.g. 0.10)")
    return value


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--require-gpu",
        action="store_true",
        help="no GPU visible is a failure for CUDA variants (GPU runners)",
    )
    p.add_argument("--no-bench", action="store_true", help="smoke checks only")
    p.add_argument(
        "--threshold", type=_fraction, default=0.10, help="bench regression gate: a fraction in (0, 1)"
    )
    p.add_argument("--update-baseline", action="store_true", help="store this bench as the GPU's baseline")
    p.add_argument(
        "--doctor", action="store_true", help="also check the node: driver, shm, MIG, ECC, PCIe, NCCL"
    )
    p.add_argument(
        "--native-only",
        action="store_true",
        help="test only this machine's platform, no emulation (a runner of another architecture, e.g. "
        "an arm64 GPU runner beside the x64 job, tests the rest; push refuses a platform untested)",
    )


def options(args: argparse.Namespace, settings: Settings) -> Options:
    if args.no_bench and args.update_baseline:
        raise PipelineError(
            "--no-bench together with --update-baseline: there would be no bench to store",
            "drop one of them",
        )
    return Options(
        require_gpu=args.require_gpu,
        bench=not args.no_bench,
        threshold=args.threshold,
        update_baseline=args.update_baseline,
        doctor=args.doctor,
        native_only=args.native_only,
    )


def run(selection: Selection, opts: Options) -> StageResult:
    return each_image("test", selection, lambda image: test(selection, image, opts))


def run_probe(
    image: str, what: str, gpu: bool, env: dict[str, str], extra: list[str], platform: str | None = None
) -> dict[str, Any]:
    """Run `torchimg-probe WHAT` in the image and return its JSON result.

    The result is copied out of the stopped container as one regular file under a size cap (no
    host folder is shared with the container), from a path made up for this run (a file the
    image already holds can never stand in for it). The probe exits 0 when every check passed
    and 1 when one failed: any other exit, or an exit that disagrees with the JSON, fails the test.
    """
    result = f"{_RESULTS_IN_CONTAINER}/torchimg-{what}-{uuid.uuid4().hex}.json"
    args = ["timeout", str(PROBE_TIMEOUT_S), "torchimg-probe", what, "--json", result, *extra]
    mode = "GPU" if gpu else "CPU mode"
    log.info("   %s in %s (%s)", what, image[:19], f"{platform}, emulated, {mode}" if platform else mode)
    name = engine.new_container_name(f"torchimg-{what}")
    try:
        # 2 GiB of /dev/shm for NCCL and DataLoader workers; the probe is told, so that its
        # /dev/shm check does not report the pipeline's setting as the node's
        env = {**env, "TORCHIMG_SHM_SIZE": PROBE_SHM}
        exited = engine.run_kept(image, args, name, gpus=gpu, env=env, shm_size=PROBE_SHM, platform=platform)
        data = engine.copy_file_out(name, result) if exited.code in (0, 1) else None
    finally:
        engine.remove_container(name)
    if data is None:
        tail = "\n    ".join(exited.output.strip().splitlines()[-5:]) or "(no output)"
        timed_out = ", timed out" if exited.code == 124 else ""
        raise RefusedError(
            f"the {what} probe did not finish in {image[:19]} (exit {exited.code}{timed_out}):\n    {tail}",
            f"run it by hand: `inv shell --run 'torchimg-probe {what}'`",
        )
    try:
        parsed = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise RefusedError(f"the {what} probe wrote unreadable JSON in {image[:19]} ({exc})") from None
    if not isinstance(parsed, dict):
        raise RefusedError(f"the {what} probe wrote {type(parsed).__name__}, not a JSON object")
    if what in ("smoke", "doctor"):
        probe_results.check_checks(what, parsed, exited.code)
    return parsed


def doctor_env(env: dict[str, str]) -> dict[str, str]:
    """The doctor judges the driver itself: the container toolkit's own check of
    NVIDIA_REQUIRE_CUDA would refuse to start it on the very driver it should diagnose."""
    return {**env, "NVIDIA_DISABLE_REQUIRE": "1"}


def needs_gpu(image: Image, opts: Options, gpu_runtime: bool) -> bool:
    """Whether a GPU not seen fails the test: for CUDA variants only (a cpu variant on a GPU
    runner is tested in CPU mode), with --require-gpu, or whenever the engine gives the
    container the GPUs (then CUDA failing to start, e.g. error 802 or 804, is the finding)."""
    return image.variant.cuda_info is not None and (opts.require_gpu or gpu_runtime)


def emulated_platforms(
    what: str, built: list[str], here: str, native_only: bool
) -> tuple[list[str], list[str]]:
    """(the built platforms to test under emulation, a warning for each left out). The image
    must have this machine's platform: a test that runs nothing natively proves nothing of it."""
    if here not in built:
        raise PipelineError(
            f"{what} was built for {', '.join(built)}; this machine runs {here}, so none of its "
            "platforms would be tested natively",
            f"test it on a {' or '.join(built)} runner, or add {here} to the variant's platforms in "
            "variants.toml and build again",
        )
    foreign = [p for p in built if p != here]
    if native_only:
        return [], [f"{p}: not tested here (--native-only; push needs its test)" for p in foreign]
    return foreign, []


def test(selection: Selection, image: Image, opts: Options) -> record.Record:
    here = emulation.engine_platform()
    known = selection.store.read(image.variant.name, image.flavor)  # judged before any pull
    foreign, skipped = (
        emulated_platforms(str(image), known.build.platforms, here, opts.native_only) if known else ([], [])
    )
    rec = built(selection, image, every_platform=not opts.native_only)  # no record: refused here
    gpu = engine.gpu_runtime()
    required = needs_gpu(image, opts, gpu)
    if required and not gpu:
        raise PipelineError(
            "--require-gpu: the engine has no NVIDIA runtime, so containers cannot see a GPU",
            "install the NVIDIA Container Toolkit and `nvidia-ctk runtime configure --runtime=docker`",
        )
    env = {"TORCHIMG_EXPECT": json.dumps(probe_results.expected(rec.labels))}
    reports = selection.folder(image)
    strict = ["--require-gpu"] if required else []
    smoke = run_probe(rec.image_id, "smoke", gpu, env, strict)
    _save(reports / "smoke.json", smoke)
    problems = probe_results.failures(smoke, "smoke")
    result = record.Tested(
        ok=False,
        image_id=rec.image_id,
        gpu=gpu,
        required_gpu=required,
        smoke=_counts(smoke),
        platform=here,
    )
    result.warnings += skipped
    for note in skipped:
        log.info("   %s", note)
    for platform in foreign:
        emulation.require(platform)
        emulated = run_probe(rec.image_id, "smoke", False, env, ["--emulated"], platform=platform)
        _save(reports / f"smoke-{platform.replace('/', '-')}.json", emulated)
        problems += probe_results.failures(emulated, f"smoke on {platform}")
        result.emulated[platform] = _counts(emulated)
        result.warnings.append(
            f"bench on {platform}: skipped (emulated timings say nothing about the hardware)"
        )
        log.info("   %s", result.warnings[-1])
    for platform in [here, *foreign]:
        found, notes = _pip_check(rec.image_id, platform)
        problems += found
        result.warnings += notes
    if opts.doctor:
        doctor = run_probe(rec.image_id, "doctor", gpu, doctor_env(env), strict)
        _save(reports / "doctor.json", doctor)
        result.doctor = _counts(doctor)
        problems += probe_results.failures(doctor, "doctor")
    if opts.bench:  # last: a baseline is stored only from a run without problems
        bench = run_probe(rec.image_id, "bench", gpu, env, strict)
        _save(reports / "bench.json", bench)
        unusable = probe_results.unusable(bench)
        problems += unusable
        if not unusable:
            from torchimg import charts  # matplotlib is slow to import: only where a chart is drawn

            charts.bench_chart(bench, reports / "bench.png")
            result.bench = {
                "device": bench.get("device"),
                "unit": bench.get("unit"),
                "results": bench["results"],
            }
            problems += _against_baseline(bench, gpu, opts, problems)
    result.ok = not problems
    result.problems = problems
    result.finished = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    rec = selection.store.save_section(image.variant.name, image.flavor, "test", result)
    if problems:
        raise RefusedError(
            f"test of {image} failed:\n  " + "\n  ".join(problems),
            f"read {reports / 'smoke.json'}",
        )
    return rec


# Run in the image: pip's own check (broken requirements, wheels for another machine), and the
# WHEEL tags of each package pip calls unsupported, so that the host can tell why.
_PIP_CHECK = """
import importlib.metadata as m, importlib.util, json, re, subprocess, sys
def done(result):
    print("TORCHIMG-PIP-CHECK " + json.dumps(result))
    sys.exit(0)
if importlib.util.find_spec("pip") is None:
    done({"error": "pip is not installed in the image's Python (" + sys.executable + ")"})
r = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
tags = {}
for line in r.stdout.splitlines():
    found = re.fullmatch(UNSUPPORTED, line.strip())
    if found:
        try:
            wheel = m.distribution(found["name"]).read_text("WHEEL") or ""
        except m.PackageNotFoundError:
            wheel = ""
        tags[found["name"]] = [t.split(":", 1)[1].strip() for t in wheel.splitlines() if t.startswith("Tag:")]
done({"code": r.returncode, "stdout": r.stdout, "stderr": r.stderr[-2000:], "tags": tags})
""".replace("UNSUPPORTED", repr(probe_results.UNSUPPORTED.pattern))


def _pip_check(image_id: str, platform: str) -> tuple[list[str], list[str]]:
    """`pip check` in the image's `platform` (emulated where not native): (problems, warnings)."""
    name = engine.new_container_name("torchimg-pip-check")
    command = ["timeout", str(PROBE_TIMEOUT_S), "python", "-I", "-c", _PIP_CHECK]
    try:
        exited = engine.run_kept(
            image_id, command, name, gpus=False, env={}, shm_size="64m", platform=platform
        )
    finally:
        engine.remove_container(name)
    line = next((x for x in reversed(exited.output.splitlines()) if x.startswith("TORCHIMG-PIP-CHECK ")), "")
    try:
        result: object = (
            json.loads(line.split(" ", 1)[1]) if line else f"exit {exited.code}: {exited.output[-300:]}"
        )
    except (json.JSONDecodeError, RecursionError):
        result = line[-300:]
    problems, warnings = probe_results.pip_check(result, variants.PLATFORMS[platform])
    log.info("   pip check on %s: %s", platform, "; ".join(problems + warnings) or "no broken requirements")
    return problems, warnings


def _counts(smoke: dict[str, Any]) -> dict[str, int]:
    return {k: v for k, v in (smoke.get("counts") or {}).items() if isinstance(v, int)}


def _save(file: Path, data: dict[str, Any]) -> None:
    file.write_text(json.dumps(data, indent=2) + "\n")


def _against_baseline(bench: dict[str, Any], gpu: bool, opts: Options, problems: list[str]) -> list[str]:
    """The gate against this GPU's own baseline (benchmarks/gpu/<full device name>.json)."""
    device = bench.get("device")
    if not gpu or bench.get("baseline") is None:  # a cpu image, or CUDA did not start (smoke says why)
        if opts.update_baseline:  # asked for, and nothing can be stored: said, not passed over
            return ["--update-baseline: nothing stored, this run timed no GPU (a baseline is per GPU)"]
        return []
    base = probe_results.baseline_path(bench.get("baseline"))
    if opts.update_baseline and problems:
        return [
            "--update-baseline: not stored, this run has problems (a baseline must come from a healthy run)"
        ]
    if opts.update_baseline:
        base.parent.mkdir(parents=True, exist_ok=True)
        _save(base, bench)
        log.info("   stored the benchmark baseline for %s: %s", device, base.relative_to(paths.ROOT))
        return []
    if not base.exists():
        log.warning(
            "   no benchmark baseline for %s (%s): the regression gate had nothing to compare with; "
            "store one with --update-baseline",
            device,
            base.name,
        )
        return []
    try:
        baseline = json.loads(base.read_text())
        compared, slower = probe_results.compare(bench, baseline, opts.threshold)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        return [f"bench baseline {base.name} is unreadable ({exc}): fix or delete it, or --update-baseline"]
    if compared == 0:
        return [f"bench: no row of this run matches a row of {base.name}: nothing was compared"]
    log.info("   bench against %s: %d rows compared, %d regressed", base.name, compared, len(slower))
    return [f"bench regression: {r}" for r in slower]
