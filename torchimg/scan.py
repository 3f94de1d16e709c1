"""`nox -s scan`: trivy (a plain subprocess, through plumbum) on the built image, and the gate.

Scans vulnerabilities (OS and Python packages), secrets and licenses in the image, and the
misconfigurations of docker/; keeps trivy's JSON, writes a CycloneDX SBOM and SARIF.

Fail closed: whether a vulnerability database is available is decided *before* scanning,
from trivy's DB-only download and the DB files in its cache folder (never from trivy's log;
a cached DB counts only while it is recent). Without one, the vulnerability part is recorded
as not run and the gate fails unless the user accepts that (--allow-no-vuln-db). Any other
failure of trivy, and any missing, empty, truncated or unparsable report, is "scan failed"
(exit 3), which no flag waives. The image is scanned by its ID from the local engine only
(never a name that could move, never a registry fallback); a report about another image is
refused. trivy runs without the user's ignore file, config file or TRIVY_* variables.
"""

import datetime
import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plumbum import local
from plumbum.machines.local import LocalCommand

from torchimg import allowlist, gate, paths, record
from torchimg.errors import PipelineError, RefusedError, ToolError
from torchimg.variants import Variant

TRIVY_ENV = "TORCHIMG_TRIVY"
# Never shipped: the naive baseline exists only to be measured against (docker/baseline/).
_CONFIG_SKIP = "docker/baseline"
_REPORTS = ("vuln", "image", "config")


@dataclass(frozen=True)
class ScanOptions:
    policy: gate.Policy = field(default_factory=gate.Policy)
    allowlist: Path = paths.ROOT / "scan-allowlist.toml"
    allow_no_vuln_db: bool = False
    cache_dir: str | None = None
    db_repository: str | None = None
    today: datetime.date | None = None
    max_db_age_days: int = 7  # a cached DB older than this counts as none

    def __post_init__(self) -> None:
        if self.max_db_age_days < 1:
            raise PipelineError(f"--max-db-age-days {self.max_db_age_days}: must be 1 or more", "e.g. 7")

    def policy_fingerprint(self) -> dict[str, str]:
        """What the verdict depends on besides the image: push checks that the scan it trusts
        was judged under the policy it would apply itself."""
        allow = self.allowlist.read_bytes() if self.allowlist.is_file() else b""
        return {
            "severity": self.policy.vuln_min,
            "fixed_only": str(self.policy.fixed_only).lower(),
            "allowlist_sha256": hashlib.sha256(allow).hexdigest(),
        }

    @property
    def cache(self) -> Path:
        """trivy's cache folder, given to every trivy run so that the DB check reads the same one."""
        if self.cache_dir:
            return Path(self.cache_dir)
        if env := os.environ.get("TRIVY_CACHE_DIR"):
            return Path(env)
        return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "trivy"


def trivy() -> LocalCommand:
    """The trivy binary: $TORCHIMG_TRIVY, else `trivy` on PATH."""
    path = os.environ.get(TRIVY_ENV) or shutil.which("trivy")
    if not path or not Path(path).is_file():
        raise ToolError(
            f"trivy not found ({'$' + TRIVY_ENV + '=' + path if path else 'not on PATH'})",
            "install it the official way (https://trivy.dev/latest/getting-started/installation/: "
            "apt, rpm, brew or the release binary), or point $TORCHIMG_TRIVY at its binary",
        )
    return local[path]


# No ignore file, config file or TRIVY_* variable of the user's may quietly narrow the gate.
_ISOLATED = ["--config", os.devnull, "--ignorefile", os.devnull]


def _run(args: list[str]) -> tuple[int, str]:
    print(f"== scan: trivy {' '.join(args)}", file=sys.stderr, flush=True)
    command, *rest = args
    try:
        with local.env():
            for key in [k for k in local.env.keys() if k.startswith("TRIVY_")]:  # noqa: SIM118
                del local.env[key]
            code, _, err = trivy()[[command, *_ISOLATED, *rest]].run(retcode=None)
    except OSError as exc:
        raise ToolError(f"trivy could not be started: {exc}", "check $TORCHIMG_TRIVY / PATH") from None
    for line in str(err).splitlines():
        if "Falling back to embedded checks" in line:
            print("   note: offline, trivy uses the checks embedded in its binary", file=sys.stderr)
        elif "WARN" in line or "ERROR" in line or "FATAL" in line:
            print(f"   {line}", file=sys.stderr)
    return int(code), str(err)


