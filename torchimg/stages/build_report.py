"""`nox -s build_report`: build benchmarks for one variant, figures side by side.

Every build and pull runs on an empty engine of the report's own (a second dockerd with its
own data root, started and deleted by the report), as on a new CI runner: nothing the main
engine holds can speed it up, and the main engine's images and cache are left alone. The base
image reaches those engines through a registry of the report's own, as it would a runner.

In one run: a cold build in the default layer compression, dev on top, no-op rebuilds, a
rebuild after a dev-only lock change, the other compression from the same cache, what a
registry receives (bytes shared by runtime and dev, bytes pushed for a dev-only change),
sizes with a layer breakdown; then, each on a new empty engine: a second cold build
(reproducibility, against the first cold build as it was built), a cold build in the other
compression, one in the default compression at its fastest level, a rebuild from the registry
cache, pull-to-first-container for each of the three, and the naive single-stage Dockerfile in
docker/baseline/. A commit during the run stops it: the commit is one of the image's labels.

With --platforms, the figures per platform instead (on the main engine): each of the
variant's platforms built alone from an empty cache (runtime, then dev), the time of its
emulated steps, its sizes uncompressed and compressed, and the bytes its flavors share.
Figures are measured, never asserted: this is a report, not a timed test.
"""

import argparse
import contextlib
import dataclasses
import datetime
import itertools
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchimg import build_report_text, buildlog, devtools, image_inputs, image_sizes, paths
from torchimg.adapters import emulation, engine, local_registry
from torchimg.errors import PipelineError, ToolError
from torchimg.model import labels
from torchimg.model.credentials import Credentials
from torchimg.model.variants import Config, Variant
from torchimg.output import log
from torchimg.settings import Settings
from torchimg.stages import Image, Selection, StageResult, build, each

HELP = "benchmark the build against the naive baseline"
SELECTS = "variants"
REPOSITORY = "torchimg-bench/pytorch"
DEFAULT = build.DEFAULT_COMPRESSION
OTHER = "gzip" if DEFAULT != "gzip" else "zstd"
# zstd at its fastest encoder speed, measured beside BuildKit's default level.
FAST_LEVEL = 1
# The Dockerfile's stages that run on the image's own platform (the others run on the build
# machine's): for another platform, their RUN steps are the emulated ones.
TARGET_STAGES = ("python", "runtime", "dev")


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
    chosen = selection.variants()
    if len(chosen) != 1:
        raise PipelineError(
            f"the build report measures one variant; {len(chosen)} were selected "
            f"({', '.join(v.name for v in chosen)})",
            "give one --variant",
        )
    variant = chosen[0]
    for flavor in variant.flavors:  # every input checked before an engine or registry is started
        image_inputs.check(variant, flavor, opts.base)

    def report(_: int) -> None:
        if opts.platforms:
            figures = measure_platforms(selection.config, variant, opts.base, opts.creds)
        else:
            figures = {}
            try:
                measure(selection.config, variant, opts.base, opts.creds, figures)
            except BaseException:  # what was measured is kept for the next try, never as the report
                if set(figures) - _HEADER_KEYS:  # nothing measured: an earlier try's figures stay
                    partial = selection.reports / "build-report.partial.json"
                    partial.parent.mkdir(parents=True, exist_ok=True)
                    partial.write_text(json.dumps(figures, indent=2) + "\n")
                    log.error("   the figures measured before the failure: %s", partial)
                raise
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
        "revision": rec.inputs.git.revision,
        "docker_sha256": rec.inputs.docker_sha256,
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


def json_differences(a: Any, b: Any, path: str = "") -> list[str]:
    """The paths (`layers[2].digest`, `history[7].created`) where two JSON documents differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [
            d
            for key in sorted(set(a) | set(b), key=str)
            for d in (
                json_differences(a[key], b[key], f"{path}.{key}" if path else str(key))
                if key in a and key in b
                else [f"{path}.{key}" if path else str(key)]
            )
        ]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path or '(document)'} (length {len(a)} != {len(b)})"]
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in json_differences(x, y, f"{path}[{i}]")
        ]
    return [] if a == b else [path or "(document)"]


def _pushed_differences(ref_a: str, ref_b: str) -> list[str]:
    """Manifest and config fields that differ between two images in the report's registry."""
    out = []
    for what, fmt in (("manifest", None), ("config", "{{json .Image}}")):
        a, b = (json.loads(engine.imagetools(ref, fmt) or "{}") for ref in (ref_a, ref_b))
        out += [f"{what}: {d}" for d in json_differences(a, b)]
    return out


def _manifest_layers(ref: str) -> list[dict[str, Any]]:
    """The layer descriptors of an image in the report's registry, in order."""
    manifest = json.loads(engine.imagetools(ref) or "{}")
    if not manifest.get("layers"):
        raise ToolError(f"{ref}: no layers in what the registry serves", "an index? build one platform")
    return list(manifest["layers"])


