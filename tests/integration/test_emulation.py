"""QEMU user emulation as this machine's kernel has it: what `.ci/run` registers, and what
arm64 builds, emulated smoke checks and `preflight --variant` need (F flag, enabled)."""

import logging

import pytest

from tests.integration.conftest import missing
from torchimg import runner_checks
from torchimg.adapters import emulation
from torchimg.errors import ToolError

pytestmark = pytest.mark.integration


def test_the_arm64_emulator_is_registered_the_way_the_pipeline_needs_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    if emulation.native("linux/arm64"):
        pytest.skip("this machine runs linux/arm64 natively: nothing to emulate")
    try:
        emulation.require("linux/arm64")
    except ToolError as exc:
        missing(f"QEMU emulation of linux/arm64 is not registered here: {exc.what}")
    with caplog.at_level(logging.INFO):
        runner_checks.check(gpu=False, min_free_gb=0, platforms=("linux/arm64",))
    assert "ok       QEMU emulation of linux/arm64" in caplog.text
