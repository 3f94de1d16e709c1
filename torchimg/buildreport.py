"""`nox -s build_report`: build benchmarks for one variant, figures side by side.

In one run, on one base: a cold build (BuildKit cache pruned), no-op rebuilds, a rebuild after
a dev-only lock change, a second cache-less build (reproducibility), sizes with a layer
breakdown, what a registry receives (bytes shared by runtime and dev, bytes pushed for a
dev-only change, gzip against zstd), a rebuild from a registry cache with this project's
images and BuildKit's cache removed (an empty runner), and the same for the naive
single-stage Dockerfile in docker/baseline/. It prunes the cache and removes this project's
images: run it on a build machine, not next to work in progress.
Figures are measured, never asserted: this is a report, not a timed test.
"""

import contextlib
import dataclasses
import datetime
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from plumbum import local
from python_on_whales import docker

from torchimg import build, buildlog, devtools, engine, layers, paths, registry
from torchimg.credentials import Credentials
from torchimg.variants import Variant

REPOSITORY = "torchimg-bench/pytorch"
_CATEGORIES = (
    ("/layers/nvidia/", "venv: NVIDIA libraries"),
    ("/layers/torch/", "venv: torch + triton"),
    ("/layers/rest/", "venv: the rest"),
    ("/layers/dev/", "dev: Jupyter + science stack"),
    ("g++", "toolchain: g++, Python headers; user"),
    ("apt-install python3", "Python (Debian)"),
)


@contextlib.contextmanager
def _report_registry(folder: Path) -> Iterator[registry.Local]:
    """A registry of the report's own on a free port, removed with its contents after."""
    reg = registry.Local.on_free_port(folder / "registry")
    reg.start()
    try:
        yield reg
    finally:
        reg.stop()


@contextlib.contextmanager
def records_elsewhere(folder: Path) -> Iterator[None]:
    """Benchmark builds must not replace the records of the images a user built."""
    old = os.environ.get("TORCHIMG_REPORTS")
    os.environ["TORCHIMG_REPORTS"] = str(folder)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TORCHIMG_REPORTS", None)
        else:
            os.environ["TORCHIMG_REPORTS"] = old


def _say(text: str) -> None:
    print(f"== build report: {text}", file=sys.stderr, flush=True)


def _drop_package(lock: Path, name: str) -> None:
    """Remove one requirement block from a lockfile copy: a dev-only lock change."""
    out, skip = [], False
    for line in lock.read_text().splitlines(keepends=True):
        if line[:1].isalnum():
            skip = line.lower().startswith(f"{name}==")
        if not skip:
            out.append(line)
    lock.write_text("".join(out))


def _history(image: str) -> list[str]:
    """CreatedBy of each non-empty layer, oldest first (the order of the manifest's layers)."""
    lines = local["docker"]("history", "--no-trunc", "--format", "{{json .}}", image).splitlines()
    entries = [json.loads(line) for line in lines if line.strip()]
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
    base_layers = len(docker.image.inspect(base).root_fs.layers or [])
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
        "diff_ids": list(docker.image.inspect(image).root_fs.layers or []),
    }