def _blobs(ref: str) -> list[str]:
    return [str(x["digest"]) for x in _manifest_layers(ref)]


def _count(what: str, a: list[Any], b: list[Any]) -> list[Any]:
    return [f"{what} {len(a)} != {len(b)}"] if len(a) != len(b) else []


def _pushed_layers(local_tag: str, ref: str) -> dict[str, int]:
    """Push an image to the report's registry; its layer blobs (digest -> bytes) there."""
    engine.push_as(local_tag, ref)
    return {str(x["digest"]): int(x.get("size") or 0) for x in _manifest_layers(ref)}


def registry_figures(out: dict[str, Any], host: str) -> dict[str, Any]:
    """What a registry holds and receives: shared layers, dev-only change, the default
    compression against the other one."""
    repo = f"{host}/torchimg-bench"
    rt = _pushed_layers(out["cold_runtime"]["tag"], f"{repo}:runtime")
    dev = _pushed_layers(out["cold_dev"]["tag"], f"{repo}:dev")
    changed = _pushed_layers(out["dev_change"]["tag"], f"{repo}:dev-changed")
    other_rt = _pushed_layers(out["other_runtime"]["tag"], f"{repo}:runtime-{OTHER}")
    other_dev = _pushed_layers(out["other_dev"]["tag"], f"{repo}:dev-{OTHER}")
    shared = set(rt) & set(dev)
    return {
        "runtime_blobs": list(rt),
        f"runtime_{DEFAULT}": sum(rt.values()),
        f"dev_{DEFAULT}": sum(dev.values()),
        f"runtime_{OTHER}": sum(other_rt.values()),
        f"dev_{OTHER}": sum(other_dev.values()),
        "shared_layers": len(shared),
        "runtime_layers": len(rt),
        "dev_shares_every_runtime_layer": set(rt) <= set(dev),
        "shared_bytes": sum(rt[d] for d in shared),
        "dev_adds_bytes": sum(v for d, v in dev.items() if d not in rt),
        "dev_change_pushed_bytes": sum(v for d, v in changed.items() if d not in rt and d not in dev),
        "dev_change_new_layers": len([d for d in changed if d not in rt and d not in dev]),
    }


def _first_container(ref: str) -> dict[str, Any]:
    """A new node's wait: pull the image, then start `python -c "import torch"` in it."""
    start = time.monotonic()
    engine.pull(ref)
    pulled = time.monotonic() - start
    engine.run(ref, ["python", "-c", "import torch"])
    return {"ref": ref, "pull_seconds": round(pulled, 1), "seconds": round(time.monotonic() - start, 1)}


# What a report holds before anything is measured (the header, and the compressions compared).
_HEADER_KEYS = {"variant", "base", "date", "engine", "compression", "other_compression"}


def _header(variant: Variant, base_ref: str) -> dict[str, Any]:
    """What every report starts with: the variant, the base, when, on which engine."""
    return {
        "variant": variant.name,
        "base": base_ref,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "engine": engine.server_version(),
    }


