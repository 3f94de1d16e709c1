"""`nox -s push`: release an image that passed every gate, under tags that never lie.

Order, so that a failure anywhere leaves no moving tag on an unverified image: the push
preconditions (build, test, scan of this exact image ID) -> registry answers -> immutable tag
(refused if it already names other content) -> digest read back from the registry and checked
against the local image -> moving tags never moved backwards -> the immutable tag read back
again -> the release manifest and notes attached beside the image -> the moving tags, each read
back too -> release manifest and record written here.
"""

import argparse
import datetime
import functools
from dataclasses import dataclass, field

from torchimg import paths, releasenotes
from torchimg.adapters import engine, local_registry, remote_registry
from torchimg.errors import PipelineError, RefusedError, ToolError
from torchimg.model import allowlist, labels, lockfile, record, tags
from torchimg.model.push_preconditions import Target, unmet, untested
from torchimg.output import log
from torchimg.settings import Settings
from torchimg.stages import Image, Selection, StageResult, built, each_image
from torchimg.stages import scan as scan_stage
from torchimg.stages import stage as stage_stage

HELP = "push images that passed build, test and scan; verify; move tags"
SELECTS = "images"  # variants x flavors


@dataclass(frozen=True)
class Options:
    target: Target
    force_move: bool = False
    scan: scan_stage.Options = field(default_factory=scan_stage.Options)
    promote: bool = False  # copy the staged digest registry-side instead of pushing from the engine
    moving_tags: bool = True  # False: the immutable tag only (a version tag's release of a past commit)


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--repository",
        help="target image repository (default: $TORCHIMG_REPOSITORY, variants.toml `repository`)",
    )
    p.add_argument(
        "--allow-no-vuln-db",
        action="store_true",
        help="release to a remote registry although the scan could not check vulnerabilities",
    )
    p.add_argument(
        "--allow-dirty",
        action="store_true",
        help="release an image built from uncommitted changes (its immutable tag ends in -dirty)",
    )
    p.add_argument(
        "--allow-cpu-test",
        action="store_true",
        help="release a CUDA image to a remote registry although its test did not require a GPU",
    )
    p.add_argument(
        "--force-move",
        action="store_true",
        help="move the moving tags even when they name an image of a newer commit (a deliberate rollback)",
    )
    p.add_argument(
        "--immutable-only",
        action="store_true",
        help="place and verify the immutable tag only; the moving tags stay where they are (the "
        "release of a version tag, whose commit main has published already and may have passed)",
    )
    scan_stage.policy_arguments(p)


def options(args: argparse.Namespace, settings: Settings) -> Options:
    target = Target(
        settings.repository(args.repository), args.allow_no_vuln_db, args.allow_dirty, args.allow_cpu_test
    )
    if args.immutable_only and args.force_move:
        raise PipelineError(
            "--immutable-only moves no tag, --force-move moves them backwards: they contradict",
            "pass one of them",
        )
    return Options(
        target,
        args.force_move,
        scan_stage.policy_options(args, allow_no_vuln_db=True),
        moving_tags=not args.immutable_only,
    )


def run(selection: Selection, opts: Options) -> StageResult:
    pushed: list[releasenotes.Manifest] = []
    verb = _verb(opts)

    def one(image: Image) -> None:
        try:
            pushed.append(push(selection, image, opts))
        except PipelineError as exc:  # the preconditions speak of pushes; name what was refused
            exc.what = exc.what.replace("push refused", f"{verb} refused", 1)
            raise

    result = each_image(verb, selection, one)
    for m in pushed:
        print(f"{_past(verb)} {m['variant']} {m['flavor']}: {m['digest']}")
        for ref in m["references"]:
            print(f"  {ref.split('@')[0]}")
    return result


def gate(selection: Selection, image: Image, opts: Options, local_target: bool) -> record.Record:
    """The record of an image that meets the push preconditions; else refuse, naming the stage.

    A scan not yet run for this image runs now (it is part of the release gate); one whose
    vulnerability part could not run is accepted for the embedded local registry (it stays on
    this machine) and elsewhere only with --allow-no-vuln-db. A failed scan is never accepted.
    """
    rec = _staged(selection, image, opts) if opts.promote else built(selection, image)
    cuda = image.variant.cuda_info is not None
    early = untested(rec, opts.target, local_target, cuda, image.variant.platforms)
    if early is not None:  # before a scan it would refuse anyway (tens of minutes per platform)
        raise early
    if not opts.promote and rec.scan is None:
        log.info("   %s has not been scanned yet: running the scan gate now", image)
        try:
            rec = scan_stage.scan(selection, image, opts.scan)
        except PipelineError as exc:
            exc.what = f"push refused: {exc.what}"
            raise
    policy = opts.scan.policy_fingerprint()
    refused = unmet(
        rec,
        opts.target,
        local_target,
        policy,
        cuda=cuda,
        platforms=image.variant.platforms,
    )
    if refused is not None:
        raise refused
    today = opts.scan.today or datetime.date.today()
    for entry in allowlist.load(opts.scan.allowlist, today):
        if entry.expires < today:  # the scan accepted it; it has expired since
            raise RefusedError(
                f"push refused: allowlist entry {entry.id} expired on {entry.expires}: the scan verdict "
                f"of {image} may rest on it",
                f"review it in {paths.shown(opts.scan.allowlist)}, then scan again: "
                f"nox -s scan {image.select}",
            )
    for shown, digest in rec.inputs.lockfiles.items():
        path = paths.ROOT / shown
        if not path.is_file() or lockfile.sha256(path) != digest:
            raise PipelineError(
                f"push refused: {shown}, which {image} was built from, changed or is gone since the build: "
                "the release manifest would describe another image",
                f"restore it, or rebuild: nox -s build {image.select}",
            )
    return rec


