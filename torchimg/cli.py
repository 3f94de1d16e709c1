"""Command line of the pipeline: `python -m torchimg STAGE [options]`; nox sessions call it.

Exit status: 0 done, 1 a gate refused (test failed, scan blocks, push refused), 2 bad input
or configuration, 3 a tool or service failed (engine, registry, trivy, git, pip-compile).
Every input is checked before the engine is touched.
"""

import argparse
import datetime
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from torchimg import (
    allowlist,
    build,
    buildreport,
    devtools,
    gate,
    imagetest,
    lock,
    paths,
    record,
    references,
    refresh,
    registry,
    release,
    releasenotes,
    scan,
    summary,
    variants,
)
from torchimg.credentials import resolve
from torchimg.errors import TOOL_FAILED, PipelineError, ToolError, worst


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
        type=_reference("--base ($TORCHIMG_BASE)", references.image),
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


def _reference(what: str, check: Callable[[str, str], str]) -> Callable[[str], str]:
    """argparse type: an image reference or repository, checked against Docker's grammar."""

    def parse(value: str) -> str:
        try:
            return check(value, what)
        except PipelineError as exc:
            raise argparse.ArgumentTypeError(f"{exc.what}; {exc.fix}") from None

    return parse


def _variants(args: argparse.Namespace, config: variants.Config) -> list[variants.Variant]:
    return config.select(args.variant, args.all, args.locked)


def _images(args: argparse.Namespace, config: variants.Config) -> list[tuple[variants.Variant, str]]:
    """The (variant, flavor) pairs a per-image stage runs on; an unknown flavor is bad input."""
    pairs = []
    for variant in _variants(args, config):
        for flavor in args.flavor or variant.flavors:
            if flavor not in variant.flavors:
                raise PipelineError(
                    f"variant {variant.name} has no flavor {flavor!r} (it has {', '.join(variant.flavors)})",
                    "pick one of those with --flavor",
                )
            pairs.append((variant, flavor))
    if not pairs:
        raise PipelineError(
            "no image selected" + (" (no variant has committed lockfiles)" if args.locked else ""),
            "name one with --variant NAME, or commit a variant's lockfiles (`nox -s lock`)",
        )
    return pairs


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
    images = _images(args, config)
    for variant, flavor in images:
        build.check_inputs(variant, flavor, opts)
    _each_image(images, "build", lambda variant, flavor: build.build(variant, flavor, opts))


def _each_image(
    images: list[tuple[variants.Variant, str]],
    stage: str,
    run: Callable[[variants.Variant, str], object],
) -> None:
    """Run a stage on every selected image; one failing image does not stop the others. The
    run ends with one summary line, and the exit status of the worst failure."""
    failed: list[tuple[str, PipelineError]] = []
    for variant, flavor in images:
        try:
            run(variant, flavor)
        except PipelineError as exc:
            print(f"error: {stage} of {variant.name} {flavor}: {exc}", file=sys.stderr)
            failed.append((f"{variant.name} {flavor}", exc))
        except Exception as exc:  # unclassified: still a failed image, and the loop goes on
            if os.environ.get("TORCHIMG_DEBUG"):
                raise
            unclassified = ToolError(
                f"{type(exc).__name__}: {exc}", "rerun with TORCHIMG_DEBUG=1 for the traceback"
            )
            print(f"error: {stage} of {variant.name} {flavor}: {unclassified}", file=sys.stderr)
            failed.append((f"{variant.name} {flavor}", unclassified))
    if failed:
        done = len(images) - len(failed)
        summary = PipelineError(
            f"{stage}: {done} of {len(images)} image(s) done; failed: "
            + ", ".join(f"{name} (exit {exc.exit_code})" for name, exc in failed)
        )
        summary.exit_code = worst([exc.exit_code for _, exc in failed])
        raise summary
    print(f"== {stage}: {len(images)} image(s) done", file=sys.stderr)


def _test(args: argparse.Namespace, config: variants.Config) -> None:
    opts = imagetest.TestOptions(
        require_gpu=args.require_gpu,
        bench=not args.no_bench,
        threshold=args.threshold,
        update_baseline=args.update_baseline,
    )
    _each_image(_images(args, config), "test", lambda variant, flavor: imagetest.test(variant, flavor, opts))


def _scan_options(args: argparse.Namespace, allow_no_vuln_db: bool) -> scan.ScanOptions:
    opts = scan.ScanOptions(
        policy=gate.Policy(vuln_min=args.severity, fixed_only=not args.include_unfixed),
        allowlist=args.allowlist,
        allow_no_vuln_db=allow_no_vuln_db,
        cache_dir=args.cache_dir,
        db_repository=args.db_repository,
        max_db_age_days=args.max_db_age_days,
    )
    allowlist.load(opts.allowlist, datetime.date.today())  # bad input fails before any image
    return opts


def _scan(args: argparse.Namespace, config: variants.Config) -> None:
    opts = _scan_options(args, args.allow_no_vuln_db)
    _each_image(_images(args, config), "scan", lambda variant, flavor: scan.scan(variant, flavor, opts))


