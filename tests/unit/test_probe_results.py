"""The benchmark regression gate and what the probe is told to expect."""

from typing import Any

import pytest

from torchimg import probe_results
from torchimg.errors import PipelineError, RefusedError, ToolError
from torchimg.model import variants
from torchimg.stages import Image
from torchimg.stages import test as test_stage


def bench(best: float) -> dict[str, Any]:
    return {"results": [{"dtype": "bf16", "m": 8192, "n": 8192, "k": 8192, "best": best}]}


def test_a_drop_beyond_the_threshold_is_a_regression() -> None:
    assert probe_results.compare(bench(700.0), bench(800.0), 0.10)[1] == [
        "bf16 8192x8192x8192: 700.0 < 800.0 -10%"
    ]
    assert probe_results.compare(bench(725.0), bench(800.0), 0.10)[1] == []
    assert probe_results.compare(bench(900.0), bench(800.0), 0.10)[1] == []


def test_shapes_missing_from_the_baseline_are_not_judged_and_are_counted_as_such() -> None:
    other = {"results": [{"dtype": "fp8", "m": 1, "n": 1, "k": 1, "best": 1e9}]}
    assert probe_results.compare(bench(1.0), other, 0.10)[1] == []
    assert probe_results.compare(bench(1.0), other, 0.10) == (0, [])  # the stage fails on 0 compared
    assert probe_results.compare(bench(700.0), bench(800.0), 0.10)[0] == 1
    broken = {"results": [{"dtype": "bf16", "m": 8192, "n": 8192, "k": 8192, "best": None}]}
    assert probe_results.compare(bench(1.0), broken, 0.10) == (0, [])


def test_a_bench_that_could_not_start_says_why() -> None:
    failed = {"kind": "bench", "error": "--require-gpu: CUDA did not start: 802", "results": []}
    assert probe_results.unusable(failed) == ["bench: --require-gpu: CUDA did not start: 802"]


def test_expected_versions_come_from_labels() -> None:
    labels = {
        "io.torchimg.torch.version": "2.9.1",
        "io.torchimg.cuda.version": "12.8.90",
        "io.torchimg.driver.min": "570.26",
        "org.opencontainers.image.version": "x",
    }
    assert probe_results.expected(labels) == {"torch": "2.9.1", "cuda": "12.8.90", "driver_min": "570.26"}


def test_a_benchmark_without_finite_results_is_unusable() -> None:
    assert probe_results.unusable(bench(700.0)) == []
    for best in (float("nan"), float("inf"), 0.0, -1.0, None, "fast"):
        assert probe_results.unusable(bench(best)) != [], best  # type: ignore[arg-type]
    assert probe_results.unusable({"results": []}) == ["bench: the probe reported no results"]


def test_require_gpu_applies_to_cuda_variants_only(config: variants.Config) -> None:
    strict, plain = test_stage.Options(require_gpu=True), test_stage.Options()
    cuda, cpu = Image(config.variant("2.9.1-cu128"), "runtime"), Image(config.variant("2.9.1-cpu"), "runtime")
    assert test_stage.needs_gpu(cuda, strict, gpu_runtime=False)
    assert not test_stage.needs_gpu(cpu, strict, gpu_runtime=True)
    assert not test_stage.needs_gpu(cuda, plain, gpu_runtime=False)


def test_an_engine_with_the_nvidia_runtime_requires_the_gpu_of_a_cuda_image(config: variants.Config) -> None:
    """CUDA failing to start (802, 804) in a container given the GPUs is the finding, not a skip."""
    cuda, cpu = Image(config.variant("2.9.1-cu128"), "runtime"), Image(config.variant("2.9.1-cpu"), "runtime")
    assert test_stage.needs_gpu(cuda, test_stage.Options(), gpu_runtime=True)
    assert not test_stage.needs_gpu(cpu, test_stage.Options(), gpu_runtime=True)


