"""The build report's empty engine: a real second dockerd that starts empty, gives its
containers a network, and leaves the main engine (its images, its bridge) as it found them."""

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import build_small, remove_images
from torchimg.adapters import engine, local_registry


def test_an_empty_engine_holds_nothing_has_a_network_and_leaves_no_trace(
    base: str | None, new_registry: Callable[[], local_registry.Local], tmp_path: Path
) -> None:
    if base is None or engine.image_id(base) is None:
        pytest.skip("needs a local base image (TORCHIMG_BASE) to carry into the empty engine")
    if os.geteuid() != 0:
        pytest.skip("a second dockerd needs root")
    reg = new_registry()
    reg.start()
    copy = f"{reg.host}/torchimg-test-empty:base"
    engine.push_as(base, copy)
    # zstd layers (the default) as the pipeline exports them: pushed, then pulled elsewhere
    zstd = build_small(
        tmp_path, f"FROM {base}\nRUN echo zstd > /zstd\n", f"{reg.host}/torchimg-test-empty:zstd", "zstd"
    )
    engine.push_as(zstd, zstd)
    remove_images(zstd)
    before = os.environ.get("DOCKER_HOST")
    with engine.empty_engine("test") as host:
        assert os.environ["DOCKER_HOST"] == host
        assert engine.image_id(base) is None, "the empty engine sees the main engine's images"
        engine.pull(copy)
        engine.pull(zstd)  # Docker schema 2 manifests with zstd layers fail here: unpullable
        assert engine.run(zstd, ["cat", "/zstd"]).strip() == "zstd"
        # a build's RUN steps and pip need this: the containers' network reaches out
        assert "pypi.org" in engine.run(copy, ["getent", "hosts", "pypi.org"])
        folders = [Path(p) for p in engine.data_roots()]
        assert folders[0].name == "data" and folders[0].parent.name.startswith("torchimg-empty-engine-")
    assert os.environ.get("DOCKER_HOST") == before
    assert not folders[0].parent.exists(), "the empty engine's data root was left behind"
    assert engine.image_id(base) is not None
    # the main engine's bridge still works: a container on it starts and resolves names
    assert "pypi.org" in engine.run(base, ["getent", "hosts", "pypi.org"])
