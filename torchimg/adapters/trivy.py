"""trivy, a plain program (through the commands adapter): the database decision, one
analysis per image, its reports checked, SBOM and SARIF converted from them.

Fail closed: whether a vulnerability database is there is decided *before* scanning, from
trivy's DB-only download and the DB files in its cache folder (never from trivy's log; a
cached DB counts only while recent). Every other failure, and a missing, empty, truncated or
foreign report, is "scan failed". The image is read by its ID from the local engine only (or
from an OCI layout folder written from it, for a platform other than the engine's), and trivy
runs without the user's ignore file, config file or TRIVY_* variables.
"""

import datetime
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torchimg import paths
from torchimg.adapters import commands
from torchimg.errors import PipelineError, RefusedError, ToolError
from torchimg.model.record import VulnDb
from torchimg.output import log

TRIVY_ENV = "TORCHIMG_TRIVY"
_CONFIG_SKIP = "docker/baseline"  # never shipped: the naive baseline, measured against only
_ISOLATED = ["--config", os.devnull, "--ignorefile", os.devnull]
_TIMEOUT = "60m"
CONFIG_REPORTS = ("config.json", "config.sarif")  # the misconfiguration scan's, once per scan


@dataclass(frozen=True)
class TrivyOptions:
    cache_dir: Path | None = None
    db_repository: str | None = None
    max_db_age_days: int = 7  # when the DB cannot be updated, an older cached one counts as none

    def __post_init__(self) -> None:
        if self.max_db_age_days < 1:
            raise PipelineError(f"--max-db-age-days {self.max_db_age_days}: must be 1 or more", "e.g. 7")

    @property
    def cache(self) -> Path:
        """trivy's cache folder, given to every run so that the DB check reads the same one."""
        if self.cache_dir:
            return self.cache_dir
        if env := os.environ.get("TRIVY_CACHE_DIR"):
            return Path(env)
        return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "trivy"

    def db_args(self) -> list[str]:
        return ["--cache-dir", str(self.cache)] + (
            ["--db-repository", self.db_repository] if self.db_repository else []
        )


def binary() -> Path:
    """The trivy binary: $TORCHIMG_TRIVY, else `trivy` on PATH. A $TORCHIMG_TRIVY that names no
    program is a setting to correct (exit 2); no trivy at all is a tool missing (exit 3)."""
    named = os.environ.get(TRIVY_ENV, "").strip()
    path = named or shutil.which("trivy")
    try:
        found = bool(path) and Path(str(path)).is_file() and os.access(str(path), os.X_OK)
    except OSError:  # a name too long, a loop
        found = False
    if named and not found:
        raise PipelineError(
            f"${TRIVY_ENV}={named!r} is not an executable file",
            "point $TORCHIMG_TRIVY at trivy's binary, or unset it to use the trivy on PATH",
        )
    if not path or not found:
        raise ToolError(
            "trivy not found (not on PATH)",
            "install it the official way (https://trivy.dev/latest/getting-started/installation/: "
            "apt, rpm, brew or the release binary), or point $TORCHIMG_TRIVY at its binary",
        )
    return Path(path)


def version() -> str:
    """The installed trivy's version (`trivy --version`): a runner's preflight shows it."""
    ran = commands.run(binary(), ["--version"], cwd=paths.ROOT, unset=["TRIVY_"])
    found = next(
        (line.split(":", 1)[1].strip() for line in ran.out.splitlines() if line.startswith("Version:")), ""
    )
    if ran.code != 0 or not found:
        raise ToolError(
            f"{binary()} --version failed (exit {ran.code}): {_last_line(ran.err)}", "reinstall trivy"
        )
    return found


def _run(args: list[str], echo: bool = True) -> commands.Ran:
    """Run trivy; its warnings and errors are echoed unless the caller reports the outcome."""
    log.info("   trivy %s", " ".join(args))
    command, *rest = args
    ran = commands.run(binary(), [command, *_ISOLATED, *rest], cwd=paths.ROOT, unset=["TRIVY_"])
    for line in ran.err.splitlines() if echo else []:
        if "Falling back to embedded checks" in line:
            log.info("   note: offline, trivy uses the checks embedded in its binary")
        elif "WARN" in line or "ERROR" in line or "FATAL" in line:
            log.info("   %s", line)
    return ran