def test_a_row_that_could_not_run_is_unusable_and_says_why() -> None:
    row = {"dtype": "fp8", "m": 1024, "n": 1024, "k": 1024, "best": None, "error": "OutOfMemoryError: x"}
    assert probe_results.unusable({"results": [row]}) == [
        "bench: fp8 1024x1024x1024: error: OutOfMemoryError: x"
    ]


def test_the_baseline_file_is_the_probes_name_checked() -> None:
    path = probe_results.baseline_path("NVIDIA-H100-80GB-HBM3-MIG-1g.10gb")
    assert path == probe_results.BASELINES / "NVIDIA-H100-80GB-HBM3-MIG-1g.10gb.json"
    for bad in ("../etc/passwd", "", ".hidden", "a/b", None, 3, "x" * 200):
        with pytest.raises(RefusedError, match="unusable baseline file"):
            probe_results.baseline_path(bad)


def test_smoke_and_doctor_results_must_agree_with_the_exit_status() -> None:
    ok = {"checks": [{"name": "a", "status": "pass"}, {"name": "b", "status": "warn"}]}
    probe_results.check_checks("doctor", ok, 0)
    with pytest.raises(RefusedError, match="exited 1"):
        probe_results.check_checks("doctor", ok, 1)
    failed = {"checks": [{"name": "a", "status": "fail"}]}
    probe_results.check_checks("smoke", failed, 1)
    with pytest.raises(RefusedError, match="exited 0"):
        probe_results.check_checks("smoke", failed, 0)
    with pytest.raises(RefusedError, match="passed no check"):
        probe_results.check_checks("smoke", {"checks": [{"name": "a", "status": "skip"}]}, 0)
    with pytest.raises(RefusedError, match="unknown check statuses: ok"):
        probe_results.check_checks("smoke", {"checks": [{"name": "a", "status": "ok"}]}, 0)


def test_pip_check_in_the_image_fails_closed_and_names_what_it_found() -> None:
    ok = {"code": 0, "stdout": "No broken requirements found.\n", "tags": {}}
    assert probe_results.pip_check(ok, "x86_64") == ([], [])
    missing = "jupyterlab 4.5.0 requires httpx, which is not installed."
    conflict = "pandas 2.3.0 has requirement numpy>=1.26, but you have numpy 1.20.0."
    broken = {"code": 1, "stdout": f"{missing}\n{conflict}\n", "tags": {}}
    assert probe_results.pip_check(broken, "x86_64") == (
        [f"pip check: {missing}", f"pip check: {conflict}"],
        [],
    )
    line = "nvidia-cusparselt-cu13 0.8.1 is not supported on this platform"

    def unsupported(*tags: str) -> dict[str, object]:
        return {"code": 1, "stdout": line + "\n", "tags": {"nvidia-cusparselt-cu13": list(tags)}}

    problems, warnings = probe_results.pip_check(unsupported("py3-none-manylinux2014_sbsa"), "aarch64")
    assert problems == [] and "NVIDIA's label for arm64 servers" in warnings[0]  # seen in 2.15.0-cu132 arm64
    assert probe_results.pip_check(unsupported("py3-none-manylinux2014_sbsa"), "x86_64")[0] == [
        f"pip check: {line}"
    ]
    for other in (
        "py3-none-manylinux2014_x86_64",  # a wheel for another machine
        "py3-none-manylinux2014_x86_64.manylinux2014_sbsa",  # compressed: x86_64 too
        "cp312-cp312-manylinux2014_sbsa",  # an extension for another Python
    ):
        assert probe_results.pip_check(unsupported(other), "aarch64")[0] == [f"pip check: {line}"], other
    assert probe_results.pip_check(unsupported("py3-none-a_sbsa", "py3-none-b_x86_64"), "aarch64")[0]
    assert probe_results.pip_check(unsupported(), "aarch64")[0] == [f"pip check: {line}"]
    no_pip = {"error": "pip is not installed in the image's Python (/opt/venv/bin/python)"}
    assert "could not run" in probe_results.pip_check(no_pip, "x86_64")[0][0]
    for bad in (
        {"code": 2, "stdout": "", "stderr": "ERROR: unknown command"},
        {"code": 1, "stdout": ""},
        {"code": 1, "stdout": "something pip never said\n"},
        "exit 124: (no output)",
        None,
        {},
    ):
        with pytest.raises(ToolError, match="pip check in the image") as exc:
            probe_results.pip_check(bad, "x86_64")
        assert exc.value.exit_code == 3, bad


