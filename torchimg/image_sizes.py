"""An image's size, layer by layer: the files' bytes, the tar streams' bytes, the compressed
blobs, and what each layer holds (from `docker history`)."""

from typing import Any

from torchimg import layers
from torchimg.adapters import engine

_CATEGORIES = (
    ("/layers/nvidia/", "venv: NVIDIA libraries"),
    ("/layers/torch/", "venv: torch + triton"),
    ("/layers/rest/", "venv: the rest"),
    ("/layers/dev/", "dev: Jupyter + science stack"),
    ("g++", "toolchain: g++, Python headers; user"),
    ("apt-install python3", "Python (Debian)"),
)


def _history(image: str) -> list[str]:
    """CreatedBy of each non-empty layer, oldest first (the order of the manifest's layers)."""
    entries = engine.history(image)
    return [e["CreatedBy"] for e in reversed(entries) if e.get("Size") not in ("0B", "0")]


def _category(created_by: str, index: int, base_layers: int) -> str:
    if index < base_layers:
        return "base image"
    return next((name for key, name in _CATEGORIES if key in created_by), "other")


def sizes(image: str, base: str) -> dict[str, Any]:
    """Per layer and in total: uncompressed (the files' bytes, as `du` counts them), the tar
    streams' bytes (what the layer digests cover), and compressed (the layer blobs)."""
    saved = layers.scan(image)
    created = _history(image)
    base_layers = len(engine.layer_ids(base))
    rows: list[dict[str, Any]] = []
    for i, blob in enumerate(saved.layers):
        by = created[i] if i < len(created) and len(created) == len(saved.layers) else "?"
        rows.append(
            {
                "blob": blob.name.rsplit("/", 1)[-1][:12],
                "what": _category(by, i, base_layers),
                "uncompressed": blob.files,
                "tar": blob.content,
                "compressed": blob.stored,
            }
        )
    breakdown: dict[str, int] = {}
    for row in rows:
        breakdown[row["what"]] = breakdown.get(row["what"], 0) + row["uncompressed"]
    return {
        "uncompressed": sum(r["uncompressed"] for r in rows),
        "tar": sum(r["tar"] for r in rows),
        "compressed": sum(r["compressed"] for r in rows),
        "layers": rows,
        "breakdown": breakdown,
        "diff_ids": engine.layer_ids(image),
    }
