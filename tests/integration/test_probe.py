"""`nox -s test` on the real image, CPU path: every GPU check skipped with its reason."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from tests.integration.conftest import Pipeline, build_small, missing, remove_images
from torchimg import paths, probe_results
from torchimg.adapters import engine
from torchimg.errors import PipelineError, RefusedError
from torchimg.model import credentials, labels, lockfile, record, variants
from torchimg.stages import test

pytestmark = pytest.mark.integration


def test_cpu_mode_passes_and_records_results(
    pipeline: Pipeline, runtime_image: record.Record, default_variant: variants.Variant, reports: Path
) -> None:
    if engine.gpu_runtime():
        pytest.skip("this engine has the NVIDIA runtime: the CPU path is not what runs here")
    rec = test.test(*pipeline.at("runtime", default_variant), test.Options())
    assert rec.test is not None
    assert rec.test.ok is True and rec.test.gpu is False
    assert rec.test.image_id == runtime_image.image_id
    smoke = json.loads((reports / "2.9.1-cu128-runtime" / "smoke.json").read_text())
    status = {c["name"]: c for c in smoke["checks"]}
    passing = (
        "versions match labels",
        "OpenMP",
        "cuDNN and NCCL versions",  # CUDA libraries load without a GPU: checked in CPU mode too
        "NVSHMEM compiled in",
        "conv2d (PyTorch smoke shapes)",
        "linalg.svd",
        "numpy interop",
        "torch.compile",
        "CPU vector ISA",
        "torch.compile max-autotune",
        "determinism",
        "transformer training step",
        "attention backend",
    )
    for name in passing:
        assert status[name]["status"] == "pass", status[name]
    assert status["versions match labels"]["data"]["cuda"] == "12.8"
    assert status["attention backend"]["data"]["backend"] in (
        "flash_attention",
        "math",
        "efficient_attention",
    )
    gpu_only = (
        "CUDA available",
        "host driver new enough",
        "matmul/conv vs CPU (fp32, tf32, fp16, bf16)",
        "AMP training step",
        "device-side assert surfaces",
        "GPUDirect Storage (cuFile)",
        "GPU memory",
    )
    for name in gpu_only:
        assert status[name]["status"] == "skip"
        assert "no GPU visible (RuntimeError: Found no NVIDIA driver" in status[name]["detail"]
    assert set(status) == {*passing, *gpu_only, "GPU architecture in the wheel"}
    bench = json.loads((reports / "2.9.1-cu128-runtime" / "bench.json").read_text())
    assert bench["unit"] == "GFLOP/s" and bench["peak_key"] is None
    assert {r["dtype"] for r in bench["results"]} == {"fp32", "bf16"}
    assert all(r["best"] > 0 and r["peak_pct"] is None for r in bench["results"])
    assert (reports / "2.9.1-cu128-runtime" / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = pipeline.store.read("2.9.1-cu128", "runtime")
    assert saved is not None and saved.test is not None and saved.test.smoke["fail"] == 0


def test_a_failing_check_fails_the_probe(runtime_image: record.Record) -> None:
    env = {"TORCHIMG_EXPECT": json.dumps({"torch": "9.9.9"})}
    with pytest.raises(PipelineError, match="exit 1"):
        engine.run(runtime_image.image_id, ["torchimg-probe", "smoke"], env=env)


def test_require_gpu_in_the_image_names_cudas_own_error(runtime_image: record.Record) -> None:
    """A CUDA start-up failure (here: no driver) with the GPU required fails every GPU check
    with CUDA's words; it never turns into skips."""
    out = engine.run(runtime_image.image_id, ["sh", "-c", "torchimg-probe smoke --require-gpu; echo exit=$?"])
    assert out.rstrip().endswith("exit=1"), out[-2000:]
    cuda_error = "CUDA did not start: RuntimeError: Found no NVIDIA driver"
    assert f"[FAIL] GPU required: AssertionError: --require-gpu: {cuda_error}" in out
    assert "[FAIL] AMP training step: AssertionError: --require-gpu: CUDA did not start" in out
    assert "[skip] AMP training step" not in out


def test_a_bench_row_that_cannot_run_records_its_error_and_the_others_go_on(
    runtime_image: record.Record,
) -> None:
    script = (
        "import json, torch\n"
        "from torchimg_probe import bench\n"
        "real = bench._operands\n"
        "def flaky(m, n, k, dtype, device):\n"
        "    if dtype == 'bf16' and m == 512: raise torch.OutOfMemoryError('out of memory (injected)')\n"
        "    return real(m, n, k, dtype, device)\n"
        "bench._operands = flaky\n"
        "result = bench.run(quick=True)\n"
        "print('PROBLEMS', json.dumps(bench.problems(result)))\n"
        "print('RESULT', json.dumps(result['results']))\n"
    )
    out = engine.run(runtime_image.image_id, ["python", "-c", script], env={"PYTHONPATH": "/opt/torchimg"})
    rows = json.loads(out.split("RESULT ", 1)[1])
    # the probe's own exit status fails on it too (a bench run by hand, benchmarks/gpu/validate.sh)
    assert json.loads(out.split("PROBLEMS ", 1)[1].split("\n", 1)[0]) == [
        "bf16 512x512x512: OutOfMemoryError: out of memory (injected)"
    ]
    failed = [r for r in rows if r.get("error")]
    assert [(r["dtype"], r["m"]) for r in failed] == [("bf16", 512)]
    assert "out of memory (injected)" in failed[0]["error"] and failed[0]["best"] is None
    assert len(rows) == 6 and all(r["best"] > 0 for r in rows if r is not failed[0])
    assert probe_results.unusable({"results": rows}) == [
        "bench: bf16 512x512x512: error: OutOfMemoryError: out of memory (injected)"
    ]