def _last_line(err: str) -> str:
    lines = [line.strip() for line in err.strip().splitlines() if line.strip()]
    return lines[-1][-300:] if lines else "no output"


def _must(args: list[str], what: str) -> None:
    code, err = _run(args)
    if code != 0:
        raise ToolError(
            f"scan failed: trivy {what} exited {code}: {_last_line(err)}",
            "fix trivy (its full output is above) and scan again; a failed scan is never waived",
        )


def _db_args(opts: ScanOptions) -> list[str]:
    out = ["--cache-dir", str(opts.cache)]
    if opts.db_repository:
        out += ["--db-repository", opts.db_repository]
    return out


def config_lint() -> None:
    """`trivy config` over docker/ (misconfigurations of the Dockerfiles), failing on any."""
    with local.cwd(paths.ROOT):
        code, err = _run(["config", "--exit-code", "1", "--skip-dirs", _CONFIG_SKIP, "docker"])
    if code == 1:
        raise RefusedError("trivy config found misconfigurations in docker/", "see the table above")
    if code != 0:
        raise ToolError(f"trivy config exited {code}: {_last_line(err)}", "fix trivy and run lint again")
    print("trivy config: docker/ clean", file=sys.stderr)


def _db_metadata(cache: Path) -> dict[str, Any] | None:
    """trivy's DB metadata, when its cache folder holds a database (metadata and DB file)."""
    meta, db = cache / "db" / "metadata.json", cache / "db" / "trivy.db"
    try:
        data = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and db.is_file() and db.stat().st_size > 0 else None


def vuln_db(opts: ScanOptions) -> record.VulnDb:
    """Decide, before scanning, whether trivy has a vulnerability database, and say how it was known."""
    code, err = _run(["image", "--download-db-only", *_db_args(opts)])
    meta = _db_metadata(opts.cache)
    where = f"{opts.cache}/db"
    if meta is None:
        how = (
            f"`trivy image --download-db-only` exited {code} ({_last_line(err)}), and {where} holds no "
            "database"
            if code != 0
            else f"`trivy image --download-db-only` exited 0 but {where} holds no database"
        )
        return record.VulnDb(available=False, how=how)
    updated = str(meta.get("UpdatedAt", "unknown"))
    if code == 0:
        return record.VulnDb(available=True, how=f"downloaded or current in {where} (DB of {updated})")
    age = _age_days(updated)
    if age is None or age > opts.max_db_age_days:
        return record.VulnDb(
            available=False,
            how=f"download failed ({_last_line(err)}), and the DB in {where} (of {updated}) is older than "
            f"{opts.max_db_age_days} days or undated",
        )
    return record.VulnDb(
        available=True,
        how=f"download failed ({_last_line(err)}); using the DB already in {where} (DB of {updated}, "
        f"{age:.1f} days old)",
    )


def _age_days(stamp: str) -> float | None:
    try:
        when = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return (datetime.datetime.now(datetime.UTC) - when).total_seconds() / 86400


def read_report(file: Path, image_id: str | None) -> dict[str, Any]:
    """A trivy JSON report, checked: present, complete, trivy's schema, about `image_id`."""
    try:
        data = json.loads(file.read_bytes())
    except FileNotFoundError:
        raise ToolError(f"scan failed: trivy wrote no report {file.name}", "scan again") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ToolError(
            f"scan failed: trivy's report {file.name} is empty, truncated or not JSON ({exc})", "scan again"
        ) from None
    if not isinstance(data, dict) or data.get("SchemaVersion") != 2 or "ArtifactName" not in data:
        raise ToolError(
            f"scan failed: {file.name} is not a trivy JSON report (schema 2)",
            "use a trivy that writes report schema 2 (0.40 or newer)",
        )
    if image_id is not None:
        found = (data.get("Metadata") or {}).get("ImageID")
        if found != image_id:
            raise RefusedError(
                f"scan refused: trivy's report is about image {found}, not the recorded {image_id}",
                "scan again; if it repeats, the engine serves another image under that ID",
            )
    return data


