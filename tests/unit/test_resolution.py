"""A lockfile serves another machine only when it is exactly what pip resolves there; pip's
report is re-walked with that machine's markers (pip itself evaluates them for the build host)."""

from typing import Any

from torchimg.model import resolution

SHA = {
    n: f"{i:064x}" for i, n in enumerate(("torch", "numpy", "nvidia-x", "triton", "cuda-toolkit", "cublas"))
}
ENV = {
    "platform_machine": "x86_64",
    "platform_system": "Linux",
    "python_version": "3.13",
    "sys_platform": "linux",
}


def item(
    name: str, version: str, requires: list[str], requested: bool = False, machine: str = "aarch64"
) -> dict[str, Any]:
    return {
        "requested": requested,
        "metadata": {"name": name, "version": version, "requires_dist": requires},
        "download_info": {
            "url": f"https://files/{name}-{version}-py3-none-manylinux_2_28_{machine}.whl",
            "archive_info": {"hashes": {"sha256": SHA[name]}},
        },
    }


def report(torch_requires: list[str], machine: str = "aarch64") -> dict[str, Any]:
    return {
        "environment": ENV,
        "install": [
            item("torch", "2.15.0", torch_requires, True, machine),
            item("numpy", "2.5.5", [], True, machine),
            item("nvidia-x", "1.0", [], False, machine),
            item("triton", "3.9.0", [], False, machine),
            item("cuda-toolkit", "13.2.2", ['cublas==13.4; extra == "cublas"'], False, machine),
            item("cublas", "13.4", [], False, machine),
        ],
    }


LOCK = {
    "torch": "2.15.0",
    "numpy": "2.5.5",
    "nvidia-x": "1.0",
    "triton": "3.9.0",
    "cuda-toolkit": "13.2.2",
    "cublas": "13.4",
}
HASHES = {n: {SHA[n]} for n in LOCK}
LINUX_ONLY = [
    'nvidia-x==1.0; platform_system == "Linux"',
    'triton==3.9.0; platform_system == "Linux"',
    "cuda-toolkit[cublas]==13.2.2",
]


def test_a_lock_whose_requirements_hold_on_both_machines_serves_aarch64() -> None:
    assert resolution.differences(LOCK, HASHES, report(LINUX_ONLY), "aarch64") == []


def test_x86_64_only_requirements_are_not_installed_on_aarch64_so_the_lock_does_not_serve_it() -> None:
    x86_only = [r.replace('platform_system == "Linux"', 'platform_machine == "x86_64"') for r in LINUX_ONLY]
    problems = resolution.differences(LOCK, HASHES, report(x86_only), "aarch64")
    assert problems == [
        "nvidia-x==1.0: in the lockfile, not installed by pip on aarch64",
        "triton==3.9.0: in the lockfile, not installed by pip on aarch64",
    ]
    assert resolution.differences(LOCK, HASHES, report(x86_only, "x86_64"), "x86_64") == []


def test_a_report_of_the_build_machines_wheels_does_not_pass_for_aarch64() -> None:
    problems = resolution.differences(LOCK, HASHES, report(LINUX_ONLY, "x86_64"), "aarch64")
    assert (
        "torch==2.15.0: pip picked torch-2.15.0-py3-none-manylinux_2_28_x86_64.whl, not a wheel for aarch64"
        in problems
    )


def test_other_versions_missing_hashes_and_aarch64_only_requirements_are_named() -> None:
    lock = {**LOCK, "numpy": "2.5.4"}
    hashes = {**HASHES, "triton": {"0" * 64}}
    problems = resolution.differences(
        lock, hashes, report([*LINUX_ONLY, 'extra-arm==1; platform_machine == "aarch64"']), "aarch64"
    )
    assert "numpy: the lockfile pins 2.5.4, pip picks 2.5.5 on aarch64" in problems
    assert any(p.startswith("triton==3.9.0: the hash of triton-3.9.0") for p in problems)
    assert "extra-arm: needed on aarch64, not resolved by pip's report" in problems
