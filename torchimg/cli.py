"""Command line of the pipeline: `python -m torchimg STAGE [options]`; nox sessions call it.

Every PipelineError ends the process with its message, its fix, and exit status 2.
"""

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from torchimg import (
    build,
    buildreport,
    devtools,
    gate,
    imagetest,
    lock,
    paths,
    record,
    refresh,
    registry,
    release,
    releasenotes,
    scan,
    summary,
    variants,
)
from torchimg.credentials import resolve
from torchimg.errors import PipelineError


def _selection(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME",
        help="variant from variants.toml (repeatable; default: the default variant)",
    )
    p.add_argument("--all", action="store_true", help="every declared variant")
    p.add_argument("--locked", action="store_true", help="every variant whose lockfiles are committed")
    p.add_argument(
        "--base",
        default=os.environ.get("TORCHIMG_BASE") or None,
        metavar="REF",
        help="build on this base image instead of the variant's pinned one "
        "(a local image works; default: $TORCHIMG_BASE)",
    )
    p.add_argument(
        "--ca-bundle",
        metavar="PATH",
        help="extra CA bundle for the package index, given to BuildKit as a secret "
        "(default: $TORCHIMG_CA_BUNDLE, $PIP_CERT, $REQUESTS_CA_BUNDLE)",
    )
    p.add_argument(
        "--netrc",
        metavar="PATH",
        help="netrc with private-index credentials, as a secret (default: $TORCHIMG_NETRC)",
    )


def _variants(args: argparse.Namespace, config: variants.Config) -> list[variants.Variant]:
    return config.select(args.variant, args.all, args.locked)


def _lock(args: argparse.Namespace, config: variants.Config) -> None:
    lock.lock(
        _variants(args, config),
        resolve(args.ca_bundle, args.netrc),
        check=args.check,
        base=args.base,
        upgrade=args.upgrade,
    )


def _build(args: argparse.Namespace, config: variants.Config) -> None:
    opts = build.BuildOptions(
        base=args.base,
        creds=resolve(args.ca_bundle, args.netrc),
        cache=not args.no_cache,
        repository=args.repository or config.repository,
        builder=args.builder or config.builder,
        cache_repository=args.cache_repository or config.cache,
        compression=args.compression,
        attest=tuple(args.attest),
    )
    _each_image(args, config, "build", lambda variant, flavor: build.build(variant, flavor, opts))


def _each_image(
    args: argparse.Namespace,
    config: variants.Config,
    stage: str,
    run: Callable[[variants.Variant, str], object],
) -> None:
    """Run a stage on every selected image; one failing image does not stop the others."""
    failed = []
    for variant in _variants(args, config):
        for flavor in args.flavor or variant.flavors:
            try:
                run(variant, flavor)
            except PipelineError as exc:
                print(f"error: {exc}", file=sys.stderr)
                failed.append(f"{variant.name} {flavor}")
    if failed:
        raise PipelineError(f"{stage} failed for: {', '.join(failed)}")


def _test(args: argparse.Namespace, config: variants.Config) -> None:
    opts = imagetest.TestOptions(
        require_gpu=args.require_gpu,
        bench=not args.no_bench,
        threshold=args.threshold,
        update_baseline=args.update_baseline,
    )
    _each_image(args, config, "test", lambda variant, flavor: imagetest.test(variant, flavor, opts))


def _scan(args: argparse.Namespace, config: variants.Config) -> None:
    opts = scan.ScanOptions(
        policy=gate.Policy(vuln_min=args.severity, fixed_only=not args.include_unfixed),
        allow_no_vuln_db=args.allow_no_vuln_db,
        cache_dir=args.cache_dir,
        db_repository=args.db_repository,
    )
    _each_image(args, config, "scan", lambda variant, flavor: scan.scan(variant, flavor, opts))


def _push(args: argparse.Namespace, config: variants.Config) -> None:
    opts = release.PushOptions(
        repository=args.repository or config.repository,
        allow_no_vuln_db=args.allow_no_vuln_db,
        allow_dirty=args.allow_dirty,
    )
    pushed: list[releasenotes.Manifest] = []
    try:
        _each_image(args, config, "push", lambda v, f: pushed.append(release.push(config, v, f, opts)))
    finally:
        for m in pushed:
            print(f"pushed {m['variant']} {m['flavor']}: {m['digest']}")
            for ref in m["references"]:
                print(f"  {ref.split('@')[0]}")


