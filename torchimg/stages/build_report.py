"""`nox -s build_report`: build benchmarks for one variant, figures side by side.

With --platforms, the figures per platform instead: each of the variant's platforms built
alone from an empty cache (runtime, then dev), the time of its emulated steps, its sizes
uncompressed and compressed, and the bytes its flavors share in a registry.

In one run, on one base: a cold build (BuildKit cache pruned), no-op rebuilds, a rebuild after
a dev-only lock change, a second cache-less build (reproducibility), sizes with a layer
breakdown, what a registry receives (bytes shared by runtime and dev, bytes pushed for a
dev-only change, gzip against zstd), a rebuild from a registry cache with this project's
images and BuildKit's cache removed (an empty runner), and the same for the naive
single-stage Dockerfile in docker/baseline/. It prunes the cache and removes this project's
images: run it on a build machine, not next to work in progress.
Figures are measured, never asserted: this is a report, not a timed test.
"""

import argparse
import contextlib
import dataclasses
import datetime
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchimg import build_report_text, buildlog, devtools, image_sizes, paths
from torchimg.adapters import emulation, engine, local_registry
from torchimg.errors import ToolError
from torchimg.model import labels
from torchimg.model.credentials import Credentials
from torchimg.model.variants import Config, Variant
from torchimg.output import log
from torchimg.settings import Settings
from torchimg.stages import Image, Selection, StageResult, build, each

HELP = "benchmark the build against the naive baseline"
SELECTS = "variants"
REPOSITORY = "torchimg-bench/pytorch"
_BENCH = tuple(REPOSITORY + suffix for suffix in ("", "-changed", "-zstd", "-again", "-amd64", "-arm64"))
# The Dockerfile's stages that run on the image's own platform (the others run on the build
# machine's): for another platform, their RUN steps are the emulated ones.
TARGET_STAGES = ("python", "runtime", "dev")


def _repositories(config: Config) -> tuple[str, ...]:
    """Every repository whose images could hold the variant's layers: removed before the
    registry-cache rebuild, so that the engine has nothing to reuse (an empty runner)."""
    return (*_BENCH, config.repository, "torchimg-test/pytorch", "torchimg-locker")


@dataclass(frozen=True)
class Options:
    base: str | None = None
    creds: Credentials = field(default_factory=Credentials)
    platforms: bool = False


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base", metavar="REF", help="build on this base image (default: $TORCHIMG_BASE)")
    p.add_argument(
        "--platforms",
        action="store_true",
        help="only the figures per platform: each of the variant's platforms built alone, cold",
    )
    p.add_argument("--ca-bundle", metavar="PATH", help="extra CA bundle for the package index")
    p.add_argument("--netrc", metavar="PATH", help="netrc with private-index credentials")


def options(args: argparse.Namespace, settings: Settings) -> Options:
    return Options(settings.base(args.base), settings.credentials(args.ca_bundle, args.netrc), args.platforms)


def run(selection: Selection, opts: Options) -> StageResult:
    variant = selection.variants()[0]

    def report(_: int) -> None:
        if opts.platforms:
            figures = measure_platforms(selection.config, variant, opts.base, opts.creds)
        else:
            figures = measure(selection.config, variant, opts.base, opts.creds)
        print(build_report_text.write(figures, selection.reports).read_text())

    return each("build_report", [variant.name], report)


@contextlib.contextmanager
def _report_registry(folder: Path) -> Iterator[local_registry.Local]:
    """A registry of the report's own on a free port, removed with its contents after."""
    reg = local_registry.Local.on_free_port(folder / "registry")
    reg.start()
    try:
        yield reg
    finally:
        reg.stop()


def _drop_package(lock: Path, name: str) -> None:
    """Remove one requirement block from a lockfile copy: a dev-only lock change."""
    out, skip = [], False
    for line in lock.read_text().splitlines(keepends=True):
        if line[:1].isalnum():
            skip = line.lower().startswith(f"{name}==")
        if not skip:
            out.append(line)
    lock.write_text("".join(out))


def _timed(selection: Selection, opts: build.Options) -> dict[str, Any]:
    start = time.monotonic()
    rec, log_lines = build.build(selection, selection.images[0], opts)
    return {
        "seconds": round(time.monotonic() - start, 1),
        "image_id": rec.image_id,
        "tag": rec.tags[0],
        "steps": [dataclasses.asdict(s) for s in buildlog.steps(log_lines) if s.seconds >= 0.5],
        "builder_cached": not buildlog.ran(log_lines, "builder"),
        "torch_downloaded": any("Downloading torch-" in line for line in log_lines),
        "pip_ran": buildlog.ran(log_lines, "builder") or buildlog.ran(log_lines, "builder-dev"),
        "target_run_seconds": buildlog.run_seconds(log_lines, TARGET_STAGES),
    }


