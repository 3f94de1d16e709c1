"""`nox -s scan`: trivy on the built image (by ID), then the scan policy: the gate.

Vulnerabilities (OS and Python packages), secrets and licenses in the image, and the
misconfigurations of docker/; trivy's JSON, a CycloneDX SBOM and SARIF under
reports/<variant>-<flavor>/. How trivy is run, and why each failure is "scan failed", is in
the trivy adapter; what blocks a release is in the scan policy.
"""

import argparse
import dataclasses
import datetime
import hashlib
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchimg import layers
from torchimg.adapters import emulation, trivy
from torchimg.errors import PipelineError, RefusedError, ToolError
from torchimg.model import allowlist, record, references, scan_policy
from torchimg.output import log
from torchimg.settings import Settings
from torchimg.stages import Image, Selection, StageResult, built, each_image

HELP = "trivy: vulnerabilities, secrets, licenses, misconfigurations; the gate"
SELECTS = "images"  # variants x flavors
BY_DIGEST = True  # --image REPOSITORY@DIGEST, --staged


@dataclass(frozen=True)
class Options:
    policy: scan_policy.Policy = field(default_factory=scan_policy.Policy)
    allowlist: Path = allowlist.DEFAULT
    allow_no_vuln_db: bool = False
    scanner: trivy.TrivyOptions = field(default_factory=trivy.TrivyOptions)
    today: datetime.date | None = None

    def policy_fingerprint(self) -> dict[str, str]:
        """What the verdict depends on besides the image: push checks that the scan it trusts
        was judged under the policy it would apply itself."""
        allow = self.allowlist.read_bytes() if self.allowlist.is_file() else b""
        return {
            "severity": self.policy.vuln_min,
            "fixed_only": str(self.policy.fixed_only).lower(),
            "allowlist_sha256": hashlib.sha256(allow).hexdigest(),
            "max_db_age_days": str(self.scanner.max_db_age_days),
        }


def _db_age(text: str) -> int:
    """Days a cached vulnerability DB may be old: 1 to 90 (a larger number turns the check off)."""
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 90:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days from 1 to 90")
    return int(text)


def _allowlist_file(text: str) -> Path:
    """An allowlist's path; an empty one is refused (Path("") would be the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: name the allowlist file, or leave --allowlist out")
    return Path(text)


def policy_arguments(p: argparse.ArgumentParser) -> None:
    """The gate's options: `scan` takes them, and `push` for the scan it runs itself."""
    p.add_argument(
        "--severity", choices=scan_policy.SEVERITIES, default="HIGH", help="lowest blocking severity"
    )
    p.add_argument("--include-unfixed", action="store_true", help="vulnerabilities without a fix block too")
    p.add_argument(
        "--allowlist",
        type=_allowlist_file,
        default=allowlist.DEFAULT,
        help="accepted findings, each with a reason and an expiry (default: scan-allowlist.toml)",
    )
    p.add_argument("--cache-dir", help="trivy cache dir (e.g. a pre-filled one for offline use)")
    p.add_argument("--db-repository", help="trivy DB mirror (OCI repository)")
    p.add_argument(
        "--max-db-age-days",
        type=_db_age,
        default=7,
        help="when the DB cannot be updated, a cached one counts only if this recent (default 7)",
    )


def arguments(p: argparse.ArgumentParser) -> None:
    policy_arguments(p)
    p.add_argument(
        "--allow-no-vuln-db",
        action="store_true",
        help="accept that the vulnerability part cannot run (offline, no DB mirror); recorded as such",
    )


def policy_options(args: argparse.Namespace, allow_no_vuln_db: bool) -> Options:
    if args.db_repository is not None and not args.db_repository.strip():
        raise PipelineError(
            "--db-repository is empty", "name trivy's DB mirror (an OCI repository), or drop it"
        )
    if args.db_repository is not None:  # trivy's --db-repository: an OCI reference (tag optional)
        references.image(args.db_repository, "--db-repository")
    if args.cache_dir is not None and not args.cache_dir.strip():
        raise PipelineError("--cache-dir is empty", "name trivy's cache folder, or drop it")
    cache_dir = Path(args.cache_dir) if args.cache_dir is not None else None
    if cache_dir is not None and cache_dir.exists() and not cache_dir.is_dir():
        raise PipelineError(f"--cache-dir {cache_dir} is not a folder", "name trivy's cache folder")
    opts = Options(
        policy=scan_policy.Policy(vuln_min=args.severity, fixed_only=not args.include_unfixed),
        allowlist=args.allowlist,
        allow_no_vuln_db=allow_no_vuln_db,
        scanner=trivy.TrivyOptions(
            cache_dir.absolute() if cache_dir else None,  # trivy runs from the repository root
            args.db_repository,
            args.max_db_age_days,
        ),
    )
    allowlist.load(opts.allowlist, datetime.date.today())  # bad input fails before any image
    return opts


def options(args: argparse.Namespace, settings: Settings) -> Options:
    return policy_options(args, args.allow_no_vuln_db)


def run(selection: Selection, opts: Options) -> StageResult:
    trivy.binary()  # no trivy: said once, after the input checks and before any image is pulled
    return each_image("scan", selection, lambda image: scan(selection, image, opts))


