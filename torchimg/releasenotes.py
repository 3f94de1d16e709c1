"""The release manifest written per push (JSON and Markdown): what was released, from what,
what it passed, and which packages changed since the previous release of the same line."""

import datetime
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, cast

from pydantic import Field, StringConstraints, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from torchimg import output, paths, userfiles
from torchimg.adapters import gitinfo, remote_registry
from torchimg.errors import PipelineError, RefusedError
from torchimg.model import allowlist, labels, lockfile, record, references, tags

Manifest = dict[str, Any]
_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # git's SHA-1 or SHA-256 object names
# The release files attached beside repository@digest (None: none are): the registry's, as
# remote_registry reads them; the unit tests of the wording pass their own.
Attached = Callable[[str, str], remote_registry.Release | None]


def packages(lock_paths: list[str]) -> dict[str, str]:
    """name -> version over the image's lockfiles (paths as the record shows them)."""
    found: dict[str, str] = {}
    for shown in lock_paths:
        found.update(lockfile.pins(lockfile.read_text(paths.ROOT / shown)))
    return dict(sorted(found.items()))


def packages_at(revision: str, lock_paths: list[str]) -> dict[str, str] | None:
    """The same lockfiles as committed at `revision`; None when this clone lacks it."""
    found: dict[str, str] = {}
    for shown in lock_paths:
        text = gitinfo.show(revision, shown)
        if text is None:
            return None
        found.update(lockfile.pins(text))
    return dict(sorted(found.items()))


def diff(before: dict[str, str], after: dict[str, str]) -> dict[str, Any]:
    """Added, removed and changed packages (name -> version, or [old, new])."""
    return {
        "added": {k: v for k, v in after.items() if k not in before},
        "removed": {k: v for k, v in before.items() if k not in after},
        "changed": {k: [before[k], v] for k, v in after.items() if k in before and before[k] != v},
    }


def previous(
    ref: str,
    ours: str,
    immutable_tag: str,
    lock_paths: list[str],
    folder: Path,
    attached: Attached = remote_registry.attached_release,
) -> dict[str, object]:
    """What the moving tag named before this push, and the package diff against it: from the
    lockfiles as committed then, or, where this clone lacks that commit (a shallow CI
    checkout), from the previous release's manifest."""
    digest = remote_registry.digest(ref)
    if digest is None:
        return {"previous": None, "package_diff": None}
    if digest == ours:
        return recorded(immutable_tag, folder)
    repository = ref.rsplit(":", 1)[0]
    # the image the digest names, not the tag's again (it may move meanwhile); its label is a
    # registry's word: a commit ID, or it is not used (it goes to git and into the notes)
    revision = remote_registry.labels(f"{repository}@{digest}").get(labels.REVISION, "")
    if not _COMMIT.fullmatch(revision):
        revision = "unknown"
    out: dict[str, object] = {"previous": {"ref": ref, "digest": digest, "revision": revision}}
    before = packages_at(revision, lock_paths) if revision != "unknown" else None
    if before is None:
        line = ref.rsplit(":", 1)[1]
        listed, why = _from_earlier(repository, line, digest, folder, "packages", _PACKAGES, attached)
        if listed is None:
            out["package_diff"] = None
            missing = (
                f"commit {revision[:12]} is not in this clone (`git fetch --unshallow` and push again)"
                if revision != "unknown"
                else f"the previous image names no commit ({labels.REVISION})"
            )
            out["package_diff_note"] = f"{missing}, and {why}"
            return out
        before = listed
    out["package_diff"] = diff(before, packages(lock_paths))
    return out


def recorded(immutable_tag: str, folder: Path) -> dict[str, object]:
    """The previous release and package diffs that this image's first release recorded (what
    the moving tag named then); a note where that manifest is not here or says less."""
    earlier = read(immutable_tag, folder)
    if earlier is None:
        return {
            "previous": None,
            "package_diff": None,
            "package_diff_note": "the release manifest of this image's first release is not here: "
            "no previous release named",
            "os_package_diff": None,
        }
    where = paths.shown(folder / f"{immutable_tag}.json")
    out: dict[str, object] = {k: earlier.get(k) for k in _DIFF_KEYS}
    if not (_valid(_PREVIOUS, out["previous"]) and _valid(_DIFF, out["package_diff"])):
        out.update(previous=None, package_diff=None, package_diff_note=f"{where}: malformed previous release")
    if earlier.get("previous") is None:
        out["os_package_diff"] = None
    elif "os_package_diff" not in earlier:
        out.update(os_package_diff=None, os_package_diff_note=f"{where} predates OS package lists")
    elif not _valid(_OS_DIFF, earlier["os_package_diff"]):
        out.update(os_package_diff=None, os_package_diff_note=f"{where}: malformed OS package diff")
    else:
        out.update({k: earlier.get(k) for k in ("os_package_diff", "os_package_diff_note")})
    return out


