"""`nox -s refresh_bases`: move each base image's digest pin to what its tag names today.

Upstream tags get re-pushed (security fixes) or deleted, so the pipeline never builds from a
tag: variants.toml pins `NAME:TAG@sha256:...`. This resolves every tag first and only then
rewrites the pins (in place, comments kept), so an unreachable registry changes nothing.
The digest diff and, after re-locking, the lockfile and package diffs make the pull request.
"""

import json
import re
import sys
from pathlib import Path
from typing import Any

from plumbum import local
from plumbum.commands.processes import ProcessExecutionError

from torchimg import engine, lockfile, paths, releasenotes, variants
from torchimg.errors import PipelineError, RefusedError, ToolError


def report_dir() -> Path:
    return paths.reports_dir() / "refresh"


def resolve(config: variants.Config, keys: list[str]) -> list[dict[str, str]]:
    """Every selected base's tag resolved to its current digest (raises before any change)."""
    unknown = [k for k in keys if k not in config.bases]
    if unknown:
        raise PipelineError(
            f"unknown base(s) {', '.join(unknown)}; declared: {', '.join(config.bases)}",
            "pick declared ones with --base-key",
        )
    moves = []
    for key in keys or list(config.bases):
        base = config.bases[key]
        print(f"== refresh: resolving {base.name}", file=sys.stderr)
        try:
            digest = engine.remote_digest(base.name)
        except PipelineError as exc:
            raise ToolError(
                f"base {key}: {exc.what}; no pin was changed",
                f"check that {base.name.split('/')[0]} answers, then run the refresh again",
            ) from None
        if digest is None:
            raise ToolError(
                f"base {key}: tag {base.name} no longer exists in its registry; no pin was changed",
                "pick a current tag for it in variants.toml (the old digest stays pinned meanwhile)",
            )
        moves.append({"base": key, "name": base.name, "old": base.digest, "new": digest})
    return moves


def apply(moves: list[dict[str, str]], src: Path) -> list[dict[str, str]]:
    """Rewrite the pins that moved, in place; return those. Validated before it is written."""
    text = src.read_text()
    changed = [m for m in moves if m["old"] != m["new"]]
    for m in changed:
        old, new = f"{m['name']}@{m['old']}", f"{m['name']}@{m['new']}"
        text, n = re.subn(re.escape(f'"{old}"'), f'"{new}"', text)
        if n != 1:
            raise PipelineError(f"{src.name}: expected one `{old}`, found {n}", "fix variants.toml by hand")
    if changed:
        tmp = src.with_suffix(".tmp")
        tmp.write_text(text)
        variants.load(tmp)  # never write a file that does not load
        tmp.replace(src)
    return changed


def refresh(src: Path, keys: list[str], check: bool) -> list[dict[str, str]]:
    moves = resolve(variants.load(src), keys)
    changed = [m for m in moves if m["old"] != m["new"]] if check else apply(moves, src)
    folder = report_dir()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bases.json").write_text(json.dumps(moves, indent=2) + "\n")
    for m in moves:
        state = "moved" if m["old"] != m["new"] else "unchanged"
        print(f"   {m['base']}: {m['name']} {state}: {m['old'][:19]} -> {m['new'][:19]}", file=sys.stderr)
    if check and changed:
        raise RefusedError(
            f"{len(changed)} base tag(s) moved upstream: {', '.join(m['base'] for m in changed)}",
            "nox -s refresh_bases (then re-lock, build, test, scan)",
        )
    return changed


def _lock_diffs(revision: str) -> list[tuple[str, dict[str, Any]]]:
    """Per lockfile that differs from `revision`: the package diff."""
    git = local["git"]["-C", str(paths.ROOT)]
    names = str(git("diff", "--name-only", revision, "--", str(paths.LOCKS.relative_to(paths.ROOT)))).split()
    out = []
    for name in sorted(n for n in names if n.endswith(".txt")):
        try:
            before = lockfile.pins(str(git("show", f"{revision}:{name}")))
        except ProcessExecutionError:
            before = {}
        path = paths.ROOT / name
        after = lockfile.pins(path.read_text()) if path.exists() else {}
        out.append((name, releasenotes.diff(before, after)))
    return out


def pull_request_body(revision: str = "HEAD") -> Path:
    """Markdown for the refresh pull request: digest, lockfile and package diffs."""
    found = report_dir() / "bases.json"
    if not found.is_file():
        raise PipelineError(
            f"{paths.shown(found)} does not exist: no refresh has run here",
            "run `nox -s refresh_bases` first, then ask for the pull request body",
        )
    moves = json.loads(found.read_text())
    lines = ["Monthly base image refresh.", "", "## Base digests", "", "| base | tag | before | after |"]
    lines.append("| --- | --- | --- | --- |")
    lines += [
        f"| {m['base']} | `{m['name']}` | `{m['old'][:19]}` | "
        + (f"`{m['new'][:19]}`" if m["old"] != m["new"] else "unchanged")
        + " |"
        for m in moves
    ]
    lines += ["", "## Lockfiles", ""]
    diffs = _lock_diffs(revision)
    if not diffs:
        lines.append("No lockfile changed.")
    for name, d in diffs:
        lines += [f"### `{name}`", ""]
        if not any(d.values()):
            lines += ["Hashes or comments changed; no package changed version.", ""]
            continue
        lines += ["| package | before | after |", "| --- | --- | --- |"]
        lines += [f"| {k} | {a} | {b} |" for k, (a, b) in sorted(d["changed"].items())]
        lines += [f"| {k} | (absent) | {v} |" for k, v in sorted(d["added"].items())]
        lines += [f"| {k} | {v} | (removed) |" for k, v in sorted(d["removed"].items())]
        lines.append("")
    lines += ["", "Built, tested and scanned by the refresh workflow; reports are its artifacts."]
    out = report_dir() / "pull-request.md"
    out.write_text("\n".join(lines) + "\n")
    return out