def test_native_only_leaves_the_foreign_platforms_to_their_own_runner_and_says_so() -> None:
    both = ["linux/amd64", "linux/arm64"]
    assert test_stage.emulated_platforms("x", both, "linux/amd64", native_only=False) == (["linux/arm64"], [])
    foreign, notes = test_stage.emulated_platforms("x", both, "linux/arm64", native_only=True)
    assert foreign == []
    assert notes == ["linux/amd64: not tested here (--native-only; push needs its test)"]
    assert test_stage.emulated_platforms("x", ["linux/amd64"], "linux/amd64", native_only=True) == ([], [])


def test_an_image_without_this_machines_platform_is_refused_before_anything_runs() -> None:
    """Nothing of it would run natively: the GPU checks could never run, so the test says so."""
    with pytest.raises(PipelineError) as caught:
        test_stage.emulated_platforms("cu128 runtime", ["linux/amd64"], "linux/arm64", native_only=False)
    assert "built for linux/amd64; this machine runs linux/arm64" in caught.value.what
    assert "variants.toml" in caught.value.fix


def test_a_gpu_bench_whose_reference_loop_did_not_run_is_unusable() -> None:
    """Without the bare loop nothing shows that the probe's own timing is honest."""
    assert probe_results.unusable(bench(700.0) | {"reference": {"tflops": 710.0, "probe_pct": 98.6}}) == []
    failed = bench(700.0) | {"reference": {"error": "OutOfMemoryError: x"}}
    assert probe_results.unusable(failed) == ["bench: the reference loop did not run (OutOfMemoryError: x)"]


def test_the_summary_shows_the_best_matmul_of_the_rows_that_ran() -> None:
    """A row that could not run records best None (fp8 on a GPU without it): the summary the
    CI job writes on failure too must still show the others, not end in a TypeError."""
    from torchimg import summary

    bench = {"unit": "TFLOP/s", "device": "H100", "results": [{"best": None, "error": "x"}, {"best": 700.5}]}
    assert summary.best_matmul(bench) == "700.5 TFLOP/s (H100)"
    assert summary.best_matmul({"results": [{"best": None}]}) == "-"
    assert summary.best_matmul({"results": "junk"}) == "-"
    assert summary.best_matmul({}) == "-"


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (
            ["smoke", "--json", "/nonexistent/smoke.json"],
            "--json /nonexistent/smoke.json: no folder /nonexistent",
        ),
        (["bench", "--json", "/"], "--json /: is a folder"),
        (["smoke", "--json", "/etc/passwd/smoke.json"], "/etc/passwd is not a folder"),
        (["doctor"], "torch is not importable"),  # this host has no torch
    ],
)
def test_the_probe_refuses_what_it_could_not_finish_before_it_starts(argv: list[str], says: str) -> None:
    """A results file it could not write would be found only after minutes of checks."""
    import subprocess
    import sys
    from pathlib import Path

    probe = Path(__file__).parents[2] / "docker" / "probe"
    if (
        says.startswith("torch")
        and subprocess.run([sys.executable, "-c", "import torch"], check=False).returncode == 0
    ):
        pytest.skip("this Python has torch")
    done = subprocess.run(
        [sys.executable, "-m", "torchimg_probe", *argv],
        env={"PYTHONPATH": str(probe), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and "Traceback" not in done.stderr