def _build(variant: Variant, flavor: str, opts: build.BuildOptions) -> dict[str, Any]:
    start = time.monotonic()
    rec, log = build.build_with_log(variant, flavor, opts)
    return {
        "seconds": round(time.monotonic() - start, 1),
        "image_id": rec.image_id,
        "tag": rec.tags[0],
        "steps": [dataclasses.asdict(s) for s in buildlog.steps(log) if s.seconds >= 0.5],
        "builder_cached": not buildlog.ran(log, "[builder "),
        "torch_downloaded": any("Downloading torch-" in line for line in log),
        "pip_ran": buildlog.ran(log, "[builder ") or buildlog.ran(log, "[builder-dev "),
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
        labels={},
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
    manifest = docker.buildx.imagetools.inspect(ref)
    return {str(x.digest): int(x.size or 0) for x in manifest.layers or []}


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


def run(variant: Variant, base: str | None, creds: Credentials) -> dict[str, Any]:
    """Run every measurement; return the figures (also written under reports/)."""
    base_ref = base or variant.base.image
    opts = build.BuildOptions(base=base, creds=creds, repository=REPOSITORY)
    out: dict[str, Any] = {
        "variant": variant.name,
        "base": base_ref,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "engine": engine.server_version(),
    }
    with (
        tempfile.TemporaryDirectory(prefix="torchimg-report-") as tmp,
        records_elsewhere(Path(tmp)),
        _report_registry(Path(tmp)) as reg,
    ):
        cached = dataclasses.replace(opts, cache_repository=f"{reg.host}/torchimg-bench-cache")
        _say("pruning BuildKit's cache: the next build is cold")
        docker.buildx.prune(all=True)
        _say("cold build, runtime")
        out["cold_runtime"] = _build(variant, "runtime", opts)
        _say("dev on top of runtime")
        out["cold_dev"] = _build(variant, "dev", opts)
        _say("no-op rebuilds")
        out["noop_runtime"] = _build(variant, "runtime", opts)
        out["noop_dev"] = _build(variant, "dev", opts)
        _say("dev-only lock change (tqdm dropped from a copy of dev.txt)")
        locks = Path(tmp) / "locks"
        shutil.copytree(variant.lock_dir, locks)
        _drop_package(locks / "dev.txt", "tqdm")
        changed = dataclasses.replace(variant, lock_dir=locks)
        out["dev_change"] = _build(
            changed, "dev", dataclasses.replace(opts, repository=REPOSITORY + "-changed")
        )
        _say("zstd layer compression")
        zstd = dataclasses.replace(opts, compression="zstd", repository=REPOSITORY + "-zstd")
        out["zstd_runtime"] = _build(variant, "runtime", zstd)
        out["zstd_dev"] = _build(variant, "dev", zstd)
        _say("pushing to a registry of the report's own: shared bytes, dev-only change, zstd")
        out["registry"] = registry_figures(out, reg.host)
        _say("second cache-less runtime build (reproducibility)")
        out["nocache_runtime"] = _build(
            variant, "runtime", dataclasses.replace(opts, cache=False, repository=REPOSITORY + "-again")
        )
        _say("sizes (reading every layer)")
        out["size_runtime"] = sizes(out["cold_runtime"]["tag"], base_ref)
        out["size_dev"] = sizes(out["cold_dev"]["tag"], base_ref)
        again = sizes(out["nocache_runtime"]["tag"], base_ref)
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
        _say("registry cache: export (a no-op build that exports), then an empty machine rebuilds")
        out["cache_export_runtime"] = _build(variant, "runtime", cached)
        # As on a fresh runner: no build cache and no image holding these layers; otherwise
        # BuildKit finds the layers locally and downloads nothing.
        docker.buildx.prune(all=True)
        devtools.remove_project_images()
        out["cache_import_runtime"] = _build(
            variant, "runtime", dataclasses.replace(cached, cache_export=False)
        )
        out["cache_import_runtime"]["same_image_id"] = (
            out["cache_import_runtime"]["image_id"] == out["cold_runtime"]["image_id"]
        )
        _say("naive single-stage baseline, cold")
        docker.buildx.prune(all=True)
        out["naive"] = _naive(variant, base_ref, creds)
        out["size_naive"] = sizes(out["naive"]["tag"], base_ref)
    devtools.remove_project_images(("torchimg-bench/",))
    return out


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB"


def markdown(r: dict[str, Any]) -> str:
    """The report as Markdown: one table of builds, one of sizes, a layer breakdown."""
    rt, dev, naive = r["size_runtime"], r["size_dev"], r["size_naive"]
    lines = [
        f"# Build report: {r['variant']} ({r['date']}, engine {r['engine']}, base {r['base']})",
        "",
        "| build | seconds | pip ran | torch downloaded |",
        "| --- | ---: | --- | --- |",
    ]
    for key, name in (
        ("cold_runtime", "cold (cache pruned), runtime"),
        ("cold_dev", "dev, after runtime"),
        ("noop_runtime", "no-op rebuild, runtime"),
        ("noop_dev", "no-op rebuild, dev"),
        ("dev_change", "dev-only lock change, dev"),
        ("nocache_runtime", "--no-cache, runtime"),
        ("cache_export_runtime", "no-op rebuild exporting the registry cache, runtime"),
        ("cache_import_runtime", "same engine, cache pruned, images removed, registry cache imported"),
        ("zstd_runtime", "zstd layers, runtime (cache warm)"),
        ("zstd_dev", "zstd layers, dev (cache warm)"),
    ):
        b = r[key]
        lines.append(f"| {name} | {b['seconds']} | {b['pip_ran']} | {b['torch_downloaded']} |")
    lines.append(f"| naive single stage (cache pruned) | {r['naive']['seconds']} | True | True |")
    imp, cold, g = r["cache_import_runtime"], r["cold_runtime"], r["registry"]
    lines += [
        "",
        f"Registry cache, same engine: with BuildKit's cache pruned and this project's images removed,"
        f" the rebuild took {imp['seconds']} s against {cold['seconds']} s cold; pip ran: "
        f"{imp['pip_ran']}; same image ID as the cold build: {imp['same_image_id']}. The engine's "
        "content store still held the layer blobs, so nothing was downloaded; a runner that "
        "never built the variant also downloads and unpacks the layers (not measured here).",
        "",
        "| in the registry | gzip | zstd |",
        "| --- | ---: | ---: |",
        f"| runtime (compressed layers) | {_gb(g['runtime_gzip'])} | {_gb(g['runtime_zstd'])} |",
        f"| dev (compressed layers) | {_gb(g['dev_gzip'])} | {_gb(g['dev_zstd'])} |",
        "",
        f"dev shares {g['shared_layers']} of runtime's {g['runtime_layers']} layers "
        f"(every one: {g['dev_shares_every_runtime_layer']}), {_gb(g['shared_bytes'])}; dev adds "
        f"{_gb(g['dev_adds_bytes'])} compressed. A dev-only lock change pushes "
        f"{g['dev_change_new_layers']} new layer(s), {g['dev_change_pushed_bytes'] / 1e6:.1f} MB.",
    ]
    lines += [
        "",
        "| image | uncompressed (files) | uncompressed (tar) | compressed (gzip blobs) | layers |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, s in (("runtime", rt), ("dev", dev), ("naive baseline", naive)):
        sizes_ = " | ".join(_gb(s[k]) for k in ("uncompressed", "tar", "compressed"))
        lines.append(f"| {name} | {sizes_} | {len(s['layers'])} |")
    lines += [
        "",
        f"dev / naive: uncompressed {dev['uncompressed'] / naive['uncompressed']:.3f}, "
        f"compressed {dev['compressed'] / naive['compressed']:.3f}; "
        f"dev adds {_gb(dev['uncompressed'] - rt['uncompressed'])} to runtime.",
        "",
        "| runtime layer | what | uncompressed | compressed |",
        "| --- | --- | ---: | ---: |",
        *(
            f"| {x['blob']} | {x['what']} | {_gb(x['uncompressed'])} | {_gb(x['compressed'])} |"
            for x in rt["layers"]
        ),
        "",
        "| runtime part | uncompressed |",
        "| --- | ---: |",
        *(f"| {k} | {_gb(v)} |" for k, v in rt["breakdown"].items()),
        "",
        f"Reproducible (second --no-cache build, same image ID): {r['reproducible']['same_image_id']}; "
        f"differing layers: {r['reproducible']['differing_layers'] or 'none'}",
        "",
        "Where the cold runtime build's time went (steps of 0.5 s or more):",
        "",
        "| step | seconds |",
        "| --- | ---: |",
        *(f"| `{s['name'].strip()[:80]}` | {s['seconds']} |" for s in r["cold_runtime"]["steps"]),
        "",
    ]
    return "\n".join(lines)


def write(r: dict[str, Any]) -> Path:
    folder = paths.reports_dir()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "build-report.json").write_text(json.dumps(r, indent=2) + "\n")
    md = folder / "build-report.md"
    md.write_text(markdown(r))
    return md