def _naive(variant: Variant, base: str, creds: Credentials) -> dict[str, Any]:
    tag = f"{REPOSITORY}:{variant.name}-naive"
    result = engine.build(
        context=variant.lock_dir,
        dockerfile=paths.DOCKER / "baseline" / "Dockerfile",
        target=None,
        tags=[tag],
        build_args={"BASE_IMAGE": base, "TORCH_INDEX": variant.index},
        contexts={},
        secrets=creds.buildkit_secrets(),
        labels={labels.VARIANT: variant.name},
        what="the naive baseline",
    )
    return {
        "seconds": round(result.seconds, 1),
        "image_id": result.image_id,
        "tag": tag,
        "steps": [dataclasses.asdict(s) for s in buildlog.steps(result.log) if s.seconds >= 0.5],
    }


def _pushed_layers(local_tag: str, ref: str) -> dict[str, int]:
    """Push an image to the report's registry; its layer blobs (digest -> bytes) there."""
    engine.push_as(local_tag, ref)
    manifest = json.loads(engine.imagetools(ref) or "{}")
    if not manifest.get("layers"):
        raise ToolError(f"{ref}: no layers in what the registry serves", "an index? build one platform")
    return {str(x["digest"]): int(x.get("size") or 0) for x in manifest["layers"]}


def registry_figures(out: dict[str, Any], host: str) -> dict[str, Any]:
    """What a registry holds and receives: shared layers, dev-only change, gzip vs zstd."""
    repo = f"{host}/torchimg-bench"
    rt = _pushed_layers(out["cold_runtime"]["tag"], f"{repo}:runtime")
    dev = _pushed_layers(out["cold_dev"]["tag"], f"{repo}:dev")
    changed = _pushed_layers(out["dev_change"]["tag"], f"{repo}:dev-changed")
    zstd = _pushed_layers(out["zstd_runtime"]["tag"], f"{repo}:runtime-zstd")
    dev_zstd = _pushed_layers(out["zstd_dev"]["tag"], f"{repo}:dev-zstd")
    shared = set(rt) & set(dev)
    return {
        "runtime_gzip": sum(rt.values()),
        "dev_gzip": sum(dev.values()),
        "runtime_zstd": sum(zstd.values()),
        "dev_zstd": sum(dev_zstd.values()),
        "shared_layers": len(shared),
        "runtime_layers": len(rt),
        "dev_shares_every_runtime_layer": set(rt) <= set(dev),
        "shared_bytes": sum(rt[d] for d in shared),
        "dev_adds_bytes": sum(v for d, v in dev.items() if d not in rt),
        "dev_change_pushed_bytes": sum(v for d, v in changed.items() if d not in rt and d not in dev),
        "dev_change_new_layers": len([d for d in changed if d not in rt and d not in dev]),
    }


def _header(variant: Variant, base_ref: str) -> dict[str, Any]:
    """What every report starts with: the variant, the base, when, on which engine."""
    return {
        "variant": variant.name,
        "base": base_ref,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "engine": engine.server_version(),
    }


