"""`python -m torchimg stage`: push a built image to the staging repository, by digest.

Build once, promote by digest: CI's build job stages each candidate in the staging
repository, under the commit's immutable tag name plus the image ID; the GPU test and scan jobs
pull that digest (`test --staged`, `scan --staged`), and `promote` copies the digest that passed
both to the release repository. The staged digest is read back from the registry and filed in the record,
which travels with the image from job to job.
"""

import argparse
import datetime
from dataclasses import dataclass

from torchimg.adapters import engine, local_registry, remote_registry
from torchimg.errors import PipelineError, RefusedError
from torchimg.model import record, tags
from torchimg.output import log
from torchimg.settings import Settings
from torchimg.stages import Image, Selection, StageResult, built, each_image

HELP = "push built images to the staging repository; print each REPOSITORY@DIGEST"
SELECTS = "images"  # variants x flavors


@dataclass(frozen=True)
class Options:
    staging: str


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--repository", help="the release repository (default: $TORCHIMG_REPOSITORY, variants.toml)"
    )
    p.add_argument(
        "--staging",
        help="staging repository (default: $TORCHIMG_STAGING, variants.toml `staging`, "
        "else <repository>-staging)",
    )


def options(args: argparse.Namespace, settings: Settings) -> Options:
    return Options(settings.staging(args.staging, settings.repository(args.repository)))


def run(selection: Selection, opts: Options) -> StageResult:
    staged: list[str] = []
    result = each_image("stage", selection, lambda image: staged.append(stage(selection, image, opts)))
    for ref in staged:
        print(ref)
    return result


def staging_tag(image: Image, rec: record.Record) -> str:
    """The commit's immutable tag name plus the image's own ID: a tag per candidate, so that a
    rebuild of the same commit (another digest) never moves, or orphans, an earlier one."""
    return tags.staging(tags.immutable_of(image.variant, image.flavor, rec), rec.image_id)


def still_staged(rec: record.Record, image: Image) -> record.Staged:
    """The record's staged candidate, if the staging repository still serves that digest;
    else refused, with the reason."""
    staged = rec.staged()
    if staged is None:
        raise RefusedError(
            f"{image} ({rec.image_id[:19]}) has not been staged", f"nox -s stage {image.select}"
        )
    if remote_registry.digest(staged.by_digest) != staged.digest:
        raise RefusedError(
            f"the staging repository no longer serves {staged.by_digest} (deleted, or removed by a "
            "retention policy)",
            "build, stage, test and scan again",
        )
    return staged


def stage(selection: Selection, image: Image, opts: Options) -> str:
    rec = built(selection, image)
    if not rec.passed("build"):
        raise PipelineError(f"{image} has no successful build", f"nox -s build {image.select}")
    local_registry.ensure(opts.staging)
    ref = f"{opts.staging}:{staging_tag(image, rec)}"
    log.info("   %s (%s) -> %s", image, rec.image_id[:19], ref)
    digest = engine.push_as(rec.image_id, ref, keep_tag=False)
    if remote_registry.serves(ref, rec.image_id) != digest:
        raise RefusedError(
            f"{ref}: the registry serves {remote_registry.digest(ref)}, not the image just pushed ({digest})",
            "check who else pushes to the staging repository, then stage again",
        )
    section = record.Staged(
        ok=True,
        image_id=rec.image_id,
        repository=opts.staging,
        digest=digest,
        reference=ref,
        finished=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )
    selection.store.save_section(image.variant.name, image.flavor, "stage", section)
    log.info("== staged %s", section.by_digest)
    return section.by_digest
