"""The Docker Engine and its BuildKit: the one adapter to them. Only `_client` imports the
client library (python-on-whales); the rest of the project calls the names below, and every
failure a user can act on arrives as a PipelineError with its fix."""

from torchimg.adapters.engine.builds import BuildResult, build, prune_build_cache
from torchimg.adapters.engine.containers import (
    RESULT_MAX_BYTES,
    Exited,
    containers_of,
    copy_file_out,
    new_container_name,
    registry_container,
    remove_container,
    run,
    run_kept,
    stop_container,
)
from torchimg.adapters.engine.images import (
    exposed_ports,
    gpu_runtime,
    history,
    image_id,
    image_labels,
    labelled_tags,
    layer_ids,
    preflight,
    remove_image,
    save,
    server_version,
    tag,
    untag,
)
from torchimg.adapters.engine.registries import imagetools, manifest_digest, push_as, require_base

__all__ = [
    "RESULT_MAX_BYTES",
    "BuildResult",
    "Exited",
    "build",
    "containers_of",
    "copy_file_out",
    "exposed_ports",
    "gpu_runtime",
    "history",
    "image_id",
    "image_labels",
    "imagetools",
    "labelled_tags",
    "layer_ids",
    "manifest_digest",
    "new_container_name",
    "preflight",
    "prune_build_cache",
    "push_as",
    "registry_container",
    "remove_container",
    "remove_image",
    "require_base",
    "run",
    "run_kept",
    "save",
    "server_version",
    "stop_container",
    "tag",
    "untag",
]