def measure(config: Config, variant: Variant, base: str | None, creds: Credentials) -> dict[str, Any]:
    """Run every measurement; return the figures (also written under reports/)."""
    base_ref = base or variant.base.image
    opts = build.Options(repository=REPOSITORY, base=base, creds=creds)
    out = _header(variant, base_ref)
    with (
        tempfile.TemporaryDirectory(prefix="torchimg-report-") as tmp,
        _report_registry(Path(tmp)) as reg,
    ):
        # benchmark builds keep their records in the temp folder, never replacing a user's
        def _build(variant: Variant, flavor: str, opts: build.Options) -> dict[str, Any]:
            return _timed(Selection(config, (Image(variant, flavor),), Path(tmp)), opts)

        cached = dataclasses.replace(opts, cache_repository=f"{reg.host}/torchimg-bench-cache")
        log.info("== build report: %s", "pruning BuildKit's cache: the next build is cold")
        engine.prune_build_cache()
        log.info("== build report: %s", "cold build, runtime")
        out["cold_runtime"] = _build(variant, "runtime", opts)
        log.info("== build report: %s", "dev on top of runtime")
        out["cold_dev"] = _build(variant, "dev", opts)
        log.info("== build report: %s", "no-op rebuilds")
        out["noop_runtime"] = _build(variant, "runtime", opts)
        out["noop_dev"] = _build(variant, "dev", opts)
        log.info("== build report: %s", "dev-only lock change (tqdm dropped from a copy of dev.txt)")
        locks = Path(tmp) / "locks"
        shutil.copytree(variant.lock_dir, locks)
        _drop_package(locks / "dev.txt", "tqdm")
        changed = dataclasses.replace(variant, lock_dir=locks)
        out["dev_change"] = _build(
            changed, "dev", dataclasses.replace(opts, repository=REPOSITORY + "-changed")
        )
        log.info("== build report: %s", "zstd layer compression")
        zstd = dataclasses.replace(opts, compression="zstd", repository=REPOSITORY + "-zstd")
        out["zstd_runtime"] = _build(variant, "runtime", zstd)
        out["zstd_dev"] = _build(variant, "dev", zstd)
        log.info(
            "== build report: %s",
            "pushing to a registry of the report's own: shared bytes, dev-only change, zstd",
        )
        out["registry"] = registry_figures(out, reg.host)
        log.info("== build report: %s", "second cache-less runtime build (reproducibility)")
        out["nocache_runtime"] = _build(
            variant, "runtime", dataclasses.replace(opts, cache=False, repository=REPOSITORY + "-again")
        )
        log.info("== build report: %s", "sizes (reading every layer)")
        out["size_runtime"] = image_sizes.sizes(out["cold_runtime"]["tag"], base_ref)
        out["size_dev"] = image_sizes.sizes(out["cold_dev"]["tag"], base_ref)
        again = image_sizes.sizes(out["nocache_runtime"]["tag"], base_ref)
        out["reproducible"] = {
            "same_image_id": out["cold_runtime"]["image_id"] == out["nocache_runtime"]["image_id"],
            "differing_layers": [
                {"layer": i, "what": row["what"]}
                for i, (row, a, b) in enumerate(
                    zip(
                        out["size_runtime"]["layers"],
                        out["size_runtime"]["diff_ids"],
                        again["diff_ids"],
                        strict=False,
                    )
                )
                if a != b
            ],
        }
        log.info(
            "== build report: %s",
            "registry cache: export (a no-op build that exports), then an empty machine rebuilds",
        )
        out["cache_export_runtime"] = _build(variant, "runtime", cached)
        # As on a fresh runner: no build cache and no image holding these layers; otherwise
        # BuildKit finds the layers locally and downloads nothing.
        engine.prune_build_cache()
        devtools.remove_project_images(_repositories(config))
        out["cache_import_runtime"] = _build(
            variant, "runtime", dataclasses.replace(cached, cache_export=False)
        )
        out["cache_import_runtime"]["same_image_id"] = (
            out["cache_import_runtime"]["image_id"] == out["cold_runtime"]["image_id"]
        )
        log.info("== build report: %s", "naive single-stage baseline, cold")
        engine.prune_build_cache()
        out["naive"] = _naive(variant, base_ref, creds)
        out["size_naive"] = image_sizes.sizes(out["naive"]["tag"], base_ref)
    devtools.remove_project_images(_BENCH)
    return out


def measure_platforms(
    config: Config, variant: Variant, base: str | None, creds: Credentials
) -> dict[str, Any]:
    """Each platform of the variant built alone from an empty cache, runtime then dev: build
    times, the emulated steps' time, sizes, bytes the flavors share in a registry."""
    base_ref = base or variant.base.image
    out = _header(variant, base_ref) | {"platforms": {}}
    with (
        tempfile.TemporaryDirectory(prefix="torchimg-report-") as tmp,
        _report_registry(Path(tmp)) as reg,
    ):
        unpacked: dict[str, int] = {}  # digest -> bytes: layers both flavors share are read once
        for platform in variant.platforms:
            arch = platform.rsplit("/", 1)[-1]
            one = dataclasses.replace(variant, platforms=(platform,))
            opts = build.Options(repository=f"{REPOSITORY}-{arch}", base=base, creds=creds)
            log.info("== build report: %s: pruning BuildKit's cache, cold runtime then dev", platform)
            engine.prune_build_cache()
            figures: dict[str, Any] = {"emulated": not emulation.native(platform)}
            try:
                for flavor in ("runtime", "dev"):
                    built = _timed(Selection(config, (Image(one, flavor),), Path(tmp)), opts)
                    repo = f"torchimg-bench-{arch}"
                    pushed = _pushed_layers(built["tag"], f"{reg.host}/{repo}:{flavor}")
                    for digest in pushed:
                        if digest not in unpacked:
                            unpacked[digest] = reg.unpacked_bytes(repo, digest)
                    figures[flavor] = {
                        "seconds": built["seconds"],
                        "image_id": built["image_id"],
                        # RUN steps of the stages on the image's platform: emulated if foreign
                        "target_run_seconds": built["target_run_seconds"],
                        "steps": built["steps"],
                        # the layers' tar streams, read back from the registry (any platform)
                        "uncompressed": sum(unpacked[d] for d in pushed),
                        "compressed": sum(pushed.values()),
                        "layers": pushed,
                    }
            finally:
                devtools.remove_project_images((opts.repository,))
            rt, dev = figures["runtime"]["layers"], figures["dev"]["layers"]
            figures["shared_bytes"] = sum(size for digest, size in rt.items() if digest in dev)
            figures["dev_shares_every_runtime_layer"] = set(rt) <= set(dev)
            out["platforms"][platform] = figures
    return out
