"""Scale-out against the real engine and a real registry: the registry cache, named builders,
and layers that stay the same for the same inputs. (Dev sharing every runtime layer is
checked in test_build.)

The cache test prunes BuildKit's local cache, as a fresh CI runner would have it. The builds
here write their records to a temp folder: the session's runtime record stays the image's.
"""

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
from python_on_whales import docker

from tests.integration.conftest import TEST_REPOSITORY, Canaries, remove_images
from torchimg import build, buildlog, record, registry, variants
from torchimg.errors import PipelineError

pytestmark = pytest.mark.integration


def _layers(image_id: str) -> list[str]:
    return list(docker.image.inspect(image_id).root_fs.layers or [])


def test_a_pruned_machine_rebuilds_from_the_registry_cache_without_pip(
    runtime_image: record.Record,
    default_variant: variants.Variant,
    base: str | None,
    canaries: Canaries,
    new_registry: Callable[[], registry.Local],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("TORCHIMG_REPORTS", str(tmp_path))
    reg = new_registry()
    reg.start()
    opts = build.BuildOptions(
        base=base,
        creds=canaries.creds,
        repository=TEST_REPOSITORY,
        cache_repository=f"{reg.host}/cache",
    )
    exported, log = build.build_with_log(default_variant, "runtime", opts)  # warm here: exports only
    assert exported.image_id == runtime_image.image_id
    assert any("writing cache" in line or "exporting cache" in line for line in log), log[-5:]
    assert exported.build.cache_ref == f"{reg.host}/cache:2.9.1-cu128-runtime"

    docker.buildx.prune(all=True)  # an empty local cache, as on a fresh runner
    rebuilt, log = build.build_with_log(
        default_variant, "runtime", dataclasses.replace(opts, cache_export=False)
    )
    assert not buildlog.ran(log, "[builder "), "pip ran although the registry cache had its layer"
    assert not any("Downloading torch-" in line for line in log)
    assert rebuilt.image_id == runtime_image.image_id


def test_the_same_inputs_give_the_same_layers_without_any_cache(
    runtime_image: record.Record,
    default_variant: variants.Variant,
    base: str | None,
    canaries: Canaries,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("TORCHIMG_REPORTS", str(tmp_path))
    again = dataclasses.replace(
        build.BuildOptions(base=base, creds=canaries.creds, repository="torchimg-test/again"), cache=False
    )
    rec = build.build(default_variant, "runtime", again)
    try:
        assert _layers(rec.image_id) == _layers(runtime_image.image_id)
    finally:
        remove_images(*rec.tags)


def test_an_unknown_builder_is_named(
    default_variant: variants.Variant, base: str | None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TORCHIMG_REPORTS", str(tmp_path))
    opts = build.BuildOptions(base=base, repository="torchimg-test/nobuilder", builder="no-such-builder")
    with pytest.raises(PipelineError) as exc:
        build.build(default_variant, "runtime", opts)
    assert "no-such-builder" in exc.value.what
    assert "docker buildx ls" in exc.value.fix