def _staged(selection: Selection, image: Image, opts: Options) -> record.Record:
    """The record of a staged candidate that the staging repository still serves, as an index
    (copied byte for byte): promote needs no local image, only the record and registries."""
    rec = selection.store.read(image.variant.name, image.flavor)
    if rec is None:
        raise PipelineError(
            f"promote refused: no record of {image} in {selection.reports}/records/",
            "bring the records of the jobs that built, staged, tested and scanned it (reports/records/)",
        )
    staged = stage_stage.still_staged(rec, image)
    if not remote_registry.is_index(staged.by_digest):
        raise RefusedError(
            f"promote refused: {staged.by_digest} is a single manifest; promotion copies an image "
            "index byte for byte, and a single manifest would get a new digest",
            f"build with attestations (`nox -s build {image.select} --attest provenance`), then stage it",
        )
    return rec


def _ours(rec: record.Record, ref: str, promote: bool) -> str | None:
    """The digest under `ref` if it is this image: the staged digest (promote), or the local
    image the record describes (push). None: another image, or no such tag."""
    if promote:
        assert rec.stage is not None
        found = remote_registry.digest(ref)
        return found if found == rec.stage.digest else None
    return remote_registry.serves(ref, rec.image_id)


def _push_verified(rec: record.Record, ref: str, promote: bool) -> str:
    """Put the recorded image at `ref`, read the digest back from the registry, check it is
    ours. Push: from its local image ID (never from a tag that could move meanwhile). Promote:
    a registry-side copy of the staged digest (no rebuild, no layer through this machine)."""
    if promote:
        assert rec.stage is not None
        engine.copy(rec.stage.by_digest, ref)
        placed = rec.stage.digest
    else:
        placed = engine.push_as(rec.image_id, ref, keep_tag=ref in rec.tags)
    _still_serves(rec, ref, placed, promote)
    return placed


def _still_serves(rec: record.Record, ref: str, digest: str, promote: bool) -> None:
    served = _ours(rec, ref, promote)
    if served is None or served != digest:
        raise RefusedError(
            f"{ref}: the registry serves {remote_registry.digest(ref)}, not the image just placed "
            f"({digest}, local {rec.image_id[:19]})",
            "check who else pushes to this repository (a concurrent push?); no moving tag was changed",
        )


def _forward_only(rec: record.Record, repository: str, moving: list[str], digest: str, force: bool) -> None:
    """Refuse, before any moving tag moves, when one names an image built from a newer commit."""
    ours = rec.labels.get(labels.CREATED, "")
    for name in moving:
        ref = f"{repository}:{name}"
        current = remote_registry.digest(ref)
        if current is None or current == digest:
            continue
        theirs = remote_registry.labels(ref).get(labels.CREATED)
        if tags.backwards(ours, theirs) and not force:
            raise RefusedError(
                f"push refused: {ref} names {current[:19]}, created {theirs or 'at an unknown time'}, "
                f"newer than this image ({ours}): moving tags never move backwards; none was moved",
                "release from a newer commit, or pass --force-move to roll the tags back deliberately",
            )


def _verb(opts: Options) -> str:
    return "promote" if opts.promote else "push"


def _past(verb: str) -> str:
    return {"promote": "promoted", "push": "pushed"}[verb]