def test_doctor_in_cpu_mode_runs_the_torchrun_path_with_gloo(
    pipeline: Pipeline, runtime_image: record.Record, default_variant: variants.Variant, reports: Path
) -> None:
    if engine.gpu_runtime():
        pytest.skip("this engine has the NVIDIA runtime: the CPU path is not what runs here")
    rec = test.test(*pipeline.at("runtime", default_variant), test.Options(bench=False, doctor=True))
    assert rec.test is not None and rec.test.ok and rec.test.doctor["fail"] == 0
    doctor = json.loads((reports / "2.9.1-cu128-runtime" / "doctor.json").read_text())
    status = {c["name"]: c for c in doctor["checks"]}
    reduce = status["all_reduce bandwidth (torchrun)"]
    assert reduce["status"] == "pass", reduce
    assert reduce["data"]["backend"] == "gloo" and reduce["data"]["ranks"] == 2
    assert [r["mb"] for r in reduce["data"]["results"]] == [8, 16, 32]
    assert all(r["busbw_gbs"] > 0 and r["busbw_gbs"] == r["algbw_gbs"] for r in reduce["data"]["results"])
    shm = status["/dev/shm size"]  # the pipeline set it (2 GiB): not the node's setting
    assert shm["status"] == "skip" and "set to 2g by the pipeline" in shm["detail"], shm
    scratch = status["user, home and compile scratch"]
    assert scratch["status"] == "pass" and scratch["data"]["user"] == "pytorch", scratch
    for name in (
        "MIG",
        "ECC and row remapping",
        "persistence and compute mode",
        "PCIe link and copy bandwidth",
        "P2P access",
    ):
        assert status[name]["status"] == "skip" and "no GPU visible" in status[name]["detail"]


def test_doctor_warns_about_dockers_default_shm_with_the_fix(runtime_image: record.Record) -> None:
    out = engine.run(runtime_image.image_id, ["sh", "-c", "torchimg-probe doctor; echo exit=$?"])
    assert "WARN /dev/shm size: /dev/shm is only 64 MiB" in out and "fix: docker run --shm-size=16g" in out
    assert out.rstrip().endswith("exit=0"), out[-1500:]  # a warning is not a failure


def test_inv_doctor_runs_in_an_image_by_reference_and_refuses_what_it_cannot_check(
    runtime_image: record.Record, base: str | None, tmp_path: Path
) -> None:
    if engine.gpu_runtime():
        pytest.skip("this engine has the NVIDIA runtime: the doctor would check real GPUs here")
    env = {**os.environ, "TORCHIMG_REPORTS": str(tmp_path)}

    def inv(*args: str) -> subprocess.CompletedProcess[str]:
        command = [str(Path(sys.executable).parent / "inv"), "doctor", *args]
        return subprocess.run(
            command, cwd=paths.ROOT, env=env, capture_output=True, text=True, timeout=900, check=False
        )

    done = inv("--image", runtime_image.tags[0])
    # every check ran (CPU mode) and none failed, but a node whose containers see no GPU is not ready
    assert done.returncode == 1, done.stdout[-1500:] + done.stderr[-1500:]
    assert "NOT healthy: this engine has no NVIDIA runtime" in done.stdout and "Traceback" not in done.stderr
    saved = json.loads(next(tmp_path.glob("doctor-*.json")).read_text())
    assert saved["kind"] == "doctor" and saved["counts"]["fail"] == 0 and saved["counts"]["pass"] >= 1
    foreign = base or variants.load().bases["debian-trixie"].image
    for args, message in (
        (("--image", foreign), "is not an image of this pipeline"),
        (("--flavor", "bogus"), "'bogus' is not a flavor"),
    ):
        done = inv(*args)
        assert done.returncode == 2, done.stderr[-1500:]
        assert message in done.stderr and "Traceback" not in done.stderr


def test_require_gpu_without_gpu_fails(
    pipeline: Pipeline, runtime_image: record.Record, default_variant: variants.Variant
) -> None:
    if engine.gpu_runtime():
        pytest.skip("this engine has the NVIDIA runtime")
    with pytest.raises(PipelineError, match="--require-gpu: the engine has no NVIDIA runtime"):
        test.test(*pipeline.at("runtime", default_variant), test.Options(require_gpu=True))