def _last_line(err: str) -> str:
    lines = [line.strip() for line in err.strip().splitlines() if line.strip()]
    return lines[-1][-300:] if lines else "no output"


def _must(args: list[str], what: str) -> None:
    ran = _run(args)
    if ran.code != 0:
        raise ToolError(
            f"scan failed: trivy {what} exited {ran.code}: {_last_line(ran.err)}",
            "fix trivy (its full output is above) and scan again; a failed scan is never waived",
        )


def config_report(json_file: Path) -> dict[str, Any]:
    """trivy's misconfiguration scan of docker/ as its JSON report, checked as a scan's is: a
    trivy that fails, or exits 0 without a report, is a failed check, never a clean one."""
    json_file.unlink(missing_ok=True)
    _must(
        ["config", "--format", "json", "-o", str(json_file), "--skip-dirs", _CONFIG_SKIP, "docker"],
        "config scan",
    )
    return read_report(json_file, None)


def _db_metadata(cache: Path) -> dict[str, Any] | None:
    """trivy's DB metadata, when its cache folder holds a database (metadata and DB file)."""
    meta, db = cache / "db" / "metadata.json", cache / "db" / "trivy.db"
    try:
        data = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and db.is_file() and db.stat().st_size > 0 else None


def _age_days(stamp: str) -> float | None:
    try:
        when = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (
        None if when.tzinfo is None else (datetime.datetime.now(datetime.UTC) - when).total_seconds() / 86400
    )


def vuln_db(opts: TrivyOptions) -> VulnDb:
    """Decide, before scanning, whether trivy has a vulnerability database, and say how it was known."""
    ran = _run(["image", "--download-db-only", *opts.db_args()], echo=False)  # the record says how
    meta, where = _db_metadata(opts.cache), f"{opts.cache}/db"
    failed = f"`trivy image --download-db-only` exited {ran.code} ({_last_line(ran.err)})"
    if meta is None:
        why = f"{failed}, and" if ran.code else "`trivy image --download-db-only` exited 0 but"
        return VulnDb(available=False, how=f"{why} {where} holds no database")
    updated = str(meta.get("UpdatedAt", "unknown"))
    if ran.code == 0:
        return VulnDb(available=True, how=f"downloaded or current in {where} (DB of {updated})")
    age = _age_days(updated)
    if age is None or age > opts.max_db_age_days:
        return VulnDb(
            available=False,
            how=f"{failed}, and the DB in {where} (of {updated}) is older than "
            f"{opts.max_db_age_days} days or undated",
        )
    return VulnDb(
        available=True, how=f"{failed}; using the DB already in {where} (DB of {updated}, {age:.1f} days old)"
    )


def read_report(file: Path, image_id: str | None) -> dict[str, Any]:
    """A trivy JSON report, checked: present, complete, trivy's schema, about `image_id`."""
    try:
        data = json.loads(file.read_bytes())
    except FileNotFoundError:
        raise ToolError(f"scan failed: trivy wrote no report {file.name}", "scan again") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ToolError(
            f"scan failed: trivy's report {file.name} is empty, truncated or not JSON ({exc})", "scan again"
        ) from None
    if not isinstance(data, dict) or data.get("SchemaVersion") != 2 or "ArtifactName" not in data:
        raise ToolError(
            f"scan failed: {file.name} is not a trivy JSON report (schema 2)",
            "use a trivy that writes report schema 2 (0.40 or newer)",
        )
    found = (data.get("Metadata") or {}).get("ImageID")
    if image_id is not None and found != image_id:
        raise RefusedError(
            f"scan refused: trivy's report is about image {found}, not the recorded {image_id}",
            "scan again; if it repeats, the engine serves another image under that ID",
        )
    return data