def push(selection: Selection, image: Image, opts: Options) -> releasenotes.Manifest:
    repository, promote, verb = opts.target.repository, opts.promote, _verb(opts)
    rec = gate(selection, image, opts, local_registry.is_local(local_registry.host_of(repository)))
    local_registry.ensure(repository)
    immutable = tags.immutable_of(image.variant, image.flavor, rec)
    ref = f"{repository}:{immutable}"
    source = rec.stage.by_digest if promote and rec.stage else rec.image_id[:19]
    log.info("   %s (%s) -> %s", image, source, ref)
    existing = remote_registry.digest(ref)
    if existing is None:
        digest = _push_verified(rec, ref, promote)
        log.info("   verified: the registry serves %s under %s", digest, immutable)
    else:
        found = _ours(rec, ref, promote)
        if found is None:
            raise RefusedError(
                f"{verb} refused: immutable tag {ref} already names {existing}, which is not this image "
                f"({source}); immutable tags are never overwritten",
                "this commit was released as that digest before; a rebuild is another image (BuildKit's "
                "provenance records each build), so promote the digest that was tested then (re-run the "
                "publish job of that run), or release from a new commit"
                if promote
                else "a build of the same commit with other --attest or --compression options is another "
                "image: build it as released before; else find out why the same commit built different "
                "content (`nox -s build -- --no-cache` and compare), or release from a new commit",
            )
        digest = found
        log.info("   %s already names this image (%s): not %s again", immutable, digest, _past(verb))

    releases = selection.reports / "releases"
    lock_paths = sorted(rec.inputs.lockfiles)
    line = f"{repository}:{image.variant.name}-{image.flavor}"
    # the moving tag may name a newer release by now: a version tag's release keeps what this
    # image's first release recorded
    attached = functools.cache(remote_registry.attached_release)  # read once for both diffs
    before = (
        releasenotes.previous(line, digest, immutable, lock_paths, releases, attached)
        if opts.moving_tags
        else releasenotes.recorded(immutable, releases)
    )
    served = _platforms_served(rec, f"{repository}@{digest}")  # before any moving tag moves
    moving = tags.moving(selection.config, image.variant, image.flavor) if opts.moving_tags else []
    if not opts.moving_tags:
        log.info("   --immutable-only: the moving tags stay where they are")
    # the release manifest is made before any moving tag moves: what it reads fails here, if at all
    manifest = releasenotes.manifest(rec, repository, digest, immutable, moving, existing is not None)
    manifest["platforms"] = served
    manifest.update(before)
    if "os_package_diff" not in before:  # a version tag's release keeps what its first one recorded
        manifest.update(releasenotes.os_changes(manifest, releases, attached))
    manifest = releasenotes.round_trip(manifest)  # as attached: its notes render alike from it
    notes = releasenotes.markdown(manifest)
    _forward_only(rec, repository, moving, digest, opts.force_move)
    _still_serves(rec, ref, digest, promote)  # a concurrent push may have replaced it meanwhile
    # beside the image, so the next release on any machine compares with this one's packages;
    # the first release's stays (a re-run changes nothing in the registry)
    files_digest = _release_files(repository, digest, manifest, notes)
    to_move = [name for name in moving if remote_registry.digest(f"{repository}:{name}") != digest]
    for name in to_move:
        _push_verified(rec, f"{repository}:{name}", promote)
    if to_move:
        log.info("   moved %s to %s", ", ".join(to_move), digest)
    if len(to_move) < len(moving):
        log.info("   already there: %s", ", ".join(n for n in moving if n not in to_move))

    json_path, md_path = releasenotes.write(manifest, notes, releases)
    pushed = record.Pushed(
        ok=True,
        image_id=rec.image_id,
        repository=repository,
        digest=digest,
        references=manifest["references"],
        manifest=str(json_path),
        finished=manifest["pushed"],
        release_files=files_digest,
    )
    selection.store.save_section(image.variant.name, image.flavor, "push", pushed)
    log.info("== %s %s@%s; release manifest %s", _past(verb), ref, digest, md_path)
    return manifest


def _release_files(repository: str, digest: str, manifest: releasenotes.Manifest, notes: str) -> str:
    """Attach the release manifest and notes beside the image, or keep those of its first
    release after reading them back: files there that describe another image are refused, never
    kept (CI signs what is there). Returns their digest."""
    files = f"{repository}:{tags.release_files(digest)}"
    found = remote_registry.digest(files)
    if found is None:
        found = remote_registry.attach_release(
            repository, digest, releasenotes.serialized(manifest), notes.encode()
        )
        log.info("   release manifest and notes attached: %s", files)
        return found
    first = remote_registry.attached_release(repository, digest, found)  # exactly the digest kept
    why = "they are gone" if first is None else releasenotes.unlike(first.manifest, first.notes, manifest)
    if why:
        raise RefusedError(
            f"{files} holds files that are not the release manifest and notes of {repository}@{digest} "
            f"({manifest['immutable_tag']}): {why}; they would be kept and signed as this image's",
            "remove that tag from the registry, then push again: the push attaches them anew",
        )
    log.info("   %s holds the manifest of this image's first release: kept", files)
    return found


def _platforms_served(rec: record.Record, ref: str) -> list[dict[str, object]]:
    """Every platform the image was built for, served under the pushed index by its own digest."""
    served = remote_registry.platforms(ref)
    names = {str(p["platform"]) for p in served if p["served"]}
    missing = [p for p in rec.build.platforms if p not in names] if len(rec.build.platforms) > 1 else []
    if missing:
        raise ToolError(
            f"{ref} does not serve {', '.join(missing)} (it serves {', '.join(sorted(names)) or 'none'})",
            "push again; if it persists, check that the registry accepts image indexes",
        )
    for p in served:
        log.info("   %s: %s (%.2f GB compressed)", p["platform"], p["digest"], int(str(p["size"])) / 1e9)
    return served