def test_each_torch_and_nvml_name_of_the_gpu_paths_exists_in_the_image(runtime_image: record.Record) -> None:
    """The GPU paths never run here: the names they spell are resolved in the image's own torch
    and nvidia-ml-py instead, so a rename upstream fails here, not on the first GPU."""
    script = (Path(__file__).parent / "probe_api_names.py").read_text()
    out = engine.run(runtime_image.image_id, ["python", "-c", script, "/opt/torchimg/torchimg_probe"])
    found = json.loads(out.strip().splitlines()[-1])
    assert found["missing"] == [], found
    assert found["checked"] > 100  # the readiness, bench, attention and smoke paths were read
    assert found["optional"] == [], found  # this torch has NVSHMEM's check, and pynvml is installed


def test_healthcheck_passes(runtime_image: record.Record) -> None:
    out = engine.run(
        runtime_image.image_id, ["/opt/venv/bin/python", "-I", "/usr/local/bin/torchimg-healthcheck"]
    )
    assert out == ""


def test_pip_in_the_image_cannot_replace_torch(runtime_image: record.Record) -> None:
    """PIP_CONSTRAINT names the image's own torch: another torch is refused, naming it."""
    constraints = engine.run(runtime_image.image_id, ["cat", "/etc/torchimg/constraints.txt"])
    torch_pin = next(line for line in constraints.splitlines() if line.startswith("torch"))
    assert torch_pin == f"torch==={runtime_image.labels[labels.TORCH]}"  # not 2.9.1+cpu either
    pinned = {canonicalize_name(line.split("===")[0]) for line in constraints.splitlines() if "===" in line}
    lock = next(p for p in runtime_image.inputs.lockfiles if p.endswith("/runtime.txt"))
    stack = ("nvidia-", "cuda-", "triton", "torch")
    locked = {n for n in lockfile.pins((paths.ROOT / lock).read_text()) if n.startswith(stack)}
    assert "torch" in locked and locked <= pinned, locked - pinned
    # the CA store pip and torch.hub verify HTTPS against exists (without it pip crashed)
    check = "import ssl; assert ssl.create_default_context().cert_store_stats()['x509_ca'] > 100"
    engine.run(runtime_image.image_id, ["python", "-c", check])
    ca = credentials.resolve(None, None).ca_bundle  # a TLS-inspecting proxy's CA, as for builds
    out = engine.run(
        runtime_image.image_id,
        ["sh", "-c", "pip install --dry-run --no-deps torch==2.9.0 2>&1; echo exit=$?"],
        volumes=[(str(ca), "/tmp/ca.pem", "ro")] if ca else [],
        env={"PIP_CERT": "/tmp/ca.pem"} if ca else {},
    )
    if "Max retries exceeded" in out or "Could not fetch URL" in out:
        missing(f"PyPI is not reachable from a container here: {out[-300:]}")  # CI reaches it
    assert out.rstrip().endswith("exit=1"), out
    assert f"The user requested (constraint) {torch_pin}" in out, out


def _fake_probe(base: str | None, tmp_path: Path, script: str, name: str) -> str:
    """A small image whose `torchimg-probe` is `script`: what a hostile image could do."""
    base_ref = base or variants.load().bases["debian-trixie"].image
    (tmp_path / "torchimg-probe").write_text(f"#!/bin/sh\n{script}\n")
    (tmp_path / "torchimg-probe").chmod(0o755)
    tag = build_small(
        tmp_path,
        f"FROM {base_ref}\nCOPY torchimg-probe /usr/local/bin/torchimg-probe\n",
        f"torchimg-test/{name}:1",
    )
    image_id = engine.image_id(tag)
    assert image_id is not None
    return image_id


PASSING = '{"checks": [{"name": "x", "status": "pass", "detail": ""}], "counts": {"pass": 1}}'


@pytest.mark.parametrize(
    ("script", "refusal"),
    [
        ('ln -s /etc/passwd "$3"', "is a symlink"),
        ('head -c 17000000 /dev/zero > "$3"', "over the 16777216 byte cap"),
        ('mkfifo "$3"', "not a regular file"),
        ('echo not json > "$3"', "unreadable JSON"),
        ("exit 1", "did not finish"),
        (f"echo '{PASSING}' > \"$3\"; exit 3", "exit 3"),  # a passing result, then a crash
        (f"echo '{PASSING}' > \"$3\"; exit 1", "disagrees with its results"),
        ('echo \'{"checks": [{"name": "x", "status": "skip"}]}\' > "$3"', "everything skipped"),
        ('echo \'{"checks": [{"name": "x", "status": "ok"}]}\' > "$3"', "unknown check statuses"),
    ],
)
def test_probe_results_are_read_as_small_regular_files_only(
    base: str | None, tmp_path: Path, script: str, refusal: str
) -> None:
    image_id = _fake_probe(base, tmp_path, script, "hostile-probe")
    try:
        with pytest.raises(RefusedError, match=refusal):
            test.run_probe(image_id, "smoke", False, {}, [])
        left = engine.containers_of(image_id)
        assert left == [], "the probe container was not removed"
    finally:
        remove_images("torchimg-test/hostile-probe:1")
