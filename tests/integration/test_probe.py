"""`nox -s test` on the real image, CPU path: every GPU check skipped with its reason."""

import json
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from tests.integration.conftest import Pipeline, build_small, remove_images
from torchimg import paths
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
    for name in ("versions match labels", "torch.compile", "determinism", "transformer training step"):
        assert status[name]["status"] == "pass", status[name]
    assert status["versions match labels"]["data"]["cuda"] == "12.8"
    for name in ("CUDA available", "matmul/conv vs CPU (fp32, tf32, fp16, bf16)", "AMP training step"):
        assert status[name]["status"] == "skip"
        assert "no GPU visible" in status[name]["detail"]
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


def test_require_gpu_without_gpu_fails(
    pipeline: Pipeline, runtime_image: record.Record, default_variant: variants.Variant
) -> None:
    if engine.gpu_runtime():
        pytest.skip("this engine has the NVIDIA runtime")
    with pytest.raises(PipelineError, match="--require-gpu: the engine has no NVIDIA runtime"):
        test.test(*pipeline.at("runtime", default_variant), test.Options(require_gpu=True))


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
        pytest.skip(f"PyPI is not reachable from a container here: {out[-300:]}")
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