_DIFF_KEYS = ("previous", "package_diff", "package_diff_note")


# What an earlier manifest may hold (it may come from the registry): package names and versions
# as pip and dpkg spell them, nothing that would break or inject into the Markdown notes.
_Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9.+_-]{0,127}$")]
_Version = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9.+~:!_-]{0,127}$")]
_Listed = Annotated[dict[_Name, _Version], Field(max_length=100_000)]
_Platform = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]+/[a-z0-9_.-]+(/[a-z0-9_.-]+)?$")]


class _Diff(TypedDict):
    added: _Listed
    removed: _Listed
    changed: dict[_Name, Annotated[list[_Version], Field(min_length=2, max_length=2)]]


_PREVIOUS: TypeAdapter[dict[str, str] | None] = TypeAdapter(dict[str, str] | None)
_DIFF: TypeAdapter[_Diff | None] = TypeAdapter(_Diff | None)
_OS_DIFF: TypeAdapter[dict[_Platform, _Diff] | None] = TypeAdapter(dict[_Platform, _Diff] | None)
_OS_LIST: TypeAdapter[dict[_Platform, _Listed]] = TypeAdapter(dict[_Platform, _Listed])
_PACKAGES: TypeAdapter[_Listed] = TypeAdapter(_Listed)


def _valid(adapter: TypeAdapter[Any], value: object) -> bool:
    """Whether a value read back from an earlier manifest has the shape written there."""
    try:
        adapter.validate_python(value, strict=True)
    except ValidationError:
        return False
    return True


def _earlier(
    repository: str, line: str, digest: str, folder: Path, attached: Attached
) -> Iterator[tuple[str, object]]:
    """The manifests recorded for the release of `digest`, as (where, its JSON, or why it
    could not be read): this folder's of the line (newest first), then the one attached
    beside the image in the registry, asked only when the folder's gave no answer."""
    for p in sorted(folder.glob(f"{line}-*.json"), reverse=True) if folder.is_dir() else []:
        try:
            found = _load(p)
        except _UNREADABLE as exc:
            yield p.name, exc
            continue
        if isinstance(found, dict) and found.get("digest") == digest:
            yield p.name, found
    where = f"{repository}:{tags.release_files(digest)}"
    # a registry that fails here fails the push (exit 3) before any moving tag moves: notes that
    # silently compared nothing would be attached and signed for good
    try:
        beside = attached(repository, digest)
    except RefusedError as exc:  # what is there is not this image's release files: a note
        yield where, ValueError(exc.what.removeprefix(f"{where}: "))
        return
    if beside is not None:
        yield where, beside.manifest


def _from_earlier(
    repository: str,
    line: str,
    digest: str,
    folder: Path,
    key: str,
    shape: TypeAdapter[Any],
    attached: Attached,
) -> tuple[Any, str]:
    """`key` of the first manifest recorded for the release of `digest` that has it in
    `shape`; (None, why) when there is none to compare with."""
    what = _WHAT[key]
    unreadable: list[str] = []
    lacking = ""
    for where, found in _earlier(repository, line, digest, folder, attached):
        if isinstance(found, Exception):
            unreadable.append(f"{where} ({found})"[:200])
            continue
        assert isinstance(found, dict)
        listed = found.get(key)
        if listed and _valid(shape, listed):
            return listed, ""
        lacking = lacking or (
            f"the previous release's manifest ({where}) "
            + (f"has a malformed {what}" if listed else f"has no {what}")
        )  # an older manifest of the same image may still have one
    beside = f"{repository}:{tags.release_files(digest)}"
    if unreadable:
        why = (
            lacking
            or f"no readable manifest of the previous release in {paths.shown(folder)}/ or beside it "
            f"({beside})"
        )
        return None, f"{why}; unreadable: {', '.join(unreadable[:3])}"
    return None, lacking or (
        f"the previous release's manifest is neither in {paths.shown(folder)}/ nor beside its image "
        f"({beside}: released by an older pipeline)"
    )


_WHAT = {"os_packages": "OS package list", "packages": "Python package list"}


