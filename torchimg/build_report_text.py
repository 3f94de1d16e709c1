"""The build report as Markdown: builds, registry figures, sizes, layers, where time went."""

import json
from pathlib import Path
from typing import Any


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB"


def platforms_markdown(r: dict[str, Any]) -> str:
    """The per-platform report: one row per platform, and each one's time against the first."""
    rows = r["platforms"]
    first = next(iter(rows.values()))
    lines = [
        f"# Build report per platform: {r['variant']} ({r['date']}, engine {r['engine']}, base {r['base']})",
        "",
        "Each platform built alone with BuildKit's cache pruned first: runtime cold, then dev on top.",
        "Emulated steps: the RUN steps of the stages that run on the image's own platform (apt,",
        "users, settings), under QEMU for a foreign one; pip always runs natively.",
        "",
        "| platform | emulated | runtime cold (s) | of which emulated RUN steps (s) | dev after runtime (s) "
        "| runtime uncompressed (tar) | runtime compressed | dev uncompressed (tar) | dev compressed "
        "| shared by the flavors (compressed) | time against the first |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for platform, f in rows.items():
        rt, dev = f["runtime"], f["dev"]
        ratio = (rt["seconds"] + dev["seconds"]) / (first["runtime"]["seconds"] + first["dev"]["seconds"])
        emulated = rt["target_run_seconds"] if f["emulated"] else "-"
        lines.append(
            f"| {platform} | {f['emulated']} | {rt['seconds']} | {emulated} "
            f"| {dev['seconds']} | {_gb(rt['uncompressed'])} | {_gb(rt['compressed'])} "
            f"| {_gb(dev['uncompressed'])} | {_gb(dev['compressed'])} | {_gb(f['shared_bytes'])} "
            f"(every runtime layer: {f['dev_shares_every_runtime_layer']}) | {ratio:.2f} |"
        )
    for platform, f in rows.items():
        lines += [
            "",
            f"Where {platform}'s cold runtime build went (steps of 0.5 s or more):",
            "",
            "| step | seconds |",
            "| --- | ---: |",
            *(f"| `{s['name'].strip()[:80]}` | {s['seconds']} |" for s in f["runtime"]["steps"]),
        ]
    return "\n".join([*lines, ""])


def markdown(r: dict[str, Any]) -> str:
    """The report as Markdown: one table of builds, one of sizes, a layer breakdown."""
    if "platforms" in r:
        return platforms_markdown(r)
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


def write(r: dict[str, Any], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    stem = "build-report-platforms" if "platforms" in r else "build-report"
    (folder / f"{stem}.json").write_text(json.dumps(r, indent=2) + "\n")
    md = folder / f"{stem}.md"
    md.write_text(markdown(r))
    return md
