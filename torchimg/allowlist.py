"""Accepted scan findings: each with a reason and an expiry date, checked on load."""

import datetime
import tomllib
from dataclasses import dataclass
from pathlib import Path

from torchimg.errors import PipelineError


@dataclass(frozen=True)
class Allow:
    id: str
    reason: str
    expires: datetime.date
    package: str | None = None

    def matches(self, finding_id: str, package: str | None) -> bool:
        return finding_id == self.id and (self.package is None or self.package == package)


def load(path: Path) -> list[Allow]:
    """Read the allowlist; a missing file is an empty list, a bad entry an error naming it."""
    if not path.exists():
        return []
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise PipelineError(f"{path}: not valid TOML: {exc}", f"fix the syntax in {path.name}") from None
    entries = []
    for n, entry in enumerate(data.get("allow", []), start=1):
        where = f"{path.name} [[allow]] #{n}"
        unknown = set(entry) - {"id", "reason", "expires", "package"}
        if unknown:
            raise PipelineError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}", "remove them")
        if not isinstance(entry.get("id"), str) or not entry["id"]:
            raise PipelineError(f"{where}: no id", 'add id = "CVE-..." (or the rule / check ID)')
        if not isinstance(entry.get("reason"), str) or not entry["reason"].strip():
            raise PipelineError(f"{where} ({entry['id']}): no reason", "say why this risk is accepted")
        expires = entry.get("expires")
        if not isinstance(expires, datetime.date) or isinstance(expires, datetime.datetime):
            raise PipelineError(
                f"{where} ({entry['id']}): expires must be a date", "e.g. expires = 2027-01-31 (no quotes)"
            )
        entries.append(Allow(entry["id"], entry["reason"], expires, entry.get("package")))
    return entries