@dataclass(frozen=True)
class Source:
    """What trivy reads: a local image by its ID (from the engine, as the engine's own
    platform), or an OCI layout folder holding one platform's image."""

    expected_id: str  # what each report must name as its image ID
    platform: str  # what each report must name as the image's os/architecture
    layout: Path | None = None

    def args(self) -> list[str]:
        if self.layout is None:
            return ["--image-src", "docker", self.expected_id]
        if any(c in str(self.layout) for c in "@:"):  # trivy would cut it there (a digest or tag)
            raise PipelineError(
                f"{self.layout}: trivy cannot read an image folder whose path holds '@' or ':'",
                "point TORCHIMG_REPORTS (or --reports) at a folder without them",
            )
        return ["--input", str(self.layout)]


def platform_suffix(platform: str) -> str:
    """What the reports of a platform other than the engine's carry: ".linux-arm64"."""
    return "." + platform.replace("/", "-")


def remove_reports(out: Path) -> None:
    """Remove every report a scan writes in `out` (each platform's, and the config scan's)."""
    for pattern in [*report_names("*").values(), *CONFIG_REPORTS]:
        for path in out.glob(pattern):
            path.unlink(missing_ok=True)


def report_names(suffix: str = "") -> dict[str, str]:
    """The files one image's analysis writes (`suffix`: a platform's, e.g. ".linux-arm64")."""
    return {
        "vuln": f"vuln{suffix}.json",
        "image": f"image{suffix}.json",
        "sbom": f"sbom{suffix}.cdx.json",
        "vuln-sarif": f"vuln{suffix}.sarif",
        "image-sarif": f"image{suffix}.sarif",
    }


def analyse_image(
    source: Source, out: Path, opts: TrivyOptions, db: VulnDb, suffix: str = ""
) -> dict[str, dict[str, Any]]:
    """trivy on one image: returns its checked reports ("vuln" when the DB is there, "image").

    One analysis of the image gives secrets, licenses and the package list; the SBOM and the
    SARIF files are converted from trivy's JSON instead of analysing the image again."""
    names = report_names(suffix)
    for name in names.values():
        (out / name).unlink(missing_ok=True)
    # trivy stops an analysis after 5 minutes by default: reading every file of a torch image
    # (7.5 GB unpacked) for secrets can take longer on 2 cores, and a timeout is a failed scan.
    image = ["image", "--skip-db-update", "--timeout", _TIMEOUT, "--format", "json", *opts.db_args()]
    kinds = ["vuln", "image"] if db.available else ["image"]
    if db.available:
        _must(
            [*image, "--scanners", "vuln", "-o", str(out / names["vuln"]), *source.args()],
            "vulnerability scan",
        )
    _must(
        [
            *image,
            "--scanners",
            "secret,license",
            "--list-all-pkgs",
            "-o",
            str(out / names["image"]),
            *source.args(),
        ],
        "image analysis",
    )
    reports = {kind: read_report(out / names[kind], source.expected_id) for kind in kinds}
    for kind, report in reports.items():
        config = (report.get("Metadata") or {}).get("ImageConfig") or {}
        seen = "/".join(str(config.get(k)) for k in ("os", "architecture") if config.get(k))
        if seen != "/".join(source.platform.split("/")[:2]):
            raise RefusedError(
                f"scan refused: trivy's {names[kind]} is about a {seen or 'platformless'} image, "
                f"not {source.platform}",
                "scan again from the machine that runs the engine (trivy reads the engine's own platform)",
            )
    _must(
        ["convert", "--format", "cyclonedx", "-o", str(out / names["sbom"]), str(out / names["image"])],
        "SBOM",
    )
    for kind in kinds:
        sarif, json_file = str(out / names[f"{kind}-sarif"]), str(out / names[kind])
        _must(["convert", "--format", "sarif", "-o", sarif, json_file], f"SARIF of {names[kind]}")
    return reports


def analyse_config(out: Path) -> dict[str, Any]:
    """trivy's misconfiguration scan of docker/ (once per image scan, whatever its platforms)."""
    json_file, sarif = (out / name for name in CONFIG_REPORTS)
    report = config_report(json_file)
    _must(["convert", "--format", "sarif", "-o", str(sarif), str(json_file)], f"SARIF of {json_file.name}")
    return report
