"""The per-image record: what each stage learned about one image, keyed by its image ID.

Stages run as separate processes (nox sessions); the record is their contract. A new build
replaces the record, so a later stage never trusts results that belong to another image.
"""

import json
from pathlib import Path
from typing import Any

from torchimg import engine, paths
from torchimg.errors import PipelineError

Record = dict[str, Any]


def path(variant: str, flavor: str) -> Path:
    return paths.reports_dir() / "records" / f"{variant}-{flavor}.json"


def read(variant: str, flavor: str) -> Record | None:
    p = path(variant, flavor)
    return json.loads(p.read_text()) if p.exists() else None


def of_built_image(variant: str, flavor: str) -> Record:
    """The record of this variant and flavor, if its tag still names the image it describes:
    later stages must never report on another image than the one they ran on."""
    rec = read(variant, flavor)
    if rec is None or engine.image_id(rec["tags"][0]) != rec["image_id"]:
        raise PipelineError(
            f"no built {flavor} image of {variant} matches its record",
            f"nox -s build -- --variant {variant} --flavor {flavor}",
        )
    return rec


def write(record: Record) -> Path:
    """Write atomically: a crash never leaves a half-written record behind."""
    p = path(record["variant"], record["flavor"])
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    tmp.replace(p)
    return p
