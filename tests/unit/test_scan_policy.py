"""The scan gate on trivy JSON reports: real trivy outputs, and one hand-made report where
trivy cannot produce the case here (vulnerabilities need its online database)."""

import dataclasses
import datetime
import json
from pathlib import Path
from typing import Any

import pytest

from torchimg.errors import PipelineError
from torchimg.model import allowlist, scan_policy

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "trivy"
TODAY = datetime.date(2026, 11, 27)


def report(name: str) -> dict[str, Any]:
    return dict(json.loads((FIXTURES / name).read_text()))


def allow(id_: str, expires: datetime.date, package: str | None = None) -> allowlist.Allow:
    return allowlist.Allow(id_, "reviewed", expires, package)


def test_a_planted_secret_blocks() -> None:  # real trivy output (trivy fs --scanners secret)
    verdict = scan_policy.judge(
        scan_policy.findings(report("secret-planted.json")), [], scan_policy.Policy(), TODAY
    )
    assert not verdict.ok
    assert {f.id for f in verdict.blocking} == {"aws-access-key-id", "aws-secret-access-key"}


def test_high_misconfigurations_block_lower_ones_do_not() -> None:  # real trivy config output
    verdict = scan_policy.judge(
        scan_policy.findings(report("config-baseline.json")), [], scan_policy.Policy(), TODAY
    )
    assert [f.id for f in verdict.blocking] == ["DS002"]


def test_only_fixable_high_and_critical_vulnerabilities_block() -> None:  # hand-made report
    found = scan_policy.findings(report("vuln-handmade.json"))
    assert len(found) == 4
    verdict = scan_policy.judge(found, [], scan_policy.Policy(), TODAY)
    assert sorted(f.id for f in verdict.blocking) == ["CVE-2099-0001", "CVE-2099-0004"]
    unfixed_too = scan_policy.judge(found, [], scan_policy.Policy(fixed_only=False), TODAY)
    assert sorted(f.id for f in unfixed_too.blocking) == ["CVE-2099-0001", "CVE-2099-0002", "CVE-2099-0004"]
    medium = scan_policy.judge(found, [], scan_policy.Policy(vuln_min="MEDIUM"), TODAY)
    assert "CVE-2099-0003" in {f.id for f in medium.blocking}


def test_allowlisted_findings_pass_until_their_entry_expires() -> None:
    found = scan_policy.findings(report("vuln-handmade.json"))
    entries = [allow("CVE-2099-0001", TODAY), allow("CVE-2099-0004", TODAY, package="examplepkg")]
    verdict = scan_policy.judge(found, entries, scan_policy.Policy(), TODAY)
    assert verdict.ok and len(verdict.accepted) == 2
    later = scan_policy.judge(found, entries, scan_policy.Policy(), TODAY + datetime.timedelta(days=1))
    assert not later.ok
    assert [a.id for a in later.expired] == ["CVE-2099-0001", "CVE-2099-0004"]


def test_an_entry_for_another_package_does_not_match() -> None:
    found = scan_policy.findings(report("vuln-handmade.json"))
    verdict = scan_policy.judge(
        found, [allow("CVE-2099-0004", TODAY, package="other")], scan_policy.Policy(), TODAY
    )
    assert "CVE-2099-0004" in {f.id for f in verdict.blocking}


def test_an_entry_matching_nothing_is_stale() -> None:
    found = scan_policy.findings(report("secret-planted.json"))
    entries = [
        allowlist.Allow("aws-access-key-id", "test key", TODAY, kind="secret", path="app/credentials.ini"),
        allowlist.Allow(
            "aws-secret-access-key", "test key", TODAY, kind="secret", path="app/credentials.ini"
        ),
        allow("CVE-1", TODAY),
    ]
    verdict = scan_policy.judge(found, entries, scan_policy.Policy(), TODAY)
    assert verdict.ok
    assert [a.id for a in verdict.stale] == ["CVE-1"]