def _push(args: argparse.Namespace, config: variants.Config) -> None:
    opts = release.PushOptions(
        repository=args.repository or config.repository,
        allow_no_vuln_db=args.allow_no_vuln_db,
        allow_dirty=args.allow_dirty,
        force_move=args.force_move,
        scan_options=_scan_options(args, True),
    )
    images = _images(args, config)
    pushed: list[releasenotes.Manifest] = []
    try:
        _each_image(images, "push", lambda v, f: pushed.append(release.push(config, v, f, opts)))
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
            rec = record.read(variant.name, flavor)
            if rec is not None and rec.push is not None and rec.passed("push"):
                print(f"{rec.push.repository}@{rec.push.digest}")


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


def _scan_policy(p: argparse.ArgumentParser) -> None:
    """The scan gate's options: `scan` uses them, and `push` for the scan it runs itself."""
    p.add_argument("--severity", choices=gate.SEVERITIES, default="HIGH", help="lowest blocking severity")
    p.add_argument("--include-unfixed", action="store_true", help="vulnerabilities without a fix block too")
    p.add_argument(
        "--allowlist",
        type=Path,
        default=paths.ROOT / "scan-allowlist.toml",
        help="accepted findings, each with a reason and an expiry (default: scan-allowlist.toml)",
    )
    p.add_argument("--cache-dir", help="trivy cache dir (e.g. a pre-filled one for offline use)")
    p.add_argument("--db-repository", help="trivy DB mirror (OCI repository)")
    p.add_argument(
        "--max-db-age-days",
        type=int,
        default=7,
        help="when the DB cannot be updated, a cached one counts only if this recent (default 7)",
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m torchimg", description=__doc__)
    p.add_argument(
        "--config",
        type=Path,
        default=Path(os.environ.get("TORCHIMG_CONFIG") or paths.VARIANTS_FILE),
        metavar="PATH",
        help="the variants file (default: variants.toml; $TORCHIMG_CONFIG)",
    )
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
        default=os.environ.get("TORCHIMG_BUILDER") or None,
        help="named buildx builder, e.g. a remote BuildKit (default: $TORCHIMG_BUILDER, "
        "variants.toml `builder`, else docker's current one)",
    )
    bd.add_argument(
        "--cache-repository",
        default=os.environ.get("TORCHIMG_CACHE") or None,
        type=_reference("--cache-repository ($TORCHIMG_CACHE)", references.repository),
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
        default=os.environ.get("TORCHIMG_REPOSITORY") or None,
        type=_reference("--repository ($TORCHIMG_REPOSITORY)", references.repository),
        help="image repository for tags (default: $TORCHIMG_REPOSITORY, variants.toml `repository`)",
    )
    bd.set_defaults(func=_build)

    ts = sub.add_parser("test", help="run the smoke checks and matmul benchmark in the built images")
    _selection(ts)
    ts.add_argument("--flavor", action="append", choices=variants.FLAVORS, default=[])
    ts.add_argument("--require-gpu", action="store_true", help="no GPU visible is a failure (GPU runners)")
    ts.add_argument("--no-bench", action="store_true", help="smoke checks only")
    ts.add_argument(
        "--threshold",
        type=imagetest.threshold,
        default=0.10,
        help="bench regression gate: a fraction in (0, 1) (default 0.10)",
    )
    ts.add_argument("--update-baseline", action="store_true", help="store this bench as the GPU's baseline")
    ts.set_defaults(func=_test)

    sc = sub.add_parser("scan", help="trivy: vulnerabilities, secrets, licenses, misconfigurations; the gate")
    _selection(sc)
    sc.add_argument("--flavor", action="append", choices=variants.FLAVORS, default=[])
    _scan_policy(sc)
    sc.add_argument(
        "--allow-no-vuln-db",
        action="store_true",
        help="accept that the vulnerability part cannot run (offline, no DB mirror); recorded as such",
    )
    sc.set_defaults(func=_scan)

    ps = sub.add_parser("push", help="push images that passed build, test and scan; verify; move tags")
    _selection(ps)
    ps.add_argument("--flavor", action="append", choices=variants.FLAVORS, default=[])
    ps.add_argument(
        "--repository",
        default=os.environ.get("TORCHIMG_REPOSITORY") or None,
        type=_reference("--repository ($TORCHIMG_REPOSITORY)", references.repository),
        help="target image repository (default: $TORCHIMG_REPOSITORY, variants.toml `repository`)",
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
    ps.add_argument(
        "--force-move",
        action="store_true",
        help="move the moving tags even when they name an image of a newer commit (a deliberate rollback)",
    )
    _scan_policy(ps)
    ps.set_defaults(func=_push)

    rg = sub.add_parser("registry", help="the embedded local registry: up, down, status")
    rg.add_argument("action", choices=["up", "down", "status"])
    rg.add_argument(
        "--host",
        default=registry.LOCAL,
        type=_reference("--host", registry.check_host),
        help=f"where it listens, HOST:PORT (default {registry.LOCAL})",
    )
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
        func(args, variants.load(args.config))
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted; no moving tag is moved before its image is verified", file=sys.stderr)
        return 130
    except Exception as exc:  # a failure no adapter classified: still no traceback for the user
        if os.environ.get("TORCHIMG_DEBUG"):
            raise
        where = traceback.extract_tb(exc.__traceback__)[-1]
        print(
            f"error: {args.stage} failed: {type(exc).__name__}: {exc} (at {Path(where.filename).name}:"
            f"{where.lineno})\n  fix: rerun with TORCHIMG_DEBUG=1 for the traceback, and report it",
            file=sys.stderr,
        )
        return TOOL_FAILED
    return 0
