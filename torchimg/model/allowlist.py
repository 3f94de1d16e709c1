"""Accepted scan findings: each with a reason and an expiry date, checked on load.

An entry accepts one finding kind (vulnerability by default). A secret entry must say where
(a path, or a package), so that accepting one test key never accepts every leaked key. An
expiry more than `max_expiry_days` (365 unless the file says otherwise) ahead is refused: an
acceptance that is never reviewed is no review.
"""

import datetime
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torchimg import paths, userfiles
from torchimg.errors import PipelineError

KINDS = ("vulnerability", "secret", "misconfiguration")
DEFAULT = paths.ROOT / "scan-allowlist.toml"  # may be missing: nothing is accepted
_ENTRY_KEYS = {"id", "kind", "reason", "expires", "package", "path"}
_TOP_KEYS = {"allow", "max_expiry_days"}
DEFAULT_MAX_DAYS = 365


@dataclass(frozen=True)
class Allow:
    id: str
    reason: str
    expires: datetime.date
    package: str | None = None
    kind: str = "vulnerability"
    path: str | None = None

    def matches(self, kind: str, finding_id: str, package: str | None, target: str = "") -> bool:
        return (
            kind == self.kind
            and finding_id == self.id
            and (self.package is None or self.package == package)
            and (self.path is None or target.lstrip("/") == self.path.lstrip("/"))
        )


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(userfiles.read(path, 2**20).decode("utf-8"))
    except UnicodeDecodeError:
        raise PipelineError(f"{path}: not UTF-8 text", f"save {path.name} as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise PipelineError(f"{path}: not valid TOML: {exc}", f"fix the syntax in {path.name}") from None
    except OSError as exc:
        raise PipelineError(
            f"allowlist {path}: cannot be read ({exc.strerror})", "give --allowlist a TOML file's path"
        ) from None
    except RecursionError:
        raise PipelineError(f"{path}: nested too deeply to be an allowlist", f"fix {path.name}") from None


def _text(entry: dict[str, Any], key: str, where: str, fix: str, required: bool = True) -> str | None:
    value = entry.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise PipelineError(f"{where}: {key} must be a non-empty string, got {value!r}", fix)
    return value


def _entry(entry: Any, where: str, today: datetime.date, max_days: int) -> Allow:
    if not isinstance(entry, dict):
        raise PipelineError(f"{where}: not a table", "write each entry as [[allow]] with keys below it")
    unknown = set(entry) - _ENTRY_KEYS
    if unknown:
        raise PipelineError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))}; "
            f"allowed: {', '.join(sorted(_ENTRY_KEYS))}",
            "remove or correct them",
        )
    id_ = _text(entry, "id", where, 'add id = "CVE-..." (or the secret rule / check ID)')
    where = f"{where} ({id_})"
    reason = _text(entry, "reason", where, "say why this risk is accepted")
    kind = entry.get("kind", "vulnerability")
    if kind not in KINDS:
        raise PipelineError(f"{where}: kind {kind!r} unknown", f"one of {', '.join(KINDS)}")
    package = _text(entry, "package", where, "name the package, or leave the key out", required=False)
    scope = _text(
        entry, "path", where, "give the file's path in the image, or leave the key out", required=False
    )
    if kind == "secret" and not (package or scope):
        raise PipelineError(
            f"{where}: a secret entry must say where the secret is",
            'add path = "/app/file" (or package = ...): without one, the entry would accept '
            "the rule everywhere",
        )
    expires = entry.get("expires")
    if not isinstance(expires, datetime.date) or isinstance(expires, datetime.datetime):
        raise PipelineError(f"{where}: expires must be a date", "e.g. expires = 2027-01-31 (no quotes)")
    if expires > today + datetime.timedelta(days=max_days):
        raise PipelineError(
            f"{where}: expires {expires} is more than {max_days} days ahead",
            f"pick a review date on or before {today + datetime.timedelta(days=max_days)} "
            "(or raise max_expiry_days at the top of the file)",
        )
    assert id_ is not None and reason is not None
    return Allow(id_, reason, expires, package, kind, scope)


def load(path: Path, today: datetime.date) -> list[Allow]:
    """Read the allowlist; a bad entry is an error naming it. The default file may be missing
    (nothing accepted); a path given that does not exist is a typo, not an empty list."""
    try:
        missing = not path.exists() and path.resolve() != path.resolve().parent  # '' is a folder
    except (OSError, RuntimeError) as exc:  # a name too long; a loop (RuntimeError before Python 3.13)
        why = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise PipelineError(
            f"--allowlist {str(path)[:200]}: {why}", "fix the path given as --allowlist"
        ) from None
    if missing:
        if path.resolve() == DEFAULT.resolve():
            return []
        raise PipelineError(f"allowlist {path}: no such file", "fix the path given as --allowlist")
    data = _read(path)
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise PipelineError(
            f"{path.name}: unknown key(s) {', '.join(sorted(unknown))}; "
            f"allowed: {', '.join(sorted(_TOP_KEYS))}",
            "entries are [[allow]] tables (a typo would silently accept nothing)",
        )
    max_days = data.get("max_expiry_days", DEFAULT_MAX_DAYS)
    if not isinstance(max_days, int) or isinstance(max_days, bool) or not 1 <= max_days <= 3650:
        raise PipelineError(f"{path.name}: max_expiry_days must be a whole number of days (1-3650)", "fix it")
    entries = data.get("allow", [])
    if not isinstance(entries, list):
        raise PipelineError(f"{path.name}: allow must be a list of [[allow]] tables", "write [[allow]]")
    return [_entry(e, f"{path.name} [[allow]] #{n}", today, max_days) for n, e in enumerate(entries, start=1)]
