"""An image's build inputs are checked before BuildKit starts: no engine is needed for these."""

import dataclasses
from pathlib import Path

import pytest

from tests.unit.conftest import RUNTIME_PINS
from torchimg import image_inputs
from torchimg.adapters import gitinfo
from torchimg.errors import PipelineError
from torchimg.model import lockfile, variants


def test_missing_lockfile_names_the_file_the_index_and_the_command(config: variants.Config) -> None:
    with pytest.raises(PipelineError) as exc:
        image_inputs.check(config.variant("2.9.1-cu126"), "runtime", None)
    msg = str(exc.value)
    assert "locks/2.9.1-cu126/runtime.txt is missing" in msg
    assert "nox -s lock -- --variant 2.9.1-cu126" in msg
    assert "https://download.pytorch.org/whl/cu126" in msg


def test_lock_python_must_match_the_base(config: variants.Config) -> None:
    variant = config.variant("2.9.1-cu128")
    runtime = variant.lock_dir / "runtime.txt"
    runtime.write_text(runtime.read_text().replace("# python: 3.13", "# python: 3.12"))
    with pytest.raises(
        PipelineError, match=r"compiled for Python 3.12, but base debian-trixie has Python 3.13"
    ):
        image_inputs.check(variant, "runtime", None)
    assert image_inputs.check(variant, "runtime", "local/debian:trixie")  # --base: the Dockerfile checks


@pytest.mark.parametrize(
    ("lock", "line", "replacement", "said"),
    [
        ("runtime.txt", "# variant: 2.9.1-cu128", "# variant: 2.9.1-cu126", "variant '2.9.1-cu126'"),
        ("dev.txt", "# flavor: dev", "# flavor: runtime", "flavor 'runtime' (expected 'dev')"),
        (
            "runtime.txt",
            "# index: https://pypi.org/simple",
            "# index: https://download.pytorch.org/whl/cu128",
            "index 'https://download.pytorch.org/whl/cu128' (expected 'https://pypi.org/simple')",
        ),
        ("runtime.txt", "# platform: linux-x86_64", "# platform: windows", "platform 'windows'"),
    ],
)
def test_a_lockfile_compiled_for_another_variant_flavor_index_or_platform_is_refused(
    config: variants.Config, lock: str, line: str, replacement: str, said: str
) -> None:
    """A lockfile copied from another variant's folder, or left from before the variant's index
    changed, would build an image its labels and release notes misdescribe."""
    variant = config.variant("2.9.1-cu128")
    path = variant.lock_dir / lock
    assert line in path.read_text()
    path.write_text(path.read_text().replace(line, replacement))
    with pytest.raises(PipelineError) as exc:
        image_inputs.check(variant, "dev", None)
    assert exc.value.exit_code == 2
    assert f"{lock} was compiled for another {said}" in exc.value.what
    assert "nox -s lock -- --variant 2.9.1-cu128" in exc.value.fix


def test_unknown_flavor_for_variant(config: variants.Config) -> None:
    variant = dataclasses.replace(config.variant("2.9.1-cu128"), flavors=("runtime",))
    with pytest.raises(PipelineError, match="has no flavor 'dev'"):
        image_inputs.check(variant, "dev", None)


def test_labels_are_read_from_the_lockfile(config: variants.Config) -> None:
    default = config.variant("2.9.1-cu128")
    git = gitinfo.GitInfo("abc123", 1_700_000_000, False, "https://example.invalid/repo")
    locks = image_inputs.lockfiles(default, "dev")
    labels = image_inputs.image_labels(default, "dev", git, default.base.image, "sha256:x", locks)
    assert labels["io.torchimg.torch.version"] == RUNTIME_PINS["torch"]
    assert labels["io.torchimg.cuda.version"] == RUNTIME_PINS["nvidia-cuda-runtime-cu12"]
    assert labels["io.torchimg.cudnn.version"] == RUNTIME_PINS["nvidia-cudnn-cu12"]
    assert labels["io.torchimg.nccl.version"] == RUNTIME_PINS["nvidia-nccl-cu12"]
    assert labels["io.torchimg.driver.min"] == "570.26"
    assert labels["org.opencontainers.image.created"] == "2023-11-14T22:13:20Z"
    assert labels["org.opencontainers.image.base.digest"] == default.base.digest
    assert labels["io.torchimg.lock.dev.sha256"] == lockfile.sha256(locks[1])
    overridden = image_inputs.image_labels(
        default, "runtime", git, "local/debian:trixie", "sha256:x", locks[:1]
    )
    assert overridden["org.opencontainers.image.base.name"] == "local/debian:trixie"
    assert overridden["io.torchimg.base.pinned"] == "false"


def test_build_args_for_cuda_and_cpu(config: variants.Config) -> None:
    git = gitinfo.GitInfo("abc", 1, False, "x")
    cuda = image_inputs.build_args(config.variant("2.9.1-cu128"), "base", git, "3.13")
    # the major only: a 12.4 driver runs the 12.8 wheels (minor-version compatibility)
    assert cuda["TORCHIMG_REQUIRE_CUDA"] == "cuda>=12.0"
    assert cuda["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert cuda["TORCHIMG_HOST_DRIVER"] == "/usr/local/nvidia"
    cu13 = image_inputs.build_args(config.variant("2.9.1-cu130"), "base", git, "3.13")
    assert cu13["TORCHIMG_REQUIRE_CUDA"] == "cuda>=13.0"
    assert cuda["SOURCE_DATE_EPOCH"] == "1"
    cpu = image_inputs.build_args(config.variant("2.9.1-cpu"), "base", git, "3.13")
    assert (cpu["TORCHIMG_REQUIRE_CUDA"], cpu["NVIDIA_VISIBLE_DEVICES"], cpu["TORCHIMG_HOST_DRIVER"]) == (
        "",
        "void",
        "",
    )


def test_layer_times_follow_the_repositorys_lockfile_not_a_copy(
    config: variants.Config, tmp_path: Path
) -> None:
    """A build reading copied lockfiles (tests, the build report) must reuse the same layers:
    file times come from the variant's lockfile in the repository, found by name."""
    default = config.variant("2.9.1-cu128")
    copy = dataclasses.replace(default, lock_dir=tmp_path / "elsewhere")
    git = gitinfo.GitInfo("abc", 7, False, "x")
    assert image_inputs.layer_epoch(copy, git) == image_inputs.layer_epoch(default, git)
