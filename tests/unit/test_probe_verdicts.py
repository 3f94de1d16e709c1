"""The probe's pure pass/fail rules (docker/probe, run inside the image), tested on the host:
a NaN never passes, a fallback never looks healthy, bandwidths follow nccl-tests."""

import math

import pytest
from torchimg_probe import verdicts


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_result_fails_every_tolerance(bad: float) -> None:
    rel = verdicts.relative_error(bad, 1.0)
    assert math.isnan(rel) and not verdicts.within(rel, 1e9)
    assert not verdicts.within(verdicts.relative_error(0.1, bad), 1e9)  # an Inf reference too
    assert not (rel > 1e-4)  # the comparison the old check made: NaN slipped through it


def test_relative_error_within_tolerance() -> None:
    assert verdicts.within(verdicts.relative_error(1e-5, 1.0), 1e-4)
    assert not verdicts.within(verdicts.relative_error(2e-4, 1.0), 1e-4)
    assert verdicts.relative_error(0.5, 0.0) == 0.5  # an all-zero reference: absolute error


@pytest.mark.parametrize(
    ("driver", "image", "compat", "status"),
    [
        ("12.8", "12.8", False, "pass"),
        ("13.0", "12.8", False, "pass"),
        ("12.2", "12.8", False, "warn"),  # R535: minor-version compatibility
        ("12.8", "12.8", True, "pass"),  # R535 kernel module + cuda-compat 12.8
        ("12.9", "13.2", False, "fail"),
        ("11.8", "12.6", False, "fail"),
    ],
)
def test_driver_compatibility_reads_the_user_mode_drivers_cuda(
    driver: str, image: str, compat: bool, status: str
) -> None:
    got, why = verdicts.driver_compatibility(driver, image, compat)
    assert got == status, why
    assert ("forward compatibility" in why) == compat


def test_driver_compatibility_refuses_a_version_it_cannot_read() -> None:
    with pytest.raises(ValueError, match="not a CUDA version"):
        verdicts.driver_compatibility("none", "12.8", False)


def _scratch(**given: object) -> tuple[str, str, str]:
    healthy: dict[str, object] = {
        "user": "pytorch",
        "needs_user": True,
        "compile_problem": "",
        "triton_problem": "",
        "triton_for_compile": False,
        "home": "/home/pytorch",
        "home_writable": True,
    }
    return verdicts.scratch(**(healthy | given))  # type: ignore[arg-type]


def test_scratch_fails_where_torch_compile_would_stop() -> None:
    assert _scratch()[0] == "pass"
    status, why, fix = _scratch(user=None)
    assert status == "fail" and "no user name" in why and "`args:`, not `command:`" in fix
    assert _scratch(user=None, needs_user=False)[0] == "pass"  # TORCHINDUCTOR_CACHE_DIR is set
    status, why, fix = _scratch(compile_problem="/tmp does not run programs (mounted noexec)")
    assert status == "fail" and "/tmp does not run programs" in why and "--tmpfs /tmp:exec" in fix


def test_scratch_warns_for_triton_and_a_home_that_cannot_be_written() -> None:
    status, why, fix = _scratch(triton_problem="/.triton/cache (to be made in /) is not writable")
    assert status == "warn" and "triton.jit" in why and "TRITON_CACHE_DIR" in fix
    status, why, fix = _scratch(home="/", home_writable=False)
    assert status == "warn" and "HOME (/) is not writable" in why and "set HOME" in fix
    assert "HOME (none)" in _scratch(home=None, home_writable=False)[1]


def test_shm_warns_below_one_gib_with_the_fix() -> None:
    status, why = verdicts.shm(64 * 2**20)  # Docker's default
    assert status == "warn" and "64 MiB" in why and "--shm-size" in why
    assert verdicts.shm(2**30)[0] == "pass"


def test_copy_bandwidth_against_the_link() -> None:
    assert verdicts.copy_bandwidth(52.0, 63.0)[0] == "pass"
    status, why = verdicts.copy_bandwidth(12.0, 63.0)  # a Gen5 x16 GPU copying at Gen3 speed
    assert status == "warn" and "19%" in why
    assert verdicts.copy_bandwidth(12.0, None)[0] == "pass"
    assert verdicts.copy_bandwidth(math.nan, 63.0)[0] == "fail"
    assert verdicts.copy_bandwidth(0.0, 63.0)[0] == "fail"


def test_bus_bandwidth_is_nccl_tests_definition() -> None:
    algbw, busbw = verdicts.bus_bandwidth(2**30, 0.01, 8)
    assert algbw == pytest.approx(107.374, rel=1e-3)
    assert busbw == pytest.approx(algbw * 2 * 7 / 8)
    assert verdicts.bus_bandwidth(10**9, 1.0, 2) == (1.0, 1.0)
    with pytest.raises(ValueError):
        verdicts.bus_bandwidth(10**9, 0.0, 8)


def test_attention_fallback_is_only_a_finding_where_flash_could_run() -> None:
    assert verdicts.attention_fallback("math", flash_capable=True)
    assert not verdicts.attention_fallback("flash_attention", flash_capable=True)
    assert not verdicts.attention_fallback("math", flash_capable=False)


def test_cudnn_newer_within_its_major_is_compatible_older_or_other_major_is_not() -> None:
    assert verdicts.cudnn((9, 10, 2), (9, 10, 2))[0] == "pass"
    status, why = verdicts.cudnn((9, 10, 2), (9, 8, 0))  # torch 2.9.1 cu128 from PyPI, as built
    assert status == "pass" and "compiled against 9.8.0" in why
    assert verdicts.cudnn((9, 1, 0), (9, 8, 0))[0] == "fail"
    assert verdicts.cudnn((8, 9, 7), (9, 8, 0))[0] == "fail"
    assert verdicts.cudnn((10, 0, 0), (9, 8, 0))[0] == "fail"
