"""Build inputs are checked before BuildKit starts: no engine is needed for these."""

import dataclasses
import shutil
from pathlib import Path

import pytest

from torchimg import build, gitinfo, lockfile, variants
from torchimg.errors import PipelineError

CONFIG = variants.load()
DEFAULT = CONFIG.variant("2.9.1-cu128")


def test_missing_lockfile_names_the_file_the_index_and_the_command() -> None:
    variant = CONFIG.variant("2.9.1-cu126")
    with pytest.raises(PipelineError) as exc:
        build.build(variant, "runtime", build.BuildOptions(repository="x/y"))
    msg = str(exc.value)
    assert "requirements/locks/2.9.1-cu126/runtime.txt is missing" in msg
    assert "nox -s lock -- --variant 2.9.1-cu126" in msg
    assert "https://download.pytorch.org/whl/cu126" in msg


def test_lock_python_must_match_the_base(tmp_path: Path) -> None:
    locks = tmp_path / "locks"
    shutil.copytree(DEFAULT.lock_dir, locks)
    text = (locks / "runtime.txt").read_text().replace("# python: 3.13", "# python: 3.12")
    (locks / "runtime.txt").write_text(text)
    variant = dataclasses.replace(DEFAULT, lock_dir=locks)
    with pytest.raises(
        PipelineError, match=r"compiled for Python 3.12, but base debian-trixie has Python 3.13"
    ):
        build.build(variant, "runtime", build.BuildOptions(repository="x/y"))


def test_unknown_flavor_for_variant() -> None:
    variant = dataclasses.replace(DEFAULT, flavors=("runtime",))
    with pytest.raises(PipelineError, match="has no flavor 'dev'"):
        build.build(variant, "dev", build.BuildOptions(repository="x/y"))


def test_labels_are_read_from_the_lockfile() -> None:
    git = gitinfo.GitInfo("abc123", 1_700_000_000, False, "https://example.invalid/repo")
    locks = build.lockfiles(DEFAULT, "dev")
    labels = build.labels(DEFAULT, "dev", git, DEFAULT.base.image, "sha256:x", locks)
    pins = lockfile.pins(locks[0].read_text())
    assert labels["io.torchimg.torch.version"] == pins["torch"] == "2.9.1"
    assert labels["io.torchimg.cuda.version"] == pins["nvidia-cuda-runtime-cu12"]
    assert labels["io.torchimg.cudnn.version"] == pins["nvidia-cudnn-cu12"]
    assert labels["io.torchimg.nccl.version"] == pins["nvidia-nccl-cu12"]
    assert labels["io.torchimg.driver.min"] == "570.26"
    assert labels["org.opencontainers.image.created"] == "2023-11-14T22:13:20Z"
    assert labels["org.opencontainers.image.base.digest"] == DEFAULT.base.digest
    assert labels["io.torchimg.lock.dev.sha256"] == lockfile.sha256(locks[1])
    overridden = build.labels(DEFAULT, "runtime", git, "local/debian:trixie", "sha256:x", locks[:1])
    assert overridden["org.opencontainers.image.base.name"] == "local/debian:trixie"
    assert overridden["io.torchimg.base.pinned"] == "false"


def test_build_args_for_cuda_and_cpu() -> None:
    git = gitinfo.GitInfo("abc", 1, False, "x")
    cuda = build.build_args(DEFAULT, "base", git, "3.13")
    assert cuda["NVIDIA_REQUIRE_CUDA"] == "cuda>=12.8"
    assert cuda["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert cuda["SOURCE_DATE_EPOCH"] == "1"
    # layer times follow the runtime lockfile's last commit, not the latest commit
    assert cuda["LAYER_EPOCH"] == str(gitinfo.path_epoch(DEFAULT.lock_dir / "runtime.txt", 1))
    assert int(cuda["LAYER_EPOCH"]) > 1
    cpu = build.build_args(CONFIG.variant("2.9.1-cpu"), "base", git, "3.13")
    assert (cpu["NVIDIA_REQUIRE_CUDA"], cpu["NVIDIA_VISIBLE_DEVICES"]) == ("", "void")


def test_a_copy_of_the_locks_keeps_the_layer_file_times(tmp_path: Path) -> None:
    """A build reading copied lockfiles (tests, the build report) must reuse the same layers."""
    shutil.copytree(DEFAULT.lock_dir, tmp_path / "locks")
    copy = dataclasses.replace(DEFAULT, lock_dir=tmp_path / "locks")
    git = gitinfo.current()
    assert build.layer_epoch(copy, git) == build.layer_epoch(DEFAULT, git)
    assert build.layer_epoch(DEFAULT, git) == gitinfo.path_epoch(DEFAULT.lock_dir / "runtime.txt", 0) > 0
