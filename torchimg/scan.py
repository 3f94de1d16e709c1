"""`nox -s scan`: trivy (a plain subprocess, through plumbum) on the built image, and the gate.

Scans vulnerabilities (OS and Python packages), secrets and licenses in the image, and the
misconfigurations of docker/; keeps trivy's JSON, writes a CycloneDX SBOM and SARIF. Without
a vulnerability database (no internet, no mirror) the vulnerability part is reported as not
run and the gate fails, unless the user accepts that explicitly (--allow-no-vuln-db).
"""

import datetime
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
from torchimg.errors import PipelineError
from torchimg.variants import Variant

TRIVY_ENV = "TORCHIMG_TRIVY"
_NO_DB = ("failed to download vulnerability DB", "vulnerability DB", "DB error")
# Never shipped: the naive baseline exists only to be measured against (docker/baseline/).
_CONFIG_SKIP = "docker/baseline"


@dataclass(frozen=True)
class ScanOptions:
    policy: gate.Policy = field(default_factory=gate.Policy)
    allowlist: Path = paths.ROOT / "scan-allowlist.toml"
    allow_no_vuln_db: bool = False
    cache_dir: str | None = None
    db_repository: str | None = None
    today: datetime.date | None = None


def trivy() -> LocalCommand:
    """The trivy binary: $TORCHIMG_TRIVY, else `trivy` on PATH."""
    path = os.environ.get(TRIVY_ENV) or shutil.which("trivy")
    if not path or not Path(path).is_file():
        raise PipelineError(
            f"trivy not found ({'$' + TRIVY_ENV + '=' + path if path else 'not on PATH'})",
            "install it the official way (https://trivy.dev/latest/getting-started/installation/: "
            "apt, rpm, brew or the release binary), or point $TORCHIMG_TRIVY at its binary",
        )
    return local[path]


def _run(args: list[str]) -> tuple[int, str]:
    print(f"== scan: trivy {' '.join(args)}", file=sys.stderr, flush=True)
    code, _, err = trivy()[args].run(retcode=None)
    for line in err.splitlines():
        if "Falling back to embedded checks" in line:
            print("   note: offline, trivy uses the checks embedded in its binary", file=sys.stderr)
        elif "WARN" in line or "ERROR" in line or "FATAL" in line:
            print(f"   {line}", file=sys.stderr)
    return int(code), str(err)


def _must(args: list[str]) -> None:
    code, err = _run(args)
    if code != 0:
        raise PipelineError(f"trivy {args[0]} failed (exit {code}): {err.strip().splitlines()[-1:]}")


def _db_args(opts: ScanOptions) -> list[str]:
    out = []
    if opts.cache_dir:
        out += ["--cache-dir", opts.cache_dir]
    if opts.db_repository:
        out += ["--db-repository", opts.db_repository]
    return out


def config_lint() -> None:
    """`trivy config` over docker/ (misconfigurations of the Dockerfiles), failing on any."""
    with local.cwd(paths.ROOT):
        _must(["config", "--exit-code", "1", "--skip-dirs", _CONFIG_SKIP, "docker"])
    print("trivy config: docker/ clean", file=sys.stderr)


def run_trivy(image: str, out: Path, opts: ScanOptions) -> dict[str, Any]:
    """All trivy runs for one image; returns which parts ran and where their reports are."""
    common = _db_args(opts)
    code, err = _run(
        ["image", "--scanners", "vuln", "--format", "json", "-o", str(out / "vuln.json"), *common, image]
    )
    if code == 0:
        vuln = "ran"
    elif any(k in err for k in _NO_DB):
        vuln = "not run: no vulnerability database (no internet, and no --db-repository mirror or cache)"
        (out / "vuln.json").unlink(missing_ok=True)
    else:
        raise PipelineError(f"trivy vulnerability scan of {image} failed (exit {code})", err.strip()[-500:])
    # One analysis of the image for secrets, licenses and the package list; the SBOM and the
    # SARIF files are converted from trivy's JSON instead of analysing the image again.
    _must(
        [
            "image",
            "--scanners",
            "secret,license",
            "--list-all-pkgs",
            "--format",
            "json",
            "-o",
            str(out / "image.json"),
            *common,
            "--skip-db-update",
            image,
        ]
    )
    _must(
        [
            "config",
            "--format",
            "json",
            "-o",
            str(out / "config.json"),
            "--skip-dirs",
            _CONFIG_SKIP,
            str(paths.DOCKER.relative_to(paths.ROOT)),
        ]
    )
    _must(["convert", "--format", "cyclonedx", "-o", str(out / "sbom.cdx.json"), str(out / "image.json")])
    for name in ("vuln", "image", "config"):
        if (out / f"{name}.json").exists():
            _must(
                ["convert", "--format", "sarif", "-o", str(out / f"{name}.sarif"), str(out / f"{name}.json")]
            )
    return {"vulnerabilities": vuln}


def scan(variant: Variant, flavor: str, opts: ScanOptions) -> record.Record:
    rec = record.of_built_image(variant.name, flavor)
    entries = allowlist.load(opts.allowlist)
    out = paths.reports_dir() / f"{variant.name}-{flavor}"
    out.mkdir(parents=True, exist_ok=True)
    with local.cwd(paths.ROOT):
        ran = run_trivy(rec["tags"][0], out, opts)
    found = [
        f
        for name in ("vuln", "image", "config")
        if (out / f"{name}.json").exists()
        for f in gate.findings(json.loads((out / f"{name}.json").read_text()))
    ]
    verdict = gate.judge(found, entries, opts.policy, opts.today or datetime.date.today())
    problems = [f"blocking: {f}" for f in verdict.blocking]
    problems += [
        f"allowlist entry {a.id} expired on {a.expires}: review it ({a.reason})" for a in verdict.expired
    ]
    if ran["vulnerabilities"] != "ran" and not opts.allow_no_vuln_db:
        problems.append(f"vulnerabilities {ran['vulnerabilities']}; pass --allow-no-vuln-db to accept that")
    licenses = gate.licenses(json.loads((out / "image.json").read_text()))
    rec["scan"] = {
        "ok": not problems,
        "image_id": rec["image_id"],
        "vulnerabilities": ran["vulnerabilities"],
        "accepted_without_vuln_db": ran["vulnerabilities"] != "ran" and opts.allow_no_vuln_db,
        "counts": {
            k: sum(f.kind == k for f in found) for k in ("vulnerability", "secret", "misconfiguration")
        },
        "licenses": licenses,
        "problems": problems,
        "accepted": [f"{f} (allowlist: {a.reason}, until {a.expires})" for f, a in verdict.accepted],
        "stale_allowlist": [a.id for a in verdict.stale],
        "reports": sorted(p.name for p in out.glob("*") if p.suffix in (".json", ".sarif")),
    }
    record.write(rec)
    for line in [
        f"vulnerabilities: {ran['vulnerabilities']}",
        *problems,
        *(f"stale allowlist entry (matches nothing): {a.id}" for a in verdict.stale),
    ]:
        print(f"   {line}", file=sys.stderr)
    if problems:
        raise PipelineError(f"scan gate of {variant.name} {flavor} failed:\n  " + "\n  ".join(problems))
    return rec