def os_changes(
    m: Manifest, folder: Path, attached: Attached = remote_registry.attached_release
) -> dict[str, object]:
    """The OS packages (apt's, unpinned) that changed since the previous release, for each
    platform both releases list, from that release's manifest: in this folder when pushed from
    here, else the one attached beside its image. A platform only one of them has is said, not
    compared."""
    prev = m.get("previous")
    if prev is None:
        return {"os_package_diff": None}
    now: dict[str, dict[str, str]] = m.get("os_packages") or {}
    if not now:
        why = "this image's scan listed no OS packages (scanned by an older pipeline: `nox -s scan` again)"
        return {"os_package_diff": None, "os_package_diff_note": why}
    line = f"{m['variant']}-{m['flavor']}"
    digest = str(prev.get("digest"))
    before, why = _from_earlier(m["repository"], line, digest, folder, "os_packages", _OS_LIST, attached)
    if before is None:
        return {"os_package_diff": None, "os_package_diff_note": why}
    out: dict[str, object] = {
        "os_package_diff": {p: diff(before[p], now[p]) for p in sorted(now) if p in before}
    }
    apart = [f"{p}: not in the previous release" for p in sorted(now) if p not in before]
    apart += [f"{p}: in the previous release only" for p in sorted(before) if p not in now]
    if apart:
        out["os_package_diff_note"] = "; ".join(apart)
    return out


def bench_summary(test: record.Tested) -> dict[str, Any] | None:
    bench = test.bench
    if not bench:
        return None
    rows = bench.get("results")
    return {
        "device": bench.get("device"),
        "unit": bench.get("unit"),
        "best": [
            {k: r.get(k) for k in ("dtype", "m", "n", "k", "best")}
            for r in (rows if isinstance(rows, list) else [])
            if isinstance(r, dict)
        ],
    }


def manifest(
    rec: record.Record, repository: str, digest: str, immutable: str, moving: list[str], present: bool
) -> Manifest:
    """What was released, from what, and what it passed: read from the image's record."""
    assert rec.test is not None and rec.scan is not None
    lock_paths = sorted(rec.inputs.lockfiles)
    return {
        "variant": rec.variant,
        "flavor": rec.flavor,
        "pushed": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "repository": repository,
        "digest": digest,
        "image_id": rec.image_id,
        "immutable_tag": immutable,
        "moving_tags": moving,
        "already_present": present,
        "references": [f"{repository}:{t}@{digest}" for t in [immutable, *moving]],
        "git": rec.inputs.git.model_dump(),
        "base": {
            "name": rec.labels.get(labels.BASE_NAME),
            "digest": rec.labels.get(labels.BASE_DIGEST),
            "pinned": rec.inputs.base.pinned,
        },
        "lockfiles": rec.inputs.lockfiles,
        "versions": {name: rec.labels.get(key) for name, key in labels.VERSIONS.items()},
        "smoke": rec.test.smoke,
        "smoke_platform": rec.test.platform,
        "emulated": rec.test.emulated,
        "test_warnings": rec.test.warnings,
        "gpu": rec.test.gpu,
        "bench": bench_summary(rec.test),
        "scan": {
            "vulnerabilities": rec.scan.vulnerabilities,
            "vuln_db": rec.scan.vuln_db.how,
            "accepted_without_vuln_db": rec.scan.accepted_without_vuln_db,
            "counts": rec.scan.counts,
            "counts_by_platform": rec.scan.counts_by_platform,
            "accepted": rec.scan.accepted,
            "platforms": rec.scan.platforms,
        },
        "packages": packages(lock_paths),
        "os_packages": rec.scan.os_packages,
    }


# What a release manifest says of the image itself, so the same for every release of one digest
# by this pipeline: release files found beside an image are kept only when these agree.
_OF_THE_IMAGE = (
    "variant",
    "flavor",
    "immutable_tag",
    "base",
    "lockfiles",
    "versions",
    "packages",
    "os_packages",
    "platforms",
)


def _of_the_image(m: Manifest, key: str) -> object:
    """`key` of a manifest as the image fixes it: a platform's digest and size, not whether the
    registry answered for it at that push."""
    value = m.get(key)
    if key == "platforms" and isinstance(value, list):
        return [
            {k: p.get(k) for k in ("platform", "digest", "size")} if isinstance(p, dict) else p for p in value
        ]
    return value


