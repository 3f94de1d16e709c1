"""The lock stage refuses, before any build, a variant whose index does not answer; the locker
resolves each flavor again for each other machine of the variant."""

import dataclasses
from pathlib import Path

import pytest

from torchimg.adapters import pipcompile
from torchimg.errors import PipelineError
from torchimg.model import variants
from torchimg.model.credentials import Credentials
from torchimg.stages import Image, Selection, lock


def test_an_unreachable_index_names_what_is_needed(config: variants.Config, repo: Path) -> None:
    variant = dataclasses.replace(
        config.variant("2.9.1-cu126"), index="https://torch-index.invalid/whl/cu126"
    )
    result = lock.run(Selection(config, (Image(variant, "runtime"),), repo / "reports"), lock.Options())
    with pytest.raises(PipelineError) as exc:
        result.raise_for_failures()
    # the stage reports each variant, then fails naming the ones it could not lock
    assert "lock: 0 of 1 done; failed: 2.9.1-cu126" in str(exc.value)
    assert exc.value.exit_code == 3  # a service (the index) failed, not the input


def test_the_message_names_the_index_and_the_command(config: variants.Config) -> None:
    variant = dataclasses.replace(
        config.variant("2.9.1-cu130"), index="https://torch-index.invalid/whl/cu130"
    )
    with pytest.raises(PipelineError) as exc:
        lock.require_index(variant, Credentials())
    msg = str(exc.value)
    assert "takes torch from https://torch-index.invalid/whl/cu130, which does not answer" in msg
    assert "nox -s lock -- --variant 2.9.1-cu130" in msg
    assert "never written by hand" in msg


def test_the_locker_resolves_each_flavor_again_for_each_other_machine() -> None:
    script = pipcompile.container_script(
        "requirements/locks/v", "https://download.pytorch.org/whl/cu128", False, ("aarch64",)
    )
    runtime = next(
        line
        for line in script.splitlines()
        if "--report requirements/locks/v/resolved-runtime-aarch64.json" in line
    )
    dev = next(
        line
        for line in script.splitlines()
        if "--report requirements/locks/v/resolved-dev-aarch64.json" in line
    )
    assert "--index-url https://download.pytorch.org/whl/cu128" in runtime and "torch.in" in runtime
    assert "--index-url https://pypi.org/simple" in dev and "-r requirements/dev.in" in dev
    assert "resolved-" not in pipcompile.container_script(
        "requirements/locks/v", "https://pypi.org/simple", False
    )
