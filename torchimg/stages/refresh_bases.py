"""`nox -s refresh_bases`: move each base image's digest pin to what its tag names today.

Upstream tags get re-pushed (security fixes) or deleted, so the pipeline never builds from a
tag: variants.toml pins `NAME:TAG@sha256:...`. This resolves every tag first and only then
rewrites the pins (with tomlkit: comments and layout kept), so an unreachable registry
changes nothing. The digest diff and, after re-locking, the lockfile and package diffs make
the pull request.
"""

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomlkit
from packaging.version import InvalidVersion, Version

from torchimg import output, paths, releasenotes, summary
from torchimg.adapters import gitinfo, package_index, remote_registry
from torchimg.errors import PipelineError, RefusedError, ToolError
from torchimg.model import lockfile, record, variants
from torchimg.output import log
from torchimg.settings import Settings
from torchimg.stages import Selection, StageResult, each

HELP = "pin each base tag's current digest in variants.toml"
SELECTS = "nothing"


@dataclass(frozen=True)
class Options:
    file: Path
    base_keys: tuple[str, ...] = ()
    check: bool = False
    pull_request_body: bool = False
    ca_bundle: Path | None = None


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base-key", action="append", default=[], help="only this base (repeatable)")
    p.add_argument("--check", action="store_true", help="report moved tags and fail; change nothing")
    p.add_argument(
        "--pull-request-body",
        action="store_true",
        help="write reports/refresh/pull-request.md (digest, lockfile and package diffs) after re-locking",
    )


def options(args: argparse.Namespace, settings: Settings) -> Options:
    if args.pull_request_body and (args.check or args.base_key):
        raise PipelineError(
            "--pull-request-body together with --check or --base-key: the body describes a refresh "
            "that has run; it refreshes and checks nothing",
            "run `nox -s refresh_bases [-- --base-key K]` first, then `-- --pull-request-body` alone",
        )
    unknown = [k for k in args.base_key if k not in settings.config.bases]
    if unknown:
        raise PipelineError(
            f"unknown base(s) {', '.join(unknown)}; declared: {', '.join(settings.config.bases)}",
            "pick declared ones with --base-key",
        )
    ca_bundle = settings.credentials(None, None).ca_bundle
    return Options(
        settings.config.source, tuple(args.base_key), args.check, args.pull_request_body, ca_bundle
    )


def run(selection: Selection, opts: Options) -> StageResult:
    folder = selection.reports / "refresh"
    if opts.pull_request_body:

        def body(_: int) -> None:
            status, complete = image_status(selection.config, selection.store)
            news = torch_news(selection.config, lambda: package_index.newest("torch", opts.ca_bundle))
            print(pull_request_body(folder, status=status, torch=news).read_text())
            (folder / "draft").write_text("false\n" if complete else "true\n")

        return each("refresh_bases", ["pull request body"], body)
    return each("refresh_bases", ["bases"], lambda _: refresh(opts, folder))


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
        log.info("   resolving %s", base.name)
        try:
            digest = remote_registry.digest(base.name)
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
    """Rewrite the pins that moved, in place (comments kept); return those. The new file is
    validated before it replaces the old one."""
    doc = tomlkit.parse(src.read_text())
    changed = [m for m in moves if m["old"] != m["new"]]
    for m in changed:
        doc["bases"][m["base"]]["image"] = f"{m['name']}@{m['new']}"
    if changed:
        tmp = src.with_suffix(".tmp")
        tmp.write_text(tomlkit.dumps(doc))
        variants.load(tmp)  # never write a file that does not load
        tmp.replace(src)
        _dockerfile_defaults(changed, src.parent / "docker" / "Dockerfile")
    return changed


def _dockerfile_defaults(changed: list[dict[str, str]], dockerfile: Path) -> None:
    """The Dockerfile beside the variants file names a base by digest too (its BASE_IMAGE
    default, for a plain `docker build`): every pin moves together."""
    if not dockerfile.is_file():
        return
    text = dockerfile.read_text()
    new = text
    for m in changed:
        new = new.replace(f"{m['name']}@{m['old']}", f"{m['name']}@{m['new']}")
    if new != text:
        dockerfile.write_text(new)
        log.info("   %s: BASE_IMAGE default moved with its pin", paths.shown(dockerfile))


def refresh(opts: Options, folder: Path) -> list[dict[str, str]]:
    moves = resolve(variants.load(opts.file), list(opts.base_keys))
    changed = [m for m in moves if m["old"] != m["new"]] if opts.check else apply(moves, opts.file)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bases.json").write_text(json.dumps(moves, indent=2) + "\n")
    for m in moves:
        state = "moved" if m["old"] != m["new"] else "unchanged"
        log.info("   %s: %s %s: %s -> %s", m["base"], m["name"], state, m["old"][:19], m["new"][:19])
    if opts.check and changed:
        raise RefusedError(
            f"{len(changed)} base tag(s) moved upstream: {', '.join(m['base'] for m in changed)}",
            "nox -s refresh_bases (then re-lock, build, test, scan)",
        )
    return changed


