"""`nox -s push`: release an image that passed every gate, under tags that never lie.

Order, so that a failure anywhere leaves no moving tag on an unverified image:
gates (build, test, scan of this exact image ID) -> registry answers -> immutable tag
(refused if it already names other content) -> digest read back from the registry and
checked against the local image -> only then the moving tags, each read back too ->
release manifest and record.
"""

import dataclasses
import sys
from dataclasses import dataclass

from torchimg import engine, lockfile, paths, record, registry, releasenotes, scan, tags
from torchimg.errors import PipelineError, RefusedError
from torchimg.variants import Config, Variant

CREATED = "org.opencontainers.image.created"


@dataclass(frozen=True)
class PushOptions:
    repository: str
    allow_no_vuln_db: bool = False
    allow_dirty: bool = False
    force_move: bool = False
    scan_options: scan.ScanOptions | None = None


def refusal(
    rec: record.Record, opts: PushOptions, local_target: bool, policy: dict[str, str] | None = None
) -> RefusedError | None:
    """Why the record does not allow this push (None: it does). Pure: reads the record only.
    `policy`: the scan policy this push applies; a scan judged under another one is refused."""
    what = f"{rec.variant} {rec.flavor}"
    select = f"-- --variant {rec.variant} --flavor {rec.flavor}"
    if not rec.passed("build"):
        return RefusedError(f"push refused: {what} has no successful build", f"nox -s build {select}")
    if not rec.passed("test"):
        state = "failed its test" if rec.test is not None else "has not been tested"
        return RefusedError(f"push refused: {what} ({rec.image_id[:19]}) {state}", f"nox -s test {select}")
    if rec.scan is None or not rec.passed("scan"):
        problems = "; ".join(rec.scan.problems) if rec.scan else "not scanned"
        return RefusedError(f"push refused: {what} failed its scan gate: {problems}", f"nox -s scan {select}")
    if policy is not None and rec.scan.policy != policy:
        return RefusedError(
            f"push refused: {what} was scanned under another policy ({rec.scan.policy or 'unrecorded'}) "
            f"than this push applies ({policy})",
            f"scan again with the same --severity, --include-unfixed and --allowlist: nox -s scan {select}",
        )
    if not rec.scan.vuln_db.available and not (local_target or opts.allow_no_vuln_db):
        return RefusedError(
            f"push refused: the scan of {what} could not check vulnerabilities ({rec.scan.vuln_db.how}); "
            f"a release to {opts.repository} needs that",
            "scan where trivy's DB is reachable (or mirrored: --db-repository), or accept it "
            "with push --allow-no-vuln-db",
        )
    git = rec.inputs.git
    if git.dirty and not opts.allow_dirty:
        return RefusedError(
            f"push refused: {what} was built from a working tree with uncommitted changes, so "
            f"commit {git.revision[:7]} does not describe it",
            "commit, rebuild and test; or pass --allow-dirty (the immutable tag then ends in -dirty)",
        )
    return None


def gate(variant: Variant, flavor: str, opts: PushOptions, local_target: bool) -> record.Record:
    """The record of an image that passed build, test and scan; else refuse, naming the stage.

    A scan not yet run for this image runs now (it is part of the release gate). A scan
    whose vulnerability part could not run is accepted for the embedded local registry (it
    stays on this machine) and elsewhere only with --allow-no-vuln-db. A scan that failed to
    run is never accepted.
    """
    rec = record.of_built_image(variant.name, flavor)
    if rec.passed("build") and rec.passed("test") and rec.scan is None:
        print(
            f"== push: {variant.name} {flavor} has not been scanned yet: running the scan gate now",
            file=sys.stderr,
        )
        scan_opts = dataclasses.replace(opts.scan_options or scan.ScanOptions(), allow_no_vuln_db=True)
        try:
            rec = scan.scan(variant, flavor, scan_opts)
        except PipelineError as exc:
            exc.what = f"push refused: {exc.what}"
            raise
    refused = refusal(rec, opts, local_target, (opts.scan_options or scan.ScanOptions()).policy_fingerprint())
    if refused is not None:
        raise refused
    for shown, digest in rec.inputs.lockfiles.items():
        path = paths.ROOT / shown
        if not path.is_file() or lockfile.sha256(path) != digest:
            raise PipelineError(
                f"push refused: {shown}, which {variant.name} {flavor} was built from, changed or is gone "
                "since the build: the release manifest would describe another image",
                f"restore it, or rebuild: nox -s build -- --variant {variant.name} --flavor {flavor}",
            )
    return rec