def test_allowlist_entries_need_a_reason_and_a_date(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "allow.toml"
    path.write_text('[[allow]]\nid = "CVE-1"\nreason = "x"\nexpires = 2027-01-31\n')
    assert allowlist.load(path, TODAY) == [allowlist.Allow("CVE-1", "x", datetime.date(2027, 1, 31))]
    path.write_text('[[allow]]\nid = "CVE-1"\nexpires = 2027-01-31\n')
    with pytest.raises(PipelineError, match=r"CVE-1.*reason must be a non-empty string"):
        allowlist.load(path, TODAY)
    path.write_text('[[allow]]\nid = "CVE-1"\nreason = "x"\nexpires = "soon"\n')
    with pytest.raises(PipelineError, match="expires must be a date"):
        allowlist.load(path, TODAY)
    monkeypatch.setattr(allowlist, "DEFAULT", tmp_path / "scan-allowlist.toml")
    assert allowlist.load(tmp_path / "scan-allowlist.toml", TODAY) == []  # the default may be missing
    with pytest.raises(PipelineError, match=r"missing\.toml: no such file"):
        allowlist.load(tmp_path / "missing.toml", TODAY)  # a typo in --allowlist is not "accept nothing"


def test_a_secret_entry_accepts_only_its_own_file() -> None:
    found = scan_policy.findings(report("secret-planted.json"))
    target = next(f.target for f in found if f.id == "aws-access-key-id")
    here = allowlist.Allow("aws-access-key-id", "test key", TODAY, kind="secret", path=target)
    elsewhere = allowlist.Allow("aws-access-key-id", "test key", TODAY, kind="secret", path="/other/file")
    as_vulnerability = allowlist.Allow("aws-access-key-id", "wrong kind", TODAY)
    assert "aws-access-key-id" not in {
        f.id for f in scan_policy.judge(found, [here], scan_policy.Policy(), TODAY).blocking
    }
    for entry in (elsewhere, as_vulnerability):
        assert "aws-access-key-id" in {
            f.id for f in scan_policy.judge(found, [entry], scan_policy.Policy(), TODAY).blocking
        }


def test_a_finding_of_one_platform_names_it_and_an_entry_covers_every_platform() -> None:
    found = scan_policy.findings(report("secret-planted.json"))
    on_arm = [dataclasses.replace(f, platform="linux/arm64") for f in found]
    assert all("[linux/arm64]" in str(f) for f in on_arm)
    assert all("[" not in str(f).split(":")[0] for f in found)  # one platform: no name
    target = next(f.target for f in found if f.id == "aws-access-key-id")
    entry = allowlist.Allow("aws-access-key-id", "test key", TODAY, kind="secret", path=target)
    blocking = scan_policy.judge([*found, *on_arm], [entry], scan_policy.Policy(), TODAY).blocking
    assert "aws-access-key-id" not in {f.id for f in blocking}


def test_a_finding_in_both_platforms_images_counts_once() -> None:
    vulns = scan_policy.findings(report("vuln-handmade.json"))
    config = scan_policy.findings(report("config-baseline.json"))
    # trivy names OS packages' target after what it read: the image ID here, a layout folder there
    amd = [dataclasses.replace(f, platform="linux/amd64", target="sha256:ab (debian 13.2)") for f in vulns]
    arm = [
        dataclasses.replace(f, platform="linux/arm64", target="reports/.layout-x1 (debian 13.2)")
        for f in vulns[:1]
    ]
    found = amd + arm + config
    assert scan_policy.counts(found)["vulnerability"] == len(vulns)
    assert scan_policy.counts(found)["misconfiguration"] == len(config)
    assert scan_policy.counts(found, "linux/arm64") == {
        "vulnerability": 1,
        "secret": 0,
        "misconfiguration": len(config),
    }
    assert scan_policy.counts(found, "linux/amd64")["vulnerability"] == len(vulns) > 1
