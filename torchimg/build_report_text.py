"""The build report as Markdown: builds, registry figures, sizes, layers, where time went."""

import json
from pathlib import Path
from typing import Any

from torchimg import buildlog


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


# The goals the report is read against (a report, not a test: figures are never asserted).
GOALS = {"cold": 120.0, "cache_import": 40.0, "first_container": 45.0}


def _seconds(b: dict[str, Any], step: str) -> float:
    """Seconds of one kind of step in a build: "pip" (the builder stages' RUN steps), or an
    export sub-step such as "exporting layers" or "unpacking"."""
    total = 0.0
    for s in b["steps"]:
        where = buildlog.stage(s["name"])
        if (
            step == "pip" and where is not None and where[0].startswith("builder") and where[1] == "RUN"
        ) or s["name"].strip() == step:
            total += s["seconds"]
    return round(total, 1)


def _met(value: float, goal: float) -> str:
    return "yes" if value <= goal else "no"


def _floors(r: dict[str, Any]) -> list[str]:
    """For each goal missed, the steps a new runner cannot skip, in this run's own figures."""
    cold, imp, first = r["cold_runtime"], r["cache_import_runtime"], r[f"first_container_{r['compression']}"]
    tar, pushed = r["size_runtime"]["tar"], r["registry"][f"runtime_{r['compression']}"]
    pip, export, unpack = (_seconds(cold, k) for k in ("pip", "exporting layers", "unpacking"))
    out = []
    if cold["seconds"] > GOALS["cold"]:
        out.append(
            f"- Cold build: pip {pip} s (download and unpack the wheels), exporting layers {export} s "
            f"(tar, digest and compress {_gb(tar)}), unpacking {unpack} s (write it into the engine's "
            f"store): {pip + export + unpack:.1f} s of {cold['seconds']} s that no cache can save on a "
            "new runner."
        )
    if imp["seconds"] > GOALS["cache_import"]:
        out.append(
            f"- Registry-cache rebuild: unpacking {_seconds(imp, 'unpacking')} s of {imp['seconds']} s "
            f"(write {_gb(tar)} into the engine's store while {_gb(pushed)} of cache blobs download)."
        )
    if first["seconds"] > GOALS["first_container"]:
        out.append(
            f"- First container: the pull (download {_gb(pushed)}, unpack {_gb(tar)}) "
            f"{first['pull_seconds']} s of {first['seconds']} s."
        )
    return ["What sets each missed goal's floor (this run's figures):", "", *out, ""] if out else []


