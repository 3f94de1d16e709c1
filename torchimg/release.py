"""`nox -s push`: release an image that passed every gate, under tags that never lie.

Order, so that a failure anywhere leaves no moving tag on an unverified image:
gates (build, test, scan of this exact image ID) -> registry answers -> immutable tag
(refused if it already names other content) -> digest read back from the registry and
checked against the local image -> only then the moving tags, each read back too ->
release manifest and record.
"""

import dataclasses
import datetime
import sys
from dataclasses import dataclass

from torchimg import engine, record, registry, releasenotes, scan, tags
from torchimg.errors import PipelineError
from torchimg.variants import Config, Variant


@dataclass(frozen=True)
class PushOptions:
    repository: str
    allow_no_vuln_db: bool = False
    allow_dirty: bool = False
    scan_options: scan.ScanOptions | None = None


def _passed(rec: record.Record, stage: str) -> bool:
    result = rec.get(stage) or {}
    return bool(result.get("ok")) and result.get("image_id", rec["image_id"]) == rec["image_id"]


def gate(variant: Variant, flavor: str, opts: PushOptions, local_target: bool) -> record.Record:
    """The record of an image that passed build, test and scan; else refuse, naming the stage.

    A scan not yet run for this image runs now (it is part of the release gate). A scan
    whose vulnerability part could not run is accepted for the embedded local registry (it
    stays on this machine) and elsewhere only with --allow-no-vuln-db.
    """
    what = f"{variant.name} {flavor}"
    rec = record.of_built_image(variant.name, flavor)
    select = f"-- --variant {variant.name} --flavor {flavor}"
    if not _passed(rec, "build"):
        raise PipelineError(f"push refused: {what} has no successful build", f"nox -s build {select}")
    if not _passed(rec, "test"):
        state = "failed test" if "test" in rec else "has not been tested"
        raise PipelineError(f"push refused: {what} ({rec['image_id'][:19]}) {state}", f"nox -s test {select}")
    if "scan" not in rec:
        print(f"== push: {what} has not been scanned yet: running the scan gate now", file=sys.stderr)
        scan_opts = dataclasses.replace(opts.scan_options or scan.ScanOptions(), allow_no_vuln_db=True)
        try:
            rec = scan.scan(variant, flavor, scan_opts)
        except PipelineError as exc:
            raise PipelineError(f"push refused: {exc.what}", exc.fix or f"nox -s scan {select}") from None
    if not _passed(rec, "scan"):
        problems = "; ".join(rec["scan"].get("problems", [])) or "see its reports"
        raise PipelineError(f"push refused: {what} failed its scan gate: {problems}", f"nox -s scan {select}")
    if rec["scan"].get("vulnerabilities") != "ran" and not (local_target or opts.allow_no_vuln_db):
        raise PipelineError(
            f"push refused: the scan of {what} could not check vulnerabilities "
            f"({rec['scan']['vulnerabilities']}); a release to {opts.repository} needs that",
            "scan where trivy's DB is reachable (or mirrored: --db-repository), or accept it "
            "with push --allow-no-vuln-db",
        )
    git = rec["inputs"]["git"]
    if git["dirty"] and not opts.allow_dirty:
        raise PipelineError(
            f"push refused: {what} was built from a working tree with uncommitted changes, so "
            f"commit {git['revision'][:7]} does not describe it",
            "commit, rebuild and test; or pass --allow-dirty (the immutable tag then ends in -dirty)",
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
    image_id = rec["image_id"]
    pushed = engine.push_as(image_id, ref, keep_tag=ref in rec["tags"])
    served = engine.serves(ref, image_id)
    if served is None or served != pushed:
        raise PipelineError(
            f"{ref}: the registry serves {engine.remote_digest(ref)}, not the image just pushed "
            f"({pushed}, local {image_id[:19]})",
            "check who else pushes to this repository; no moving tag was changed",
        )
    return served


def push(config: Config, variant: Variant, flavor: str, opts: PushOptions) -> releasenotes.Manifest:
    host = registry.host_of(opts.repository)
    rec = gate(variant, flavor, opts, registry.is_local(host))
    registry.ensure(opts.repository)
    git = rec["inputs"]["git"]
    immutable = tags.immutable_of(variant, flavor, rec)
    ref = f"{opts.repository}:{immutable}"
    print(f"== push {variant.name} {flavor} ({rec['image_id'][:19]}) -> {ref}", file=sys.stderr)

    existing = engine.remote_digest(ref)
    if existing is not None:
        digest = engine.serves(ref, rec["image_id"])
        if digest is None:
            raise PipelineError(
                f"push refused: immutable tag {ref} already names {existing}, which is not this image "
                f"({rec['image_id'][:19]}); immutable tags are never overwritten",
                "a build of the same commit with other --attest or --compression options is another "
                "image: build it as released before; else find out why the same commit built "
                "different content (`nox -s build -- --no-cache` and compare), or release from a "
                "new commit",
            )
        print(f"   {immutable} already names this image ({digest}): not pushed again", file=sys.stderr)
    else:
        digest = _push_verified(rec, ref)
        print(f"   verified: the registry serves {digest} under {immutable}", file=sys.stderr)

    lock_paths = sorted(rec["inputs"]["lockfiles"])
    before = _previous(f"{opts.repository}:{variant.name}-{flavor}", digest, immutable, lock_paths)
    moving = tags.moving(config, variant, flavor)
    for name in moving:
        if _push_verified(rec, f"{opts.repository}:{name}") != digest:
            raise PipelineError(f"{opts.repository}:{name} does not serve {digest} after pushing it")
    print(f"   moved {', '.join(moving)} to {digest}", file=sys.stderr)

    labels = rec["labels"]
    ns = "io.torchimg."
    manifest: releasenotes.Manifest = {
        "variant": variant.name,
        "flavor": flavor,
        "pushed": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "repository": opts.repository,
        "digest": digest,
        "image_id": rec["image_id"],
        "immutable_tag": immutable,
        "moving_tags": moving,
        "already_present": existing is not None,
        "references": [f"{opts.repository}:{t}@{digest}" for t in [immutable, *moving]],
        "git": git,
        "base": {
            "name": labels["org.opencontainers.image.base.name"],
            "digest": labels["org.opencontainers.image.base.digest"],
            "pinned": rec["inputs"]["base"]["pinned"],
        },
        "lockfiles": rec["inputs"]["lockfiles"],
        "versions": {
            k: labels.get(f"{ns}{k}.version" if k != "driver_min" else f"{ns}driver.min")
            for k in ("torch", "cuda", "cudnn", "nccl", "python", "driver_min")
        },
        "smoke": rec["test"]["smoke"],
        "gpu": rec["test"]["gpu"],
        "bench": releasenotes.bench_summary(rec["test"]),
        "scan": {
            k: rec["scan"][k] for k in ("vulnerabilities", "accepted_without_vuln_db", "counts", "accepted")
        },
        "packages": releasenotes.packages(lock_paths),
        **before,
    }
    json_path, md_path = releasenotes.write(manifest)
    rec["push"] = {
        "ok": True,
        "image_id": rec["image_id"],
        "digest": digest,
        "references": manifest["references"],
        "manifest": str(json_path),
    }
    record.write(rec)
    print(f"== pushed {ref}@{digest}; release manifest {md_path}", file=sys.stderr)
    return manifest
