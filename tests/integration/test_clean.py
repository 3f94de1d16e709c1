"""`inv clean` removes only this project's images: by their labels, in its repositories."""

from pathlib import Path

import pytest

from tests.integration.conftest import build_small, remove_images
from torchimg import devtools, engine, variants

pytestmark = pytest.mark.integration


def test_clean_removes_labelled_images_only(base: str | None, tmp_path: Path) -> None:
    ours = build_small(
        tmp_path,
        f"FROM {base or variants.load().bases['debian-trixie'].image}\n",
        "torchimg-test/clean-ours:1",
    )
    foreign = "torchimg-test/clean-foreign:1"  # same repository family, not built by this project
    engine.tag(base or variants.load().bases["debian-trixie"].image, foreign)
    bystander = "torchimg-test/clean-bystander:1"  # ours, but in a repository not asked for
    engine.tag(ours, bystander)
    try:
        removed = devtools.remove_project_images(("torchimg-test/clean-ours", "torchimg-test/clean-foreign"))
        assert removed == [ours]
        assert engine.image_id(ours) is None
        assert engine.image_id(foreign) is not None
        assert engine.image_id(bystander) is not None
    finally:
        remove_images(ours, foreign, bystander)