def scan(selection: Selection, image: Image, opts: Options) -> record.Record:
    rec = built(selection, image)
    today = opts.today or datetime.date.today()
    entries = allowlist.load(opts.allowlist, today)
    out = selection.folder(image)
    store, policy = selection.store, opts.policy_fingerprint()
    db = record.VulnDb(available=False, how="not decided: the scan failed before")
    trivy.binary()  # a missing trivy is no scan: the record's last one stays as it was
    try:
        db = trivy.vuln_db(opts.scanner)
        trivy.remove_reports(out)  # none of an earlier scan (another platform set) may stay listed
        reports = analyse(rec.image_id, rec.build.platforms, out, opts.scanner, db)
        config = trivy.analyse_config(out)
        found = [
            dataclasses.replace(f, platform=platform if len(reports) > 1 else "")
            for platform, kinds in reports.items()
            for report in kinds.values()
            for f in scan_policy.findings(report)
        ]
        found += scan_policy.findings(config)
    except Exception as exc:  # whatever stopped it, an earlier scan's verdict never stands for this one
        failed = record.Scanned(
            ok=False,
            image_id=rec.image_id,
            vulnerabilities="scan failed",
            vuln_db=db,
            problems=[exc.what if isinstance(exc, PipelineError) else f"{type(exc).__name__}: {exc}"],
            policy=policy,
        )
        store.save_section(image.variant.name, image.flavor, "scan", failed)
        raise
    vulnerabilities = "ran" if db.available else "not run: no vulnerability database"
    verdict = scan_policy.judge(found, entries, opts.policy, today)
    problems = [f"blocking: {f}" for f in verdict.blocking]
    problems += [
        f"allowlist entry {a.id} expired on {a.expires}: review it ({a.reason})" for a in verdict.expired
    ]
    if not db.available and not opts.allow_no_vuln_db:
        problems.append(f"vulnerabilities not checked ({db.how}); pass --allow-no-vuln-db to accept that")
    section = record.Scanned(
        ok=not problems,
        image_id=rec.image_id,
        vulnerabilities=vulnerabilities,
        vuln_db=db,
        accepted_without_vuln_db=not db.available and opts.allow_no_vuln_db,
        counts=scan_policy.counts(found),
        counts_by_platform={p: scan_policy.counts(found, p) for p in reports} if len(reports) > 1 else {},
        licenses=scan_policy.licenses(next(iter(reports.values()))["image"]),
        os_packages={p: scan_policy.os_packages(kinds["image"]) for p, kinds in reports.items()},
        problems=problems,
        accepted=[f"{f} (allowlist: {a.reason}, until {a.expires})" for f, a in verdict.accepted],
        stale_allowlist=[a.id for a in verdict.stale],
        reports=sorted(p.name for p in out.glob("*") if p.suffix in (".json", ".sarif")),
        platforms=list(reports),
        policy=policy,
        finished=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )
    rec = store.save_section(image.variant.name, image.flavor, "scan", section)
    log.info("   vulnerabilities: %s (%s)", vulnerabilities, db.how)
    if len(section.platforms) > 1:
        log.info("   platforms read: %s", ", ".join(section.platforms))
    for line in [*problems, *(f"stale allowlist entry (matches nothing): {a.id}" for a in verdict.stale)]:
        log.info("   %s", line)
    if problems:
        raise RefusedError(
            f"scan gate of {image} failed:\n  " + "\n  ".join(problems),
            f"read {out}/; fix the image, or add a reviewed entry to scan-allowlist.toml",
        )
    return rec


def analyse(
    image_id: str, platforms: list[str], out: Path, opts: trivy.TrivyOptions, db: record.VulnDb
) -> dict[str, dict[str, dict[str, Any]]]:
    """trivy on each platform of the image: platform -> its reports. trivy reads an index
    from the engine as the engine's own platform only (it ignores --platform there), so every
    other platform is written out alone as an OCI layout (its layers only, removed after) and
    read from that; its reports are named after it (image.linux-arm64.json, ...)."""
    here = emulation.engine_platform()
    for stale in out.glob(".layout-*"):  # left by a scan that was killed
        shutil.rmtree(stale, ignore_errors=True)
    reports: dict[str, dict[str, dict[str, Any]]] = {}
    for platform in platforms:
        if platform == here:
            reports[platform] = trivy.analyse_image(trivy.Source(image_id, platform), out, opts, db)
            continue
        try:
            layout = Path(tempfile.mkdtemp(prefix=".layout-", dir=out))
        except OSError as exc:
            raise ToolError(
                f"cannot make a folder in {out}: {exc.strerror}", "check its permissions"
            ) from None
        try:
            log.info("   %s: writing its image alone as an OCI layout for trivy (%s)", platform, layout.name)
            config = layers.write_platform(image_id, platform, layout)
            source = trivy.Source(config, platform, layout)
            reports[platform] = trivy.analyse_image(source, out, opts, db, trivy.platform_suffix(platform))
        finally:
            shutil.rmtree(layout, ignore_errors=True)
    return reports