def _registry(args: argparse.Namespace, config: variants.Config) -> None:
    print(devtools.registry_action(args.action, args.host))


def _matrix(args: argparse.Namespace, config: variants.Config) -> None:
    """JSON list of the variants with committed lockfiles: a CI matrix."""
    print(json.dumps([v.name for v in config.select([], locked=True)]))


def _digests(args: argparse.Namespace, config: variants.Config) -> None:
    """`repository@digest` of every pushed image of the selection (what CI signs)."""
    for variant in _variants(args, config):
        for flavor in variant.flavors:
            pushed = (record.read(variant.name, flavor) or {}).get("push")
            if pushed and pushed.get("ok"):
                repository = pushed["references"][0].split("@")[0].rsplit(":", 1)[0]
                print(f"{repository}@{pushed['digest']}")


def _summary(args: argparse.Namespace, config: variants.Config) -> None:
    print(summary.markdown(), end="")


def _refresh_bases(args: argparse.Namespace, config: variants.Config) -> None:
    if args.pull_request_body:
        print(refresh.pull_request_body().read_text())
        return
    refresh.refresh(args.file, args.base_key, args.check)


def _lint_config(args: argparse.Namespace, config: variants.Config) -> None:
    try:
        scan.trivy()
    except PipelineError as exc:
        if not args.if_available:
            raise
        print(f"warning: trivy config skipped: {exc}", file=sys.stderr)
        return
    scan.config_lint()


def _build_report(args: argparse.Namespace, config: variants.Config) -> None:
    variant = config.select(args.variant)[0]
    figures = buildreport.run(variant, args.base, resolve(args.ca_bundle, args.netrc))
    print(buildreport.write(figures).read_text())


