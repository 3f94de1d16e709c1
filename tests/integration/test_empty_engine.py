"""The build report's empty engine: a real second dockerd that starts empty, gives its
containers a network, and leaves the main engine (its images, its bridge) as it found them."""

import os
from collections.abc import Callable
from pathlib import Path

import pytest

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
    before = os.environ.get("DOCKER_HOST")
    folder = tmp_path / "engine"
    with engine.empty_engine(folder) as host:
        assert os.environ["DOCKER_HOST"] == host
        assert engine.image_id(base) is None, "the empty engine sees the main engine's images"
        engine.pull(copy)
        # a build's RUN steps and pip need this: the containers' network reaches out
        assert "pypi.org" in engine.run(copy, ["getent", "hosts", "pypi.org"])
    assert os.environ.get("DOCKER_HOST") == before
    assert not folder.exists(), "the empty engine's data root was left behind"
    assert engine.image_id(base) is not None
    # the main engine's bridge still works: a container on it starts and resolves names
    assert "pypi.org" in engine.run(base, ["getent", "hosts", "pypi.org"])
