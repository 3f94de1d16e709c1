"""`nox -s refresh_bases` against a real registry: a tag gets pinned by digest, a re-pushed
tag is detected and the pin moved, an unreachable registry changes nothing."""

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.factories import has_row
from tests.integration.conftest import build_small
from torchimg import paths
from torchimg.adapters import engine, local_registry
from torchimg.errors import PipelineError
from torchimg.model import variants
from torchimg.stages import refresh_bases

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def base_images(
    base: str | None, default_variant: variants.Variant, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[str]]:
    """Two small, different images made from the build's base: two upstream "releases"."""
    made = []
    for marker in ("first", "second"):
        dockerfile = f"FROM {base or default_variant.base.image}\nRUN echo {marker} > /release-marker\n"
        folder = tmp_path_factory.mktemp(f"base-{marker}")
        made.append(build_small(folder, dockerfile, f"torchimg-test/refresh-base:{marker}"))
    yield made
    for tag in made:
        engine.untag(tag)


def test_a_tag_is_pinned_then_a_repushed_tag_moves_the_pin(
    new_registry: Callable[[], local_registry.Local], base_images: list[str], tmp_path: Path, reports: Path
) -> None:
    reg = new_registry()
    reg.start()
    upstream = f"{reg.host}/debian:trixie-slim"
    first = engine.push_as(base_images[0], upstream)

    src = tmp_path / "variants.toml"
    old = variants.load().bases["debian-trixie"].image
    src.write_text(paths.VARIANTS_FILE.read_text().replace(old, f"{upstream}@{old.split('@')[1]}"))
    dockerfile = tmp_path / "docker" / "Dockerfile"  # its BASE_IMAGE default names the pin too
    dockerfile.parent.mkdir()
    dockerfile.write_text(f"ARG BASE_IMAGE={upstream}@{old.split('@')[1]}\nFROM ${{BASE_IMAGE}}\n")

    moved = refresh_bases.refresh(refresh_bases.Options(src, ("debian-trixie",), check=False), reports)
    assert [m["new"] for m in moved] == [first]
    assert variants.load(src).bases["debian-trixie"].image == f"{upstream}@{first}"
    assert dockerfile.read_text().startswith(f"ARG BASE_IMAGE={upstream}@{first}\n")
    assert "# Debian 13 slim" in src.read_text()  # edited in place, comments kept
    assert (
        refresh_bases.refresh(refresh_bases.Options(src, ("debian-trixie",), check=False), reports) == []
    )  # nothing moved since

    second = engine.push_as(base_images[1], upstream)  # upstream re-pushes the same tag
    assert second != first
    with pytest.raises(PipelineError, match="moved upstream"):
        refresh_bases.refresh(refresh_bases.Options(src, ("debian-trixie",), check=True), reports)
    assert variants.load(src).bases["debian-trixie"].image == f"{upstream}@{first}"  # --check: unchanged
    moved = refresh_bases.refresh(refresh_bases.Options(src, ("debian-trixie",), check=False), reports)
    assert [(m["old"], m["new"]) for m in moved] == [(first, second)]
    assert variants.load(src).bases["debian-trixie"].image == f"{upstream}@{second}"

    body = refresh_bases.pull_request_body(reports).read_text()
    assert has_row(body, "debian-trixie", f"`{upstream}`", f"`{first[:19]}`", f"`{second[:19]}`")

    reg.stop()  # the registry goes away: a clear error, and the file is left exactly as it was
    before = src.read_bytes()
    with pytest.raises(PipelineError) as exc:
        refresh_bases.refresh(refresh_bases.Options(src, ("debian-trixie",), check=False), reports)
    assert "no pin was changed" in exc.value.what
    assert reg.host in exc.value.fix
    assert src.read_bytes() == before


def test_a_deleted_upstream_tag_is_named(
    new_registry: Callable[[], local_registry.Local], tmp_path: Path, reports: Path
) -> None:
    reg = new_registry()
    reg.start()
    src = tmp_path / "variants.toml"
    old = variants.load().bases["debian-trixie"].image
    src.write_text(paths.VARIANTS_FILE.read_text().replace(old, f"{reg.host}/gone:tag@{old.split('@')[1]}"))
    before = src.read_bytes()
    with pytest.raises(PipelineError, match="no longer exists"):
        refresh_bases.refresh(refresh_bases.Options(src, ("debian-trixie",), check=False), reports)
    assert src.read_bytes() == before
