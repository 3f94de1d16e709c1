"""The benchmark regression gate and what the probe is told to expect."""

from typing import Any

from torchimg import probe_results
from torchimg.model import variants
from torchimg.stages import Image
from torchimg.stages import test as test_stage


def bench(best: float) -> dict[str, Any]:
    return {"results": [{"dtype": "bf16", "m": 8192, "n": 8192, "k": 8192, "best": best}]}


def test_a_drop_beyond_the_threshold_is_a_regression() -> None:
    assert probe_results.regressions(bench(700.0), bench(800.0), 0.10) == [
        "bf16 8192x8192x8192: 700.0 < 800.0 -10%"
    ]
    assert probe_results.regressions(bench(725.0), bench(800.0), 0.10) == []
    assert probe_results.regressions(bench(900.0), bench(800.0), 0.10) == []


def test_shapes_missing_from_the_baseline_are_not_judged() -> None:
    other = {"results": [{"dtype": "fp8", "m": 1, "n": 1, "k": 1, "best": 1e9}]}
    assert probe_results.regressions(bench(1.0), other, 0.10) == []


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
    strict = test_stage.Options(require_gpu=True)
    assert test_stage.needs_gpu(Image(config.variant("2.9.1-cu128"), "runtime"), strict)
    assert not test_stage.needs_gpu(Image(config.variant("2.9.1-cpu"), "runtime"), strict)
    assert not test_stage.needs_gpu(Image(config.variant("2.9.1-cu128"), "runtime"), test_stage.Options())