def unlike(kept: Manifest, notes: bytes, now: Manifest) -> str | None:
    """Why release files found beside an image are not its first release's by this pipeline (a
    later push keeps them, and CI signs them): what they say of the image differs from what
    this push finds, or the notes are not what their manifest renders to. None: they may stay."""
    if references.canonical(str(kept.get("repository"))) != references.canonical(now["repository"]):
        return "they name another repository"
    if not isinstance(kept.get("git"), dict) or kept["git"].get("revision") != now["git"]["revision"]:
        return "they name another commit"
    differ = [key for key in _OF_THE_IMAGE if _of_the_image(kept, key) != _of_the_image(now, key)]
    if differ:
        return f"their {', '.join(differ)} differ from this image's"
    try:
        rendered = markdown(kept).encode()
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        rendered = b""
    return None if notes == rendered else "their notes are not what their manifest says"


def write(manifest: Manifest, text: str, folder: Path) -> tuple[Path, Path]:
    """reports/releases/<immutable tag>.{json,md}; `text` is markdown(manifest), made before
    any moving tag moved, so what it reads fails then, if at all."""
    folder.mkdir(parents=True, exist_ok=True)
    tag = manifest["immutable_tag"]
    json_path, md_path = folder / f"{tag}.json", folder / f"{tag}.md"
    json_path.write_bytes(serialized(manifest))
    md_path.write_text(text)
    return json_path, md_path


def serialized(manifest: Manifest) -> bytes:
    """The manifest's JSON as written to reports/releases/ and attached beside the image."""
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()


def round_trip(manifest: Manifest) -> Manifest:
    """The manifest as read back from its JSON (keys sorted, tuples as lists): what the notes are
    rendered from, so that the notes read back beside an image render alike from its JSON."""
    return cast(Manifest, json.loads(serialized(manifest)))


_UNREADABLE = (OSError, UnicodeDecodeError, ValueError, RecursionError)


def _load(p: Path) -> object:
    """A release manifest file's JSON (raises one of _UNREADABLE)."""
    return json.loads(userfiles.read(p, 64 * 2**20))


def read(immutable_tag: str, folder: Path) -> Manifest | None:
    """An earlier release manifest of this immutable tag (None: none here). A damaged one is
    named before any moving tag moves, not found after."""
    p = folder / f"{immutable_tag}.json"
    if not p.exists():
        return None
    try:
        found: object = _load(p)
    except _UNREADABLE as exc:
        found = exc
    if not isinstance(found, dict):
        why = found if isinstance(found, Exception) else type(found).__name__
        raise PipelineError(
            f"{p} is not a release manifest ({why})",
            "restore it from the release's artifacts, or remove it (the release's previous-release "
            "note is then left out)",
        )
    return cast(Manifest, found)


def diff_table(d: dict[str, Any]) -> str:
    """A package diff as a Markdown table ('' when no package changed version)."""
    rows = [[k, a, b] for k, (a, b) in sorted(d["changed"].items())]
    rows += [[k, "(absent)", v] for k, v in sorted(d["added"].items())]
    rows += [[k, v, "(removed)"] for k, v in sorted(d["removed"].items())]
    return output.table(["package", "before", "after"], rows, markdown=True) if rows else ""


def _diff_lines(m: Manifest) -> list[str]:
    prev = m.get("previous")
    d = m.get("package_diff")
    if prev is None:
        first = "First release of this line: no previous release to compare with."
        return [m.get("package_diff_note") or first]
    digest, revision = prev.get("digest", "?"), prev.get("revision", "?")[:12]
    head = f"Against the previous release `{digest}` (commit `{revision}`): "
    if d is None:
        return [head + (m.get("package_diff_note") or "package lists unavailable")]
    table = diff_table(d)
    return [head, "", table] if table else [head + "no Python package changed version."]


def _os_diff_lines(m: Manifest) -> list[str]:
    """OS packages: apt installs the archive's current versions, so they can change between two
    releases of one commit's lockfiles; said per platform, and what was not compared, why."""
    if m.get("previous") is None:
        return []
    d, note = m.get("os_package_diff"), m.get("os_package_diff_note")
    if d is None:
        return [f"OS packages: not compared: {note or 'no list'}."]
    lines: list[str] = []
    for platform, changes in sorted(d.items()):
        table = diff_table(changes)
        where = f" ({platform})" if len(d) > 1 or note else ""
        lines += (
            [f"OS packages{where}:", "", table, ""]
            if table
            else [f"OS packages{where}: none changed version."]
        )
    return lines + ([f"OS packages not compared: {note}."] if note else [])


# The order counts are said in, whatever order their JSON has (the notes read back beside an
# image must render alike from its sorted JSON): smoke statuses, then scan finding kinds.
_COUNT_ORDER = {k: i for i, k in enumerate(("pass", "warn", "fail", "skip", *allowlist.KINDS))}