def markdown(r: dict[str, Any]) -> str:
    """The report as Markdown: the goals, builds, compressions side by side, sizes, layers."""
    if "platforms" in r:
        return platforms_markdown(r)
    rt, dev, naive = r["size_runtime"], r["size_dev"], r["size_naive"]
    cold, imp, g = r["cold_runtime"], r["cache_import_runtime"], r["registry"]
    one, other = r["compression"], r["other_compression"]
    first = {c: r[f"first_container_{c}"] for c in (one, other)}
    lines = [
        f"# Build report: {r['variant']} ({r['date']}, engine {r['engine']}, base {r['base']})",
        "",
        "Every build and pull below ran on an empty engine (a second dockerd with its own data root,",
        "started for the measurement and deleted after), as on a new CI runner; the base image came",
        f"from a registry. Layers: {one} (the default), against {other}.",
        "",
        "| goal | target | measured | met |",
        "| --- | ---: | --- | --- |",
        f"| cold runtime build, empty engine | {GOALS['cold']:.0f} s | {cold['seconds']} s (pip "
        f"{_seconds(cold, 'pip')} s, exporting layers {_seconds(cold, 'exporting layers')} s, "
        f"unpacking {_seconds(cold, 'unpacking')} s) | {_met(cold['seconds'], GOALS['cold'])} |",
        f"| rebuild from the registry cache, empty engine, pip not run | {GOALS['cache_import']:.0f} s "
        f"| {imp['seconds']} s = {imp['seconds'] / cold['seconds']:.1%} of cold; pip ran: {imp['pip_ran']}; "
        f"same image ID as cold: {imp['same_image_id']}; unpacking {_seconds(imp, 'unpacking')} s "
        f"| {_met(imp['seconds'], GOALS['cache_import']) if not imp['pip_ran'] else 'no'} |",
        f'| pull the runtime image into an empty engine, start `python -c "import torch"` '
        f"| {GOALS['first_container']:.0f} s | {one}: {first[one]['seconds']} s "
        f"(pull {first[one]['pull_seconds']} s), "
        f"{other}: {first[other]['seconds']} s | {_met(first[one]['seconds'], GOALS['first_container'])} |",
        "",
        *_floors(r),
        "| layer compression | cold runtime build (s) | exporting layers (s) | unpacking (s) "
        "| runtime in a registry | dev in a registry | pull (s) | pull to first container (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    rows = [
        (f"{c}{' (default)' if c == one else ''}", b, _gb(g[f"runtime_{c}"]), _gb(g[f"dev_{c}"]), first[c])
        for c, b in ((one, cold), (other, r["cold_other"]))
    ]
    if (fast := r.get("cold_fast")) and "first_container_fast" in r:
        rows.append(
            (
                f"{one} level {fast['level']}",
                fast,
                _gb(fast["registry_bytes"]),
                "-",
                r["first_container_fast"],
            )
        )
    for name, b, rt_bytes, dev_bytes, f in rows:
        lines.append(
            f"| {name} | {b['seconds']} | {_seconds(b, 'exporting layers')} | {_seconds(b, 'unpacking')} "
            f"| {rt_bytes} | {dev_bytes} | {f['pull_seconds']} | {f['seconds']} |"
        )
    lines += [
        "",
        "| build | seconds | pip ran | torch downloaded |",
        "| --- | ---: | --- | --- |",
    ]
    for key, name in (
        ("cold_runtime", f"cold, runtime, {one} (empty engine)"),
        ("cold_again", f"cold again, runtime, {one} (another empty engine)"),
        ("cold_other", f"cold, runtime, {other} (another empty engine)"),
        ("cold_fast", f"cold, runtime, {one} at its fastest level (another empty engine)"),
        ("cold_dev", "dev, after runtime"),
        ("noop_runtime", "no-op rebuild, runtime"),
        ("noop_dev", "no-op rebuild, dev"),
        ("dev_change", "dev-only lock change, dev"),
        ("other_runtime", f"{other} layers from the same cache, runtime"),
        ("other_dev", f"{other} layers from the same cache, dev"),
        ("cache_export_runtime", "no-op rebuild exporting the registry cache, runtime"),
        ("cache_import_runtime", "rebuild from the registry cache, runtime (empty engine)"),
    ):
        if (b := r.get(key)) is None:
            continue
        lines.append(f"| {name} | {b['seconds']} | {b['pip_ran']} | {b['torch_downloaded']} |")
    lines.append(f"| naive single stage, cold (empty engine) | {r['naive']['seconds']} | True | True |")
    lines += [
        "",
        f"In a registry ({one}): dev shares {g['shared_layers']} of runtime's {g['runtime_layers']} "
        f"layers (every one: {g['dev_shares_every_runtime_layer']}), {_gb(g['shared_bytes'])}; dev adds "
        f"{_gb(g['dev_adds_bytes'])} compressed. A dev-only lock change pushes "
        f"{g['dev_change_new_layers']} new layer(s), {g['dev_change_pushed_bytes'] / 1e6:.1f} MB.",
        "",
        "| image | uncompressed (files) | uncompressed (tar) | compressed (as built) | layers |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, s in ((f"runtime ({one})", rt), (f"dev ({one})", dev), ("naive baseline (gzip)", naive)):
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
        f"Reproducible (two cold builds on two empty engines, same image ID): "
        f"{r['reproducible']['same_image_id']}; the first cold build and its no-op rebuild, same "
        f"image ID: {r['reproducible'].get('noop_same_image_id', '-')}; differing layers: "
        f"{r['reproducible']['differing_layers'] or 'none'}; differing compressed blobs: "
        f"{r['reproducible'].get('differing_blobs') or 'none'}; differing manifest/config fields: "
        f"{', '.join(r['reproducible'].get('differing_fields') or []) or 'none'}; the {other} build "
        f"has the same layers (diff IDs): {r['cold_other']['same_layers']}"
        + (f", the level {fast['level']} build: {fast['same_layers']}." if fast else "."),
        "",
        "Where the cold runtime build's time went (steps of 0.5 s or more):",
        "",
        "| step | seconds |",
        "| --- | ---: |",
        *(f"| `{s['name'].strip()[:80]}` | {s['seconds']} |" for s in cold["steps"]),
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