def measure(
    config: Config, variant: Variant, base: str | None, creds: Credentials, out: dict[str, Any]
) -> None:
    """Run every measurement, filling `out` as it goes (also written under reports/). Every
    build and pull runs on an empty engine of the report's own (a new runner), never on the
    main one."""
    base_ref = base or variant.base.image
    out |= _header(variant, base_ref) | {"compression": DEFAULT, "other_compression": OTHER}
    with (
        tempfile.TemporaryDirectory(prefix="torchimg-report-") as tmp,
        _report_registry(Path(tmp)) as reg,
    ):
        # A new runner pulls its base from a registry: the base goes through the report's own.
        base_copy = f"{reg.host}/torchimg-bench-base:{variant.name}"
        engine.push_as(base_ref, base_copy)
        opts = build.Options(repository=REPOSITORY, base=base_copy, creds=creds, compression=DEFAULT)
        other = dataclasses.replace(opts, compression=OTHER, repository=f"{REPOSITORY}-{OTHER}")
        fast = dataclasses.replace(opts, compression_level=FAST_LEVEL, repository=f"{REPOSITORY}-fast")
        cached = dataclasses.replace(opts, cache_repository=f"{reg.host}/torchimg-bench-cache")

        # benchmark builds keep their records in the temp folder, never replacing a user's
        def _build(variant: Variant, flavor: str, opts: build.Options) -> dict[str, Any]:
            timed = _timed(Selection(config, (Image(variant, flavor),), Path(tmp)), opts)
            for key, what in (("revision", "git commit"), ("docker_sha256", "docker/ folder")):
                # the commit is a label of the image, docker/ its recipe: builds would differ by it
                if timed[key] != out.setdefault(key, timed[key]):
                    raise PipelineError(
                        f"the {what} changed during the report ({out[key][:12]} -> {timed[key][:12]}): "
                        "its images are not comparable",
                        "run the report again; commit nothing and leave docker/ alone until it ends",
                    )
            return timed

        engines = itertools.count(1)

        def _empty(what: str) -> contextlib.AbstractContextManager[str]:
            log.info("== build report: %s", f"{what}, on an empty engine")
            return engine.empty_engine(str(next(engines)))

        with _empty(f"cold build, runtime ({DEFAULT}), then dev, no-op rebuilds, a lock change"):
            out["cold_runtime"] = _build(variant, "runtime", opts)
            # a tag of its own: the no-op rebuild below takes the build's tag, and every figure
            # of "runtime" (sizes, registry, pull) is this image's, as built
            cold_tag = f"{REPOSITORY}:{variant.name}-cold"
            engine.tag(out["cold_runtime"]["tag"], cold_tag)
            out["cold_runtime"]["tag"] = cold_tag
            out["cold_dev"] = _build(variant, "dev", opts)
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
            log.info("== build report: %s", f"{OTHER} layers from the same cache (compression only)")
            out["other_runtime"] = _build(variant, "runtime", other)
            out["other_dev"] = _build(variant, "dev", other)
            log.info("== build report: %s", "pushing to the report's registry: shared bytes, a lock change")
            out["registry"] = registry_figures(out, reg.host)
            log.info("== build report: %s", "exporting the registry cache (a no-op build that exports)")
            out["cache_export_runtime"] = _build(variant, "runtime", cached)
            log.info("== build report: %s", "sizes (reading every layer)")
            engine.pull(base_copy)  # BuildKit fetched its layers; the sizes need it as an image
            out["size_runtime"] = image_sizes.sizes(out["cold_runtime"]["tag"], base_copy)
            out["size_dev"] = image_sizes.sizes(out["cold_dev"]["tag"], base_copy)
        with _empty(f"a second cold build, runtime ({DEFAULT}): reproducibility"):
            out["cold_again"] = _build(variant, "runtime", opts)
            again = engine.layer_ids(out["cold_again"]["tag"])
            # the compressed blobs too: the same tar streams can still compress differently
            _pushed_layers(out["cold_again"]["tag"], f"{reg.host}/torchimg-bench:again")
        with _empty(f"a cold build, runtime, with {OTHER} layers"):
            out["cold_other"] = _build(variant, "runtime", other)
            out["cold_other"]["same_layers"] = engine.layer_ids(out["cold_other"]["tag"]) == again
        with _empty(f"a cold build, runtime, with {DEFAULT} layers at level {FAST_LEVEL}"):
            out["cold_fast"] = _build(variant, "runtime", fast)
            out["cold_fast"]["level"] = FAST_LEVEL
            out["cold_fast"]["same_layers"] = engine.layer_ids(out["cold_fast"]["tag"]) == again
            out["cold_fast"]["registry_bytes"] = sum(
                _pushed_layers(out["cold_fast"]["tag"], f"{reg.host}/torchimg-bench:runtime-fast").values()
            )
        cold_layers = out["size_runtime"]["diff_ids"]
        cold_blobs, blobs_again = (
            _blobs(f"{reg.host}/torchimg-bench:{name}") for name in ("runtime", "again")
        )
        out["reproducible"] = {
            "same_image_id": out["cold_runtime"]["image_id"] == out["cold_again"]["image_id"],
            "noop_same_image_id": out["cold_runtime"]["image_id"] == out["noop_runtime"]["image_id"],
            "differing_layers": [
                {"layer": i, "what": row["what"]}
                for i, (row, a, b) in enumerate(
                    zip(out["size_runtime"]["layers"], cold_layers, again, strict=False)
                )
                if a != b
            ]
            + _count("layer count", cold_layers, again),
            "differing_blobs": [
                i for i, (a, b) in enumerate(zip(cold_blobs, blobs_again, strict=False)) if a != b
            ]
            + _count("blob count", cold_blobs, blobs_again),
            # the image ID is the manifest's digest: where the two manifests and configs part
            "differing_fields": _pushed_differences(
                f"{reg.host}/torchimg-bench:runtime", f"{reg.host}/torchimg-bench:again"
            ),
        }
        with _empty("a rebuild from the registry cache"):
            out["cache_import_runtime"] = _build(
                variant, "runtime", dataclasses.replace(cached, cache_export=False)
            )
            out["cache_import_runtime"]["same_image_id"] = (
                out["cache_import_runtime"]["image_id"] == out["cold_runtime"]["image_id"]
            )
        for key, what, suffix in (
            (DEFAULT, DEFAULT, ""),
            (OTHER, OTHER, f"-{OTHER}"),
            ("fast", f"{DEFAULT} level {FAST_LEVEL}", "-fast"),
        ):
            with _empty(f"pull to first container, {what} layers"):
                out[f"first_container_{key}"] = _first_container(f"{reg.host}/torchimg-bench:runtime{suffix}")
        with _empty("the naive single-stage baseline, cold"):
            out["naive"] = _naive(variant, base_copy, creds)
            engine.pull(base_copy)
            out["size_naive"] = image_sizes.sizes(out["naive"]["tag"], base_copy)


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