def _lock_diffs(revision: str) -> list[tuple[str, dict[str, Any]]]:
    """Per lockfile that differs from `revision`: the package diff."""
    out = []
    for name in sorted(n for n in gitinfo.changed(revision, paths.LOCKS) if n.endswith(".txt")):
        before = lockfile.pins(gitinfo.show(revision, name) or "")
        path = paths.ROOT / name
        after = lockfile.pins(path.read_text()) if path.exists() else {}
        out.append((name, releasenotes.diff(before, after)))
    return out


def image_status(config: variants.Config, store: record.Store) -> tuple[str, bool]:
    """A table of every declared image and how far its refresh got; whether every variant
    with committed lockfiles was built, tested and scanned (else the pull request is a draft)."""
    required = {v.name for v in config.select([], locked=True)}
    rows, complete = [], True
    for variant in config.variants.values():
        for flavor in variant.flavors:
            rec = store.read(variant.name, flavor)
            states = [summary.state(rec, s) if rec else "-" for s in ("build", "test", "scan")]
            ok = rec is not None and all(rec.passed(s) for s in ("build", "test", "scan"))
            needed = variant.name in required
            complete = complete and (ok or not needed)
            verdict = "ok" if ok else ("**FAILED**" if needed else "not refreshed (no committed lockfiles)")
            rows.append([f"{variant.name} {flavor}", *states, verdict])
    table = output.table(["image", "build", "test", "scan", "verdict"], rows, markdown=True)
    return table, complete


def torch_news(config: variants.Config, newest: Callable[[], str]) -> str:
    """One line: whether the index has a torch release newer than every declared variant."""
    declared = max((v.torch for v in config.variants.values()), key=Version)
    try:
        found = newest()
        newer = Version(found) > Version(declared)
    except PipelineError as exc:
        return f"The newest torch release could not be looked up ({exc.what})."
    except InvalidVersion:
        return f"The index names torch {found!r} as newest, which is not a version: not compared."
    if newer:
        return (
            f"**torch {found} is out**; the newest declared variant has {declared}. Add a variant for it "
            "in variants.toml and lock it (`nox -s lock -- --variant NAME`)."
        )
    return f"torch {declared}, the newest declared, is the newest release on PyPI ({found})."


def _moves(found: Path) -> list[dict[str, str]]:
    """bases.json as `nox -s refresh_bases` wrote it: a list of {base, name, old, new}."""
    fix = "run `nox -s refresh_bases` again: it writes that file"
    try:
        moves = json.loads(found.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise PipelineError(f"{paths.shown(found)} cannot be read as JSON ({exc})", fix) from None
    keys = ("base", "name", "old", "new")
    if not isinstance(moves, list) or not all(
        isinstance(m, dict) and all(isinstance(m.get(k), str) for k in keys) for m in moves
    ):
        raise PipelineError(f"{paths.shown(found)} is not a list of {{{', '.join(keys)}}} entries", fix)
    return moves


def pull_request_body(folder: Path, revision: str = "HEAD", status: str = "", torch: str = "") -> Path:
    """Markdown for the refresh pull request: digest, lockfile and package diffs; with the
    workflow's records, what each image's refresh came to; and whether a newer torch is out."""
    found = folder / "bases.json"
    if not found.is_file():
        raise PipelineError(
            f"{paths.shown(found)} does not exist: no refresh has run here",
            "run `nox -s refresh_bases` first, then ask for the pull request body",
        )
    moves = _moves(found)
    rows = [
        [
            m["base"],
            f"`{m['name']}`",
            f"`{m['old'][:19]}`",
            f"`{m['new'][:19]}`" if m["old"] != m["new"] else "unchanged",
        ]
        for m in moves
    ]
    lines = [
        "Monthly base image refresh.",
        "",
        "## Base digests",
        "",
        output.table(["base", "tag", "before", "after"], rows, markdown=True),
    ]
    lines += ["", "## Lockfiles", ""]
    diffs = _lock_diffs(revision)
    if not diffs:
        lines.append("No lockfile changed.")
    for name, d in diffs:
        lines += [
            f"### `{name}`",
            "",
            releasenotes.diff_table(d) or "Hashes or comments changed; no package changed version.",
            "",
        ]
    if status:
        lines += ["", "## Images on the new bases", "", status]
    if torch:
        lines += ["", "## torch", "", torch]
    lines += ["", "Built, tested and scanned by the refresh workflow; reports are its artifacts."]
    out = folder / "pull-request.md"
    out.write_text("\n".join(lines) + "\n")
    return out
