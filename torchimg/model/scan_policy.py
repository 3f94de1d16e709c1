"""The scan gate: which trivy findings block a release, given the policy and the allowlist.

Pure functions over trivy's JSON reports, so that every rule is tested on real reports.
"""

import datetime
from dataclasses import dataclass, field
from typing import Any

from torchimg.model.allowlist import KINDS, Allow

SEVERITIES = ("UNKNOWN", "LOW", "MEDIUM", "HIGH", "CRITICAL")


@dataclass(frozen=True)
class Finding:
    kind: str  # vulnerability, secret or misconfiguration
    id: str
    severity: str
    target: str
    package: str | None = None
    fixed: bool = False
    title: str = ""
    platform: str = ""  # of a multi-platform image: the platform whose image holds it

    def __str__(self) -> str:
        where = f"{self.package} in {self.target}" if self.package else self.target
        on = f" [{self.platform}]" if self.platform else ""
        return f"{self.kind} {self.id} ({self.severity}) {where}{on}: {self.title}".rstrip(": ")


@dataclass(frozen=True)
class Policy:
    vuln_min: str = "HIGH"
    fixed_only: bool = True  # a vulnerability without a fix cannot be patched by a rebuild
    misconfig_min: str = "HIGH"


@dataclass
class Verdict:
    blocking: list[Finding] = field(default_factory=list)
    accepted: list[tuple[Finding, Allow]] = field(default_factory=list)
    expired: list[Allow] = field(default_factory=list)
    stale: list[Allow] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.blocking and not self.expired


def findings(report: dict[str, Any]) -> list[Finding]:
    """Vulnerabilities, secrets and misconfigurations of one trivy JSON report."""
    out = []
    for result in report.get("Results") or []:
        target = result.get("Target", "")
        for v in result.get("Vulnerabilities") or []:
            out.append(
                Finding(
                    "vulnerability",
                    v["VulnerabilityID"],
                    v.get("Severity", "UNKNOWN"),
                    target,
                    v.get("PkgName"),
                    bool(v.get("FixedVersion")),
                    v.get("Title", ""),
                )
            )
        for s in result.get("Secrets") or []:
            out.append(
                Finding(
                    "secret",
                    s["RuleID"],
                    s.get("Severity", "UNKNOWN"),
                    target,
                    None,
                    False,
                    s.get("Title", ""),
                )
            )
        for m in result.get("Misconfigurations") or []:
            if m.get("Status", "FAIL") == "FAIL":
                out.append(
                    Finding(
                        "misconfiguration",
                        m["ID"],
                        m.get("Severity", "UNKNOWN"),
                        target,
                        None,
                        False,
                        m.get("Title", ""),
                    )
                )
    return out


def counts(found: list[Finding], platform: str | None = None) -> dict[str, int]:
    """Distinct findings per kind: a CVE in both platforms' images counts once. With
    `platform`: that platform's, plus those not tied to one (docker/'s misconfigurations)."""
    distinct = {_identity(f) for f in found if platform is None or f.platform in (platform, "")}
    return {k: sum(kind == k for kind, *_ in distinct) for k in KINDS}


def _identity(f: Finding) -> tuple[str, ...]:
    """What makes two findings one: a vulnerability is its ID in a package (trivy's target for
    OS packages names the artifact read, an image ID or a layout folder, which differs per
    platform); a secret or misconfiguration is its ID in a file."""
    if f.kind == "vulnerability" and f.package:
        return (f.kind, f.id, f.package)
    return (f.kind, f.id, f.target)


def licenses(report: dict[str, Any]) -> dict[str, int]:
    """License findings by category, for information (they do not gate)."""
    counts: dict[str, int] = {}
    for result in report.get("Results") or []:
        for lic in result.get("Licenses") or []:
            key = lic.get("Category", "unknown")
            counts[key] = counts.get(key, 0) + 1
    return counts


def os_packages(report: dict[str, Any]) -> dict[str, str]:
    """The distribution's packages trivy found (it lists all of them: --list-all-pkgs), name ->
    version as dpkg spells it ([epoch:]version[-release]). Not gated: what the release notes
    list, since apt installs the archive's current versions, which a lockfile does not pin."""
    found: dict[str, str] = {}
    for result in report.get("Results") or []:
        if result.get("Class") != "os-pkgs":
            continue
        for pkg in result.get("Packages") or []:
            name, version = pkg.get("Name"), pkg.get("Version")
            if not isinstance(name, str) or not isinstance(version, str):
                continue
            epoch, release = pkg.get("Epoch"), pkg.get("Release")
            found[name] = f"{f'{epoch}:' if epoch else ''}{version}{f'-{release}' if release else ''}"
    return dict(sorted(found.items()))


def _at_least(severity: str, minimum: str) -> bool:
    return SEVERITIES.index(severity if severity in SEVERITIES else "UNKNOWN") >= SEVERITIES.index(minimum)


def gates(f: Finding, policy: Policy) -> bool:
    """Whether this finding blocks a release when no allowlist entry accepts it."""
    if f.kind == "secret":
        return True
    if f.kind == "misconfiguration":
        return _at_least(f.severity, policy.misconfig_min)
    return _at_least(f.severity, policy.vuln_min) and (f.fixed or not policy.fixed_only)


def judge(found: list[Finding], allow: list[Allow], policy: Policy, today: datetime.date) -> Verdict:
    verdict = Verdict()
    used: set[Allow] = set()
    live = [a for a in allow if a.expires >= today]
    verdict.expired = [a for a in allow if a.expires < today]
    for f in found:
        if not gates(f, policy):
            continue
        entry = next((a for a in live if a.matches(f.kind, f.id, f.package, f.target)), None)
        if entry:
            verdict.accepted.append((f, entry))
            used.add(entry)
        else:
            verdict.blocking.append(f)
    matched_any = {a for a in allow for f in found if a.matches(f.kind, f.id, f.package, f.target)}
    verdict.stale = [a for a in live if a not in used and a not in matched_any]
    return verdict