def _lock_tools(args: argparse.Namespace, config: variants.Config) -> None:
    lock.lock_tools(check=args.check)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m torchimg", description=__doc__)
    sub = p.add_subparsers(dest="stage", required=True)

    lk = sub.add_parser("lock", help="pip-compile hash-pinned lockfiles per variant")
    _selection(lk)
    lk.add_argument(
        "--check",
        action="store_true",
        help="recompile to a temp dir and fail on any difference (drift check)",
    )
    lk.add_argument(
        "--upgrade", action="store_true", help="move every pin to the newest release (default: keep pins)"
    )
    lk.set_defaults(func=_lock)

    bd = sub.add_parser("build", help="build images through BuildKit and record them")
    _selection(bd)
    bd.add_argument(
        "--flavor",
        action="append",
        choices=variants.FLAVORS,
        default=[],
        help="runtime or dev (repeatable; default: the variant's flavors)",
    )
    bd.add_argument("--no-cache", action="store_true", help="build without BuildKit's cache")
    bd.add_argument(
        "--builder",
        default=os.environ.get("TORCHIMG_BUILDER"),
        help="named buildx builder, e.g. a remote BuildKit (default: $TORCHIMG_BUILDER, "
        "variants.toml `builder`, else docker's current one)",
    )
    bd.add_argument(
        "--cache-repository",
        default=os.environ.get("TORCHIMG_CACHE"),
        metavar="REPO",
        help="registry cache to import and export, one ref per variant and flavor "
        "(default: $TORCHIMG_CACHE, variants.toml `cache`, else none)",
    )
    bd.add_argument(
        "--compression",
        choices=build.COMPRESSIONS,
        default="gzip",
        help="layer compression (zstd: smaller and faster to pull, needs Docker >= 23 / containerd >= 1.5)",
    )
    bd.add_argument(
        "--attest",
        action="append",
        choices=build.ATTESTATIONS,
        default=[],
        help="attach BuildKit attestations to the image (release builds: both)",
    )
    bd.add_argument(
        "--repository",
        default=os.environ.get("TORCHIMG_REPOSITORY"),
        help="image repository for tags (default: variants.toml `repository`)",
    )
    bd.set_defaults(func=_build)

    ts = sub.add_parser("test", help="run the smoke checks and matmul benchmark in the built images")
    _selection(ts)
    ts.add_argument("--flavor", action="append", choices=variants.FLAVORS, default=[])
    ts.add_argument("--require-gpu", action="store_true", help="no GPU visible is a failure (GPU runners)")
    ts.add_argument("--no-bench", action="store_true", help="smoke checks only")
    ts.add_argument("--threshold", type=float, default=0.10, help="bench regression gate (default 0.10)")
    ts.add_argument("--update-baseline", action="store_true", help="store this bench as the GPU's baseline")
    ts.set_defaults(func=_test)

    sc = sub.add_parser("scan", help="trivy: vulnerabilities, secrets, licenses, misconfigurations; the gate")
    _selection(sc)
    sc.add_argument("--flavor", action="append", choices=variants.FLAVORS, default=[])
    sc.add_argument("--severity", choices=gate.SEVERITIES, default="HIGH", help="lowest blocking severity")
    sc.add_argument("--include-unfixed", action="store_true", help="vulnerabilities without a fix block too")
    sc.add_argument(
        "--allow-no-vuln-db",
        action="store_true",
        help="accept that the vulnerability part cannot run (offline, no DB mirror); recorded as such",
    )
    sc.add_argument("--cache-dir", help="trivy cache dir (e.g. a pre-filled one for offline use)")
    sc.add_argument("--db-repository", help="trivy DB mirror (OCI repository)")
    sc.set_defaults(func=_scan)

    ps = sub.add_parser("push", help="push images that passed build, test and scan; verify; move tags")
    _selection(ps)
    ps.add_argument("--flavor", action="append", choices=variants.FLAVORS, default=[])
    ps.add_argument(
        "--repository",
        default=os.environ.get("TORCHIMG_REPOSITORY"),
        help="target image repository (default: variants.toml `repository`, the local registry)",
    )
    ps.add_argument(
        "--allow-no-vuln-db",
        action="store_true",
        help="release to a remote registry although the scan could not check vulnerabilities",
    )
    ps.add_argument(
        "--allow-dirty",
        action="store_true",
        help="release an image built from uncommitted changes (its immutable tag ends in -dirty)",
    )
    ps.set_defaults(func=_push)

    rg = sub.add_parser("registry", help="the embedded local registry: up, down, status")
    rg.add_argument("action", choices=["up", "down", "status"])
    rg.add_argument("--host", default=registry.LOCAL, help=f"where it listens (default {registry.LOCAL})")
    rg.set_defaults(func=_registry)

    mx = sub.add_parser("matrix", help="JSON list of the variants with committed lockfiles (CI matrix)")
    mx.set_defaults(func=_matrix)

    dg = sub.add_parser("digests", help="repository@digest of each pushed image (to sign)")
    _selection(dg)
    dg.set_defaults(func=_digests)

    sm = sub.add_parser("summary", help="Markdown table of every recorded image and its stages")
    sm.set_defaults(func=_summary)

    rb = sub.add_parser("refresh-bases", help="pin each base tag's current digest in variants.toml")
    rb.add_argument("--base-key", action="append", default=[], help="only this base (repeatable)")
    rb.add_argument("--check", action="store_true", help="report moved tags and fail; change nothing")
    rb.add_argument("--file", type=Path, default=paths.VARIANTS_FILE, help=argparse.SUPPRESS)
    rb.add_argument(
        "--pull-request-body",
        action="store_true",
        help="write reports/refresh/pull-request.md (digest, lockfile, package diffs) after re-locking",
    )
    rb.set_defaults(func=_refresh_bases)

    lc = sub.add_parser("lint-config", help="trivy config over docker/: fail on any misconfiguration")
    lc.add_argument("--if-available", action="store_true", help="warn and pass when trivy is not installed")
    lc.set_defaults(func=_lint_config)

    rp = sub.add_parser("build-report", help="benchmark the build against the naive baseline")
    _selection(rp)
    rp.set_defaults(func=_build_report)

    lt = sub.add_parser("lock-tools", help="recompile the pipeline's own tool lockfiles")
    lt.add_argument("--check", action="store_true", help="fail on drift instead of writing")
    lt.set_defaults(func=_lock_tools)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    func: Callable[[argparse.Namespace, variants.Config], None] = args.func
    try:
        func(args, variants.load())
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