def run_trivy(image_id: str, out: Path, opts: ScanOptions, db: record.VulnDb) -> dict[str, dict[str, Any]]:
    """All trivy runs for one image (by ID, from the engine only); returns the checked reports."""
    common = _db_args(opts)
    for name in _REPORTS:
        (out / f"{name}.json").unlink(missing_ok=True)
    source = ["--image-src", "docker"]
    if db.available:
        _must(
            ["image", *source, "--scanners", "vuln", "--skip-db-update", "--format", "json",
             "-o", str(out / "vuln.json"), *common, image_id],
            "vulnerability scan",
        )  # fmt: skip
    # One analysis of the image for secrets, licenses and the package list; the SBOM and the
    # SARIF files are converted from trivy's JSON instead of analysing the image again.
    _must(
        ["image", *source, "--scanners", "secret,license", "--list-all-pkgs", "--format", "json",
         "-o", str(out / "image.json"), *common, "--skip-db-update", image_id],
        "image analysis",
    )  # fmt: skip
    _must(
        ["config", "--format", "json", "-o", str(out / "config.json"), "--skip-dirs", _CONFIG_SKIP,
         str(paths.DOCKER.relative_to(paths.ROOT))],
        "config scan",
    )  # fmt: skip
    reports = {
        name: read_report(out / f"{name}.json", image_id if name != "config" else None)
        for name in _REPORTS
        if name != "vuln" or db.available
    }
    _must(
        ["convert", "--format", "cyclonedx", "-o", str(out / "sbom.cdx.json"), str(out / "image.json")],
        "SBOM",
    )
    for name in reports:
        _must(
            ["convert", "--format", "sarif", "-o", str(out / f"{name}.sarif"), str(out / f"{name}.json")],
            f"SARIF of {name}.json",
        )
    return reports


def scan(variant: Variant, flavor: str, opts: ScanOptions) -> record.Record:
    rec = record.of_built_image(variant.name, flavor)
    entries = allowlist.load(opts.allowlist, opts.today or datetime.date.today())
    out = paths.reports_dir() / f"{variant.name}-{flavor}"
    out.mkdir(parents=True, exist_ok=True)
    db = record.VulnDb(available=False, how="not decided: the scan failed before")
    try:
        with local.cwd(paths.ROOT):
            db = vuln_db(opts)
            reports = run_trivy(rec.image_id, out, opts, db)
    except PipelineError as exc:
        failed = record.Scanned(
            ok=False,
            image_id=rec.image_id,
            vulnerabilities="scan failed",
            vuln_db=db,
            problems=[exc.what],
            policy=opts.policy_fingerprint(),
        )
        record.save_section(variant.name, flavor, "scan", failed)
        raise
    vulnerabilities = "ran" if db.available else "not run: no vulnerability database"
    found = [f for report in reports.values() for f in gate.findings(report)]
    verdict = gate.judge(found, entries, opts.policy, opts.today or datetime.date.today())
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
        counts={k: sum(f.kind == k for f in found) for k in ("vulnerability", "secret", "misconfiguration")},
        licenses=gate.licenses(reports["image"]),
        problems=problems,
        accepted=[f"{f} (allowlist: {a.reason}, until {a.expires})" for f, a in verdict.accepted],
        stale_allowlist=[a.id for a in verdict.stale],
        reports=sorted(p.name for p in out.glob("*") if p.suffix in (".json", ".sarif")),
        policy=opts.policy_fingerprint(),
        finished=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )
    rec = record.save_section(variant.name, flavor, "scan", section)
    for line in [
        f"vulnerabilities: {vulnerabilities} ({db.how})",
        *problems,
        *(f"stale allowlist entry (matches nothing): {a.id}" for a in verdict.stale),
    ]:
        print(f"   {line}", file=sys.stderr)
    if problems:
        raise RefusedError(
            f"scan gate of {variant.name} {flavor} failed:\n  " + "\n  ".join(problems),
            f"read reports/{variant.name}-{flavor}/; fix the image, or add a reviewed entry to "
            "scan-allowlist.toml",
        )
    return rec