def _previous(ref: str, ours: str, immutable_tag: str, lock_paths: list[str]) -> dict[str, object]:
    """What the moving tag named before this push, and the package diff against it."""
    digest = engine.remote_digest(ref)
    if digest is None:
        return {"previous": None, "package_diff": None}
    if digest == ours:
        earlier = releasenotes.read(immutable_tag) or {}
        return {k: earlier.get(k) for k in ("previous", "package_diff", "package_diff_note")}
    revision = engine.remote_labels(ref).get("org.opencontainers.image.revision", "unknown")
    out: dict[str, object] = {"previous": {"ref": ref, "digest": digest, "revision": revision}}
    before = releasenotes.packages_at(revision, lock_paths)
    if before is None:
        out["package_diff"] = None
        out["package_diff_note"] = (
            f"commit {revision[:12]} is not in this clone (`git fetch --unshallow` and push again)"
        )
    else:
        out["package_diff"] = releasenotes.diff(before, releasenotes.packages(lock_paths))
    return out


def _push_verified(rec: record.Record, ref: str) -> str:
    """Push the recorded image as `ref`, read the digest back from the registry, check it is
    ours. The tag is added from the image ID (not a tag that could move meanwhile), and
    removed again unless it is the build's own tag."""
    pushed = engine.push_as(rec.image_id, ref, keep_tag=ref in rec.tags)
    _still_serves(rec, ref, pushed)
    return pushed


def _still_serves(rec: record.Record, ref: str, digest: str) -> None:
    served = engine.serves(ref, rec.image_id)
    if served is None or served != digest:
        raise RefusedError(
            f"{ref}: the registry serves {engine.remote_digest(ref)}, not the image just pushed "
            f"({digest}, local {rec.image_id[:19]})",
            "check who else pushes to this repository (a concurrent push?); no moving tag was changed",
        )


def _forward_only(rec: record.Record, repository: str, moving: list[str], digest: str, force: bool) -> None:
    """Refuse, before any moving tag moves, when one names an image built from a newer commit."""
    ours = rec.labels.get(CREATED, "")
    for name in moving:
        ref = f"{repository}:{name}"
        current = engine.remote_digest(ref)
        if current is None or current == digest:
            continue
        theirs = engine.remote_labels(ref).get(CREATED)
        if tags.backwards(ours, theirs) and not force:
            raise RefusedError(
                f"push refused: {ref} names {current[:19]}, created {theirs or 'at an unknown time'}, "
                f"newer than this image ({ours}): moving tags never move backwards; none was moved",
                "release from a newer commit, or pass --force-move to roll the tags back deliberately",
            )


def push(config: Config, variant: Variant, flavor: str, opts: PushOptions) -> releasenotes.Manifest:
    host = registry.host_of(opts.repository)
    rec = gate(variant, flavor, opts, registry.is_local(host))
    registry.ensure(opts.repository)
    immutable = tags.immutable_of(variant, flavor, rec)
    ref = f"{opts.repository}:{immutable}"
    print(f"== push {variant.name} {flavor} ({rec.image_id[:19]}) -> {ref}", file=sys.stderr)

    existing = engine.remote_digest(ref)
    if existing is not None:
        digest = engine.serves(ref, rec.image_id)
        if digest is None:
            raise RefusedError(
                f"push refused: immutable tag {ref} already names {existing}, which is not this image "
                f"({rec.image_id[:19]}); immutable tags are never overwritten",
                "a build of the same commit with other --attest or --compression options is another "
                "image: build it as released before; else find out why the same commit built "
                "different content (`nox -s build -- --no-cache` and compare), or release from a "
                "new commit",
            )
        print(f"   {immutable} already names this image ({digest}): not pushed again", file=sys.stderr)
    else:
        digest = _push_verified(rec, ref)
        print(f"   verified: the registry serves {digest} under {immutable}", file=sys.stderr)

    lock_paths = sorted(rec.inputs.lockfiles)
    before = _previous(f"{opts.repository}:{variant.name}-{flavor}", digest, immutable, lock_paths)
    moving = tags.moving(config, variant, flavor)
    _forward_only(rec, opts.repository, moving, digest, opts.force_move)
    _still_serves(rec, ref, digest)  # a concurrent push may have replaced it meanwhile
    for name in moving:
        _push_verified(rec, f"{opts.repository}:{name}")
    print(f"   moved {', '.join(moving)} to {digest}", file=sys.stderr)

    manifest = releasenotes.manifest(rec, opts.repository, digest, immutable, moving, existing is not None)
    manifest.update(before)
    json_path, md_path = releasenotes.write(manifest)
    pushed = record.Pushed(
        ok=True,
        image_id=rec.image_id,
        repository=opts.repository,
        digest=digest,
        references=manifest["references"],
        manifest=str(json_path),
        finished=manifest["pushed"],
    )
    record.save_section(variant.name, flavor, "push", pushed)
    print(f"== pushed {ref}@{digest}; release manifest {md_path}", file=sys.stderr)
    return manifest
