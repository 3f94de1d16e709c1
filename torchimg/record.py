"""The per-image record: what each stage learned about one image, keyed by its image ID.

Stages run as separate processes (nox sessions); the record is their contract. A new build
replaces the record, so a later stage never trusts results that belong to another image.
"""

import json
from pathlib import Path
from typing import Any

from torchimg import paths

Record = dict[str, Any]


def path(variant: str, flavor: str) -> Path:
    return paths.reports_dir() / "records" / f"{variant}-{flavor}.json"


def read(variant: str, flavor: str) -> Record | None:
    p = path(variant, flavor)
    return json.loads(p.read_text()) if p.exists() else None


def write(record: Record) -> Path:
    """Write atomically: a crash never leaves a half-written record behind."""
    p = path(record["variant"], record["flavor"])
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    tmp.replace(p)
    return p
