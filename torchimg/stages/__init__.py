"""The pipeline's stages: one module per nox session, each of the same shape.

    HELP                     one line for `python -m torchimg -h`
    SELECTS                  "images" (variants x flavors), "variants", or "nothing"
    Options                  a frozen dataclass: what the stage takes besides the images
    arguments(parser)        its command-line options
    options(args, settings)  Options from the parsed command line (flag > environment > variants.toml)
    run(selection, options)  -> StageResult

`run` goes over every selected image; one that fails does not stop the others, and the
result ends in one summary line and the exit status of the worst failure.
"""

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from torchimg import output
from torchimg.adapters import emulation, engine
from torchimg.errors import PipelineError, RefusedError, debugging, unclassified, worst
from torchimg.model import record
from torchimg.model.variants import Config, Variant
from torchimg.output import log


@dataclass(frozen=True)
class Image:
    """One image of the matrix: a variant in one flavor."""

    variant: Variant
    flavor: str

    def __str__(self) -> str:
        return f"{self.variant.name} {self.flavor}"

    @property
    def select(self) -> str:
        """The options that name this image again, for fixes: `-- --variant V --flavor F`."""
        return f"-- --variant {self.variant.name} --flavor {self.flavor}"


@dataclass(frozen=True)
class Selection:
    """What a stage runs on: the declared matrix, the images chosen, the reports folder."""

    config: Config
    images: tuple[Image, ...]
    reports: Path
    # str(image) -> `repository@sha256:...`: run on that pulled digest, not on a local build
    pulls: dict[str, str] = field(default_factory=dict)

    @property
    def store(self) -> record.Store:
        return record.Store(self.reports)

    def variants(self) -> list[Variant]:
        """The selected variants, each once, in order."""
        return list({image.variant.name: image.variant for image in self.images}.values())

    def folder(self, image: Image) -> Path:
        """reports/<variant>-<flavor>/: the stage outputs of one image."""
        out = self.reports / f"{image.variant.name}-{image.flavor}"
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file of that name, a broken link, no permission
            raise PipelineError(
                f"cannot make the reports folder {out} ({exc.strerror or exc})",
                f"remove or rename what is at {out}, or choose another --reports / $TORCHIMG_REPORTS",
            ) from None
        return out


@dataclass
class StageResult:
    stage: str
    done: list[str] = field(default_factory=list)
    failed: list[tuple[str, PipelineError]] = field(default_factory=list)

    def raise_for_failures(self) -> None:
        """One summary line; a PipelineError with the worst exit status when anything failed."""
        total = len(self.done) + len(self.failed)
        if not self.failed:
            log.info("== %s: %d of %d done", self.stage, total, total)
            return
        summary = PipelineError(
            f"{self.stage}: {len(self.done)} of {total} done; failed: "
            + ", ".join(f"{name} (exit {exc.exit_code})" for name, exc in self.failed)
        )
        summary.exit_code = worst([exc.exit_code for _, exc in self.failed])
        raise summary


def each(stage: str, names: list[str], step: Callable[[int], object]) -> StageResult:
    """Run `step(i)` for each named item, in a folded group each; go on past a failing one."""
    result = StageResult(stage)
    for i, name in enumerate(names):
        with output.group(f"{stage} {name}"):
            try:
                step(i)
                result.done.append(name)
            except PipelineError as exc:
                log.error("%s of %s: %s", stage, name, exc)
                result.failed.append((name, exc))
            except Exception as exc:  # unclassified: still a failed item, and the loop goes on
                if debugging():
                    traceback.print_exc()
                error = unclassified(exc)
                log.error("%s of %s: %s", stage, name, error)
                result.failed.append((name, error))
    return result


def each_image(stage: str, selection: Selection, step: Callable[[Image], object]) -> StageResult:
    return each(stage, [str(i) for i in selection.images], lambda i: step(selection.images[i]))


def built(selection: Selection, image: Image, every_platform: bool = True) -> record.Record:
    """The record of this image, if its tag still names the image it describes: later stages
    never report on another image than the one they ran on. An image chosen by digest
    (`--image`, `--staged`) is pulled, and must be the very image its record describes; with
    every platform of it, unless `every_platform` is False (only this machine's is used)."""
    rec = selection.store.read(image.variant.name, image.flavor)
    ref = selection.pulls.get(str(image))
    if ref is not None and rec is not None:
        log.info("   pulling %s", ref)
        pulled = engine.pull(ref)
        for platform in (p for p in rec.build.platforms if every_platform and not emulation.native(p)):
            log.info("   pulling %s for %s (every platform of the index is read)", ref, platform)
            pulled = engine.pull(ref, platform)
        if pulled != rec.image_id:
            raise RefusedError(
                f"{ref} is {pulled[:19]} in this engine, not {rec.image_id[:19]}, the image the "
                f"record of {image} describes",
                "use an engine with the containerd image store on every runner (`docker info`: "
                "driver-type io.containerd.snapshotter.v1), so an image ID is its digest everywhere",
            )
        return rec
    if rec is None or engine.image_id(rec.tags[0]) != rec.image_id:
        raise PipelineError(
            f"no built {image.flavor} image of {image.variant.name} matches its record"
            + ("" if rec is None else f" ({rec.tags[0]} no longer names {rec.image_id[:19]})"),
            f"nox -s build {image.select}",
        )
    return rec