def _counts(counts: dict[str, int]) -> str:
    ordered = sorted(counts.items(), key=lambda kv: (_COUNT_ORDER.get(kv[0], len(_COUNT_ORDER)), kv[0]))
    return ", ".join(f"{n} {k}" for k, n in ordered)


def _by_platform(counts: dict[str, dict[str, int]]) -> str:
    """Each platform's own counts, after the distinct ones of a multi-platform image."""
    return f" ({'; '.join(f'{p}: {_counts(c)}' for p, c in sorted(counts.items()))})" if counts else ""


def markdown(m: Manifest) -> str:
    v = m["versions"]
    scan = m["scan"]
    lines = [
        f"# Release {m['immutable_tag']}",
        "",
        f"Pushed {m['pushed']} to `{m['repository']}` from commit `{m['git']['revision']}`.",
        "",
        "The manifest (`release.json`) and notes (`release.md`) of this image's first release "
        f"travel beside it, as `{m['repository']}:{tags.release_files(m['digest'])}`.",
        "",
        output.table(
            ["reference", "digest"],
            [
                [f"`{m['repository']}:{t}`", f"`{m['digest']}`"]
                for t in [m["immutable_tag"], *m["moving_tags"]]
            ],
            markdown=True,
        ),
        "",
        *(
            [
                output.table(
                    ["platform", "manifest digest", "compressed size"],
                    [
                        [str(p["platform"]), f"`{p['digest']}`", f"{int(str(p['size'])) / 1e9:.2f} GB"]
                        for p in m.get("platforms") or []
                    ],
                    markdown=True,
                ),
                "",
            ]
            if m.get("platforms")
            else []
        ),
        "## Contents",
        "",
        f"- torch {v.get('torch')}, CUDA {v.get('cuda')}, cuDNN {v.get('cudnn')}, NCCL {v.get('nccl')}, "
        f"Python {v.get('python')}; {_driver_need(v.get('driver_min'))}",
        f"- base `{m['base']['name']}` @ `{m['base']['digest']}`"
        + ("" if m["base"]["pinned"] else " (not the variant's pinned base: overridden at build time)"),
        *(f"- lockfile `{p}` sha256 `{h}`" for p, h in sorted(m["lockfiles"].items())),
        f"- {len(m['packages'])} Python packages (list in the JSON manifest)",
        *(
            f"- {len(pkgs)} OS packages{f' on {p}' if len(m['os_packages']) > 1 else ''}: the base's and "
            "apt's (list in the JSON manifest)"
            for p, pkgs in sorted((m.get("os_packages") or {}).items())
        ),
        "",
        "## Gates passed",
        "",
        f"- smoke{' on ' + m['smoke_platform'] if m.get('smoke_platform') else ''}: {_counts(m['smoke'])} "
        + ("(on a GPU)" if m["gpu"] else "(CPU mode: no GPU visible to the test)"),
        *(
            f"- smoke on {p} (emulated, CPU mode): {_counts(c)}"
            for p, c in sorted((m.get("emulated") or {}).items())
        ),
        *(f"- test warning: {w}" for w in m.get("test_warnings") or []),
    ]
    bench = m.get("bench")
    if bench:
        best = ", ".join(f"{r['dtype']} {r['m']}x{r['n']}x{r['k']}: {r['best']}" for r in bench["best"])
        lines.append(f"- matmul benchmark on {bench['device']} ({bench['unit']}): {best}")
    lines += [
        f"- scan: vulnerabilities {scan['vulnerabilities']}"
        + (" (accepted without a vulnerability DB)" if scan["accepted_without_vuln_db"] else "")
        + f"; blocking-or-not findings: {_counts(scan['counts'])}"
        + _by_platform(scan.get("counts_by_platform") or {})
        + f"; {len(scan['accepted'])} allowlisted"
        + (f"; platforms read: {', '.join(scan['platforms'])}" if scan.get("platforms") else ""),
        "",
        "## Package changes",
        "",
        *_diff_lines(m),
        "",
        *_os_diff_lines(m),
        "",
    ]
    return "\n".join(lines)


def _driver_need(driver_min: object) -> str:
    """What the image asks of the host's NVIDIA driver (its label: the CUDA toolkit's minimum)."""
    if driver_min in (None, "", "none"):
        return "no NVIDIA driver needed (a CPU build)"
    return (
        f"needs an NVIDIA driver >= {driver_min} (an older one of the same CUDA major runs it by "
        "minor-version compatibility, without JIT of newer PTX)"
    )
