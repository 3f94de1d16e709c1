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

from tests.integration.conftest import TEST_REPOSITORY, Canaries, Pipeline, remove_images
from torchimg import buildlog
from torchimg.adapters import engine, local_registry
from torchimg.errors import PipelineError
from torchimg.model import record, variants
from torchimg.stages import build

pytestmark = pytest.mark.integration


def _layers(image_id: str) -> list[str]:
    return engine.layer_ids(image_id)


def test_a_pruned_machine_rebuilds_from_the_registry_cache_without_pip(
    pipeline: Pipeline,
    runtime_image: record.Record,
    default_variant: variants.Variant,
    base: str | None,
    canaries: Canaries,
    new_registry: Callable[[], local_registry.Local],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    pipeline = Pipeline(pipeline.config, tmp_path)  # records of its own: the session's stay valid
    reg = new_registry()
    reg.start()
    opts = build.Options(
        base=base,
        creds=canaries.creds,
        repository=TEST_REPOSITORY,
        cache_repository=f"{reg.host}/cache",
    )
    exported, log = build.build(*pipeline.at("runtime", default_variant), opts)  # warm here: exports only
    assert exported.image_id == runtime_image.image_id
    assert any("writing cache" in line or "exporting cache" in line for line in log), log[-5:]
    assert exported.build.cache_ref == f"{reg.host}/cache:2.9.1-cu128-runtime"

    engine.prune_build_cache()  # an empty local cache, as on a fresh runner
    rebuilt, log = build.build(
        *pipeline.at("runtime", default_variant), dataclasses.replace(opts, cache_export=False)
    )
    assert not buildlog.ran(log, "builder"), "pip ran although the registry cache had its layer"
    assert not any("Downloading torch-" in line for line in log)
    assert rebuilt.image_id == runtime_image.image_id


def test_the_same_inputs_give_the_same_layers_without_any_cache(
    pipeline: Pipeline,
    runtime_image: record.Record,
    default_variant: variants.Variant,
    base: str | None,
    canaries: Canaries,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    pipeline = Pipeline(pipeline.config, tmp_path)  # records of its own: the session's stay valid
    again = dataclasses.replace(
        build.Options(base=base, creds=canaries.creds, repository="torchimg-test/again"), cache=False
    )
    rec = build.build(*pipeline.at("runtime", default_variant), again)[0]
    try:
        assert _layers(rec.image_id) == _layers(runtime_image.image_id)
    finally:
        remove_images(*rec.tags)


def test_an_unknown_builder_is_named(
    pipeline: Pipeline,
    default_variant: variants.Variant,
    base: str | None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    pipeline = Pipeline(pipeline.config, tmp_path)  # records of its own: the session's stay valid
    opts = build.Options(base=base, repository="torchimg-test/nobuilder", builder="no-such-builder")
    with pytest.raises(PipelineError) as exc:
        build.build(*pipeline.at("runtime", default_variant), opts)[0]
    assert "no buildx builder named 'no-such-builder'" in exc.value.what
    assert exc.value.exit_code == 2  # a setting naming nothing: before any stage
    assert "docker buildx ls" in exc.value.fix
    assert engine.image_id(f"torchimg-test/nobuilder:{default_variant.name}-runtime") is None
