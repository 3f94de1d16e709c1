"""Release naming and notes: tags, registry hosts, the package diff, the Markdown manifest."""

import dataclasses
import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
import zstandard

from tests.factories import a_record, has_row
from tests.unit.conftest import FIXTURE, RUNTIME_PINS, lockfile_text
from torchimg import cli, releasenotes
from torchimg.adapters import gitinfo, local_registry, remote_registry
from torchimg.adapters.engine import registries
from torchimg.errors import PipelineError, RefusedError, ToolError
from torchimg.model import labels, lockfile, record, scan_policy, tags, variants
from torchimg.model.push_preconditions import Target, unmet, untested

CONFIG = variants.load(FIXTURE)
DEFAULT = CONFIG.variant("2.9.1-cu128")


def test_immutable_tag_carries_commit_date_and_short_sha() -> None:
    rev = "c31bdfd0123456789abcdef0123456789abcdef0"
    assert (
        tags.immutable(DEFAULT, "runtime", 1795742389, rev, False) == "2.9.1-cu128-runtime-20261127-c31bdfd"
    )
    assert tags.immutable(DEFAULT, "dev", 1795742389, rev, True).endswith("-c31bdfd-dirty")


def test_moving_tags_latest_only_for_the_default_variant() -> None:
    assert tags.moving(CONFIG, DEFAULT, "runtime") == ["2.9.1-cu128-runtime", "2.9-cu128-runtime", "latest"]
    assert tags.moving(CONFIG, DEFAULT, "dev") == ["2.9.1-cu128-dev", "2.9-cu128-dev", "latest-dev"]
    other = CONFIG.variant("2.9.1-cu128-cuda")
    assert tags.moving(CONFIG, other, "runtime") == ["2.9.1-cu128-cuda-runtime", "2.9-cu128-cuda-runtime"]


def test_the_minor_tag_goes_to_the_newest_patch_release_only() -> None:
    older = dataclasses.replace(DEFAULT, name="2.9.0-cu128", torch="2.9.0")
    config = dataclasses.replace(CONFIG, variants={**CONFIG.variants, older.name: older})
    assert "2.9-cu128-runtime" not in tags.moving(config, older, "runtime")
    assert "2.9-cu128-runtime" in tags.moving(config, DEFAULT, "runtime")


def test_registry_host_of_a_repository() -> None:
    assert local_registry.host_of("localhost:5000/pytorch") == "localhost:5000"
    assert local_registry.host_of("ghcr.io/org/pytorch") == "ghcr.io"
    assert local_registry.host_of("org/pytorch") == "docker.io"
    assert local_registry.host_of("pytorch") == "docker.io"
    assert local_registry.is_local("127.0.0.1:5000") and local_registry.is_local("localhost:5001")
    assert not local_registry.is_local("registry.example.com:5000")


def test_package_diff_names_added_removed_and_changed() -> None:
    before = lockfile.pins(lockfile_text("v", "runtime", {**RUNTIME_PINS, "numpy": "2.3.0"}))
    after = dict(before, numpy="9.9.9", newpkg="1.0")
    del after["filelock"]
    d = releasenotes.diff(before, after)
    assert d["changed"] == {"numpy": [before["numpy"], "9.9.9"]}
    assert d["added"] == {"newpkg": "1.0"}
    assert d["removed"] == {"filelock": before["filelock"]}
    assert releasenotes.diff(before, before) == {"added": {}, "removed": {}, "changed": {}}


def test_markdown_manifest_lists_references_and_changes(tmp_path: Path) -> None:
    m = _base_manifest()
    text = releasenotes.markdown(m)
    assert has_row(text, "`localhost:5000/pytorch:latest`", f"`sha256:{'a' * 64}`")
    assert has_row(text, "numpy", "2.3.4", "2.3.5")
    assert "(on a GPU)" in text
    assert "needs an NVIDIA driver >= 570.26 (an older one of the same CUDA major runs it" in text
    assert "findings: 3 vulnerability (linux/amd64: 3 vulnerability; linux/arm64: 1 vulnerability);" in text
    # the lock diff is the Python packages'; apt's, which no lockfile pins, are said apart
    m["package_diff"] = {"added": {}, "removed": {}, "changed": {}}
    m["os_packages"] = {"linux/amd64": {"openssl": "3.5.10-1~deb13u1", "tini": "0.19.0-3"}}
    m["os_package_diff"] = {
        "linux/amd64": {
            "added": {},
            "removed": {},
            "changed": {"openssl": ["3.5.9-1~deb13u1", "3.5.10-1~deb13u1"]},
        }
    }
    text = releasenotes.markdown(m)
    assert "no Python package changed version." in text and "no package changed" not in text
    assert "- 2 OS packages: the base's and apt's" in text
    assert has_row(text, "openssl", "3.5.9-1~deb13u1", "3.5.10-1~deb13u1")
    m["os_package_diff"], m["os_package_diff_note"] = None, "the previous release's manifest is not here"
    assert "OS packages: not compared: the previous release's manifest is not here." in releasenotes.markdown(
        m
    )
    m["versions"]["driver_min"] = "none"
    assert "no NVIDIA driver needed (a CPU build)" in releasenotes.markdown(m)


def _base_manifest() -> releasenotes.Manifest:
    return {
        "immutable_tag": "2.9.1-cu128-runtime-20261127-c31bdfd",
        "moving_tags": ["2.9.1-cu128-runtime", "latest"],
        "repository": "localhost:5000/pytorch",
        "digest": "sha256:" + "a" * 64,
        "pushed": "2026-11-27T00:00:00+00:00",
        "git": {"revision": "c31bdfd", "dirty": False},
        "versions": {"torch": "2.9.1", "cuda": "12.8.90", "python": "3.13", "driver_min": "570.26"},
        "base": {
            "name": "docker.io/library/debian:trixie-slim",
            "digest": "sha256:" + "b" * 64,
            "pinned": True,
        },
        "lockfiles": {"requirements/locks/2.9.1-cu128/runtime.txt": "c" * 64},
        "packages": {"torch": "2.9.1"},
        "smoke": {"pass": 10, "fail": 0, "skip": 0},
        "gpu": True,
        "bench": None,
        "scan": {
            "vulnerabilities": "ran",
            "accepted_without_vuln_db": False,
            "counts": {"vulnerability": 3},
            "counts_by_platform": {"linux/amd64": {"vulnerability": 3}, "linux/arm64": {"vulnerability": 1}},
            "accepted": [],
        },
        "previous": {"digest": "sha256:" + "d" * 64, "revision": "0" * 40},
        "package_diff": {"added": {}, "removed": {}, "changed": {"numpy": ["2.3.4", "2.3.5"]}},
    }


def test_moving_tags_never_move_back_in_time() -> None:
    assert not tags.backwards("2026-11-27T10:00:00Z", "2026-11-26T10:00:00Z")
    assert not tags.backwards("2026-11-27T10:00:00Z", "2026-11-27T10:00:00Z")  # same commit
    assert tags.backwards("2026-11-27T10:00:00Z", "2026-11-28T10:00:00Z")
    assert tags.backwards("2026-11-27T10:00:00Z", None)  # unknown: only deliberately
    assert tags.backwards("2026-11-27T10:00:00Z", "yesterday")
    assert tags.backwards("not a date", "2026-11-26T10:00:00Z")


def test_credentials_never_leave_the_origin_url() -> None:
    assert gitinfo.public_url("https://user:ghp_token@github.com/org/x.git") == "https://github.com/org/x"
    assert gitinfo.public_url("https://ghp_token@github.com/org/x") == "https://github.com/org/x"
    assert gitinfo.public_url("git@github.com:org/x.git") == "https://github.com/org/x"
    assert gitinfo.public_url("https://u:t@[::1]:8080/org/x.git") == "https://[::1]:8080/org/x"
    assert gitinfo.public_url("ssh://git@host:2222/org/x") == "ssh://host:2222/org/x"
    assert gitinfo.public_url("http://u:p@host:8080/x?token=1#f") == "http://host:8080/x"
    assert gitinfo.public_url("https://u:p@host:bad/x") == "unknown"


def _record(**changes: object) -> record.Record:
    image = "sha256:" + "a" * 64
    rec = a_record(
        test=record.Tested(ok=True, image_id=image, gpu=False),
        scan=record.Scanned(
            ok=True, image_id=image, vulnerabilities="ran", vuln_db=record.VulnDb(available=True, how="t")
        ),
    )
    for key, value in changes.items():
        setattr(rec, key, value)
    return rec


REMOTE = Target("ghcr.io/org/pytorch")


def test_push_gate_passes_a_tested_and_scanned_clean_image() -> None:
    assert unmet(_record(), REMOTE, local_target=False) is None


def test_push_gate_refuses_each_missing_or_failed_stage() -> None:
    image = "sha256:" + "a" * 64
    other = "sha256:" + "b" * 64
    no_db = record.Scanned(
        ok=True,
        image_id=image,
        vulnerabilities="not run",
        vuln_db=record.VulnDb(available=False, how="offline"),
    )
    failed_scan = record.Scanned(
        ok=False,
        image_id=image,
        vulnerabilities="scan failed",
        vuln_db=no_db.vuln_db,
        problems=["trivy died"],
    )
    cases = {
        "has not been tested": _record(test=None),
        "failed its test": _record(test=record.Tested(ok=False, image_id=image, gpu=False)),
        "tested another image": _record(test=record.Tested(ok=True, image_id=other, gpu=False)),
        "trivy died": _record(scan=failed_scan),
        "not scanned": _record(scan=None),
        "could not check vulnerabilities": _record(scan=no_db),
        "uncommitted changes": _record(inputs=_record().inputs.model_copy(
            update={"git": record.GitInput(revision="c31bdfd", dirty=True)})),
    }  # fmt: skip
    for expected, rec in cases.items():
        refused = unmet(rec, REMOTE, local_target=False)
        assert refused is not None and refused.exit_code == 1, expected
        if expected != "tested another image":
            assert expected in refused.what, (expected, refused.what)
        else:
            assert "failed its test" in refused.what
    # the local registry accepts a scan without DB; a remote one only when told so
    assert unmet(_record(scan=no_db), REMOTE, local_target=True) is None
    allowed = dataclasses.replace(REMOTE, allow_no_vuln_db=True)
    assert unmet(_record(scan=no_db), allowed, local_target=False) is None
    # a scan that failed to run is waived by nothing
    assert unmet(_record(scan=failed_scan), allowed, local_target=True) is not None


def test_a_remote_release_of_a_cuda_image_needs_its_test_on_a_gpu() -> None:
    image = "sha256:" + "a" * 64
    cpu_mode = _record(test=record.Tested(ok=True, image_id=image, gpu=False))
    refused = unmet(cpu_mode, REMOTE, local_target=False, cuda=True)
    assert refused is not None and "tested without --require-gpu" in refused.what
    assert "--allow-cpu-test" in refused.fix
    assert unmet(cpu_mode, REMOTE, local_target=True, cuda=True) is None  # stays on this machine
    assert unmet(cpu_mode, dataclasses.replace(REMOTE, allow_cpu_test=True), False, cuda=True) is None
    assert unmet(cpu_mode, REMOTE, local_target=False, cuda=False) is None  # a cpu variant
    on_gpu = _record(test=record.Tested(ok=True, image_id=image, gpu=True, required_gpu=True))
    assert unmet(on_gpu, REMOTE, local_target=False, cuda=True) is None


def test_push_gate_wants_every_declared_platform_built_and_tested() -> None:
    both = ("linux/amd64", "linux/arm64")
    refused = unmet(_record(), REMOTE, local_target=True, platforms=both)
    assert refused is not None and "built for linux/amd64, but the variant declares" in refused.what
    rec = _record()
    rec.build.platforms = list(both)
    refused = unmet(rec, REMOTE, local_target=True, platforms=both)
    assert refused is not None and "not tested on linux/arm64" in refused.what
    assert rec.test is not None
    rec.test.emulated = {"linux/arm64": {"passed": 4, "failed": 0, "skipped": 6}}
    assert rec.scan is not None and rec.scan.platforms == []  # a scan that read one platform only
    refused = unmet(rec, REMOTE, local_target=True, platforms=both)
    assert (
        refused is not None
        and "scan of 2.9.1-cu128 runtime did not read its image for linux/amd64, linux/arm64" in refused.what
    )
    assert "nox -s scan" in refused.fix
    rec.scan.platforms = ["linux/amd64"]
    refused = unmet(rec, REMOTE, local_target=True, platforms=both)
    assert refused is not None and "did not read its image for linux/arm64" in refused.what
    rec.scan.platforms = list(both)
    assert unmet(rec, REMOTE, local_target=True, platforms=both) is None


def test_what_a_scan_cannot_change_is_judged_before_a_push_runs_one() -> None:
    """A record tested on one platform only (e.g. --native-only) is refused before the push
    spends tens of minutes scanning it; a record merely not yet scanned goes on to its scan."""
    both = ("linux/amd64", "linux/arm64")
    rec = _record(scan=None)
    rec.build.platforms = list(both)
    refused = untested(rec, REMOTE, local_target=True, platforms=both)
    assert refused is not None and "not tested on linux/arm64" in refused.what
    assert rec.test is not None
    rec.test.emulated = {"linux/arm64": {"passed": 4, "failed": 0, "skipped": 6}}
    assert untested(rec, REMOTE, local_target=True, platforms=both) is None
    refused = unmet(rec, REMOTE, local_target=True, platforms=both)
    assert refused is not None and "not scanned" in refused.what
    dirty = _record(scan=None, inputs=_record().inputs.model_copy(
        update={"git": record.GitInput(revision="c31bdfd", dirty=True)}))  # fmt: skip
    refused = untested(dirty, REMOTE, local_target=True)  # a scan would not make it committed
    assert refused is not None and "uncommitted changes" in refused.what


def test_a_single_platform_scan_from_before_each_platform_was_read_still_counts() -> None:
    rec = _record()
    assert rec.scan is not None and rec.scan.platforms == [] and rec.build.platforms == ["linux/amd64"]
    assert unmet(rec, REMOTE, local_target=True) is None
    rec.scan.platforms = ["linux/arm64"]  # read another platform than the one built
    refused = unmet(rec, REMOTE, local_target=True)
    assert refused is not None and "did not read its image for linux/amd64" in refused.what


def test_a_damaged_earlier_release_manifest_is_named_before_any_tag_moves(tmp_path: Path) -> None:
    (tmp_path / "2.9.1-cu128-runtime-20261127-c31bdfd.json").write_text('{"trunc')
    with pytest.raises(PipelineError, match=r"is not a release manifest") as exc:
        releasenotes.recorded("2.9.1-cu128-runtime-20261127-c31bdfd", tmp_path)
    assert exc.value.exit_code == 2
    assert releasenotes.recorded("another-tag", tmp_path)["previous"] is None  # none here: a note


def test_a_bench_without_its_usual_keys_still_makes_a_manifest() -> None:
    rec = _record()
    assert rec.test is not None
    rec.test.bench = {"results": []}
    assert releasenotes.bench_summary(rec.test) == {"device": None, "unit": None, "best": []}


def _released(folder: Path, name: str, content: object) -> None:
    (folder / f"2.9.1-cu128-runtime-{name}.json").write_text(json.dumps(content))


PREVIOUS = "sha256:" + "d" * 64


def _nothing_beside(repository: str, digest: str) -> remote_registry.Release | None:
    """A registry with no release manifest attached beside the previous image."""
    return None


def _attached(repository: str, digest: str, manifest: bytes) -> remote_registry.Release:
    """Release files as the registry's reader checks them (the part that needs no engine)."""
    files = {"release.json": manifest, "release.md": b"notes"}
    return remote_registry.release_of(f"{repository}:{tags.release_files(digest)}", digest, files)


def _now(**changes: object) -> releasenotes.Manifest:
    m: releasenotes.Manifest = {
        "repository": "registry.example.com/pytorch",
        "variant": "2.9.1-cu128",
        "flavor": "runtime",
        "previous": {"digest": PREVIOUS},
        "os_packages": {"linux/amd64": {"openssl": "3.5.10-1", "new": "2"}},
    }
    m.update(changes)
    return m


def test_os_packages_are_compared_with_the_previous_releases_manifest_when_it_is_here(tmp_path: Path) -> None:
    earlier = {"linux/amd64": {"openssl": "3.5.9-1", "gone": "1"}}
    _released(tmp_path, "20261101-0000000", {"digest": PREVIOUS, "os_packages": earlier})
    # newer manifests of the same image without a usable list, and a broken file, are passed over
    _released(tmp_path, "20261102-1111111", {"digest": PREVIOUS, "os_packages": {"linux/amd64": ["x"]}})
    _released(tmp_path, "20261103-2222222", {"digest": PREVIOUS})
    (tmp_path / "2.9.1-cu128-runtime-20261104-3333333.json").write_text("{")
    changes = {
        "added": {"new": "2"},
        "removed": {"gone": "1"},
        "changed": {"openssl": ["3.5.9-1", "3.5.10-1"]},
    }
    found = releasenotes.os_changes(_now(), tmp_path, _nothing_beside)
    assert found == {"os_package_diff": {"linux/amd64": changes}}
    text = releasenotes.markdown({**_base_manifest(), **_now(), **found})
    assert has_row(text, "openssl", "3.5.9-1", "3.5.10-1") and "not compared" not in text


def test_os_packages_not_compared_say_why(tmp_path: Path) -> None:
    elsewhere = releasenotes.os_changes(
        _now(previous={"digest": "sha256:" + "e" * 64}), tmp_path, _nothing_beside
    )
    assert elsewhere["os_package_diff"] is None
    assert "is neither in" in str(elsewhere["os_package_diff_note"])
    assert f"registry.example.com/pytorch:sha256-{'e' * 64}.release" in str(elsewhere["os_package_diff_note"])
    unlisted = releasenotes.os_changes(_now(os_packages={}), tmp_path, _nothing_beside)
    assert "listed no OS packages" in str(unlisted["os_package_diff_note"])
    assert releasenotes.os_changes(_now(previous=None), tmp_path, _nothing_beside) == {
        "os_package_diff": None
    }
    _released(tmp_path, "20261101-0000000", {"digest": PREVIOUS, "os_packages": {"linux/amd64": {"a": 1}}})
    malformed = releasenotes.os_changes(_now(), tmp_path, _nothing_beside)
    assert "has a malformed OS package list" in str(malformed["os_package_diff_note"])
    text = releasenotes.markdown({**_base_manifest(), **_now(), **malformed})
    assert "OS packages: not compared: the previous release's manifest" in text


def test_os_packages_are_compared_with_the_manifest_attached_beside_the_previous_image(
    tmp_path: Path,
) -> None:
    """A fresh CI runner has no reports/releases/: the registry has the previous release's."""
    asked: list[tuple[str, str]] = []

    def beside(repository: str, digest: str) -> remote_registry.Release | None:
        asked.append((repository, digest))
        raw = json.dumps({"digest": digest, "os_packages": {"linux/amd64": {"openssl": "3.5.9-1"}}})
        return _attached(repository, digest, raw.encode())

    found = releasenotes.os_changes(_now(), tmp_path, beside)
    assert asked == [("registry.example.com/pytorch", PREVIOUS)]
    assert found == {
        "os_package_diff": {
            "linux/amd64": {
                "added": {"new": "2"},
                "removed": {},
                "changed": {"openssl": ["3.5.9-1", "3.5.10-1"]},
            }
        }
    }
    # the folder's own copy is read first; the registry is not asked then
    _released(
        tmp_path, "20261101-0000000", {"digest": PREVIOUS, "os_packages": {"linux/amd64": {"new": "2"}}}
    )
    asked.clear()
    assert releasenotes.os_changes(_now(), tmp_path, beside)["os_package_diff"] == {
        "linux/amd64": {"added": {"openssl": "3.5.10-1"}, "removed": {}, "changed": {}}
    }
    assert asked == []


@pytest.mark.parametrize(
    ("beside", "note"),
    [
        (b'{"digest": "sha256:' + b"e" * 64 + b'", "os_packages": {}}', "not the manifest of the image"),
        (b"[1, 2", "Expecting"),
        (b'{"digest": "sha256:' + b"d" * 64 + b'"}', "has no OS package list"),
        (  # names that would break or inject into the Markdown notes
            b'{"digest": "sha256:' + b"d" * 64 + b'", "os_packages": {"linux/amd64": {"a|b\\n# x": "1"}}}',
            "has a malformed OS package list",
        ),
        (
            b'{"digest": "sha256:' + b"d" * 64 + b'", "os_packages": {"linux/amd64": {"a": "<img src=x>"}}}',
            "has a malformed OS package list",
        ),
    ],
)
def test_a_manifest_beside_the_previous_image_that_does_not_read_back_is_a_note(
    tmp_path: Path, beside: bytes, note: str
) -> None:
    def read(repository: str, digest: str) -> remote_registry.Release | None:
        return _attached(repository, digest, beside)

    found = releasenotes.os_changes(_now(), tmp_path, read)
    assert found["os_package_diff"] is None and note in str(found["os_package_diff_note"])
    assert "sha256-" + "d" * 64 + ".release" in str(found["os_package_diff_note"])
    releasenotes.markdown({**_base_manifest(), **_now(), **found})


def test_release_files_beside_the_previous_image_that_are_something_else_are_a_note(tmp_path: Path) -> None:
    """Content no retry can fix (not one layer, too large, a link): said in the notes, not a
    failed push of every later release of the line."""

    def read(repository: str, digest: str) -> remote_registry.Release | None:
        raise RefusedError(
            "registry.example.com/pytorch:sha256-d.release is not a one-layer image", "remove it"
        )

    found = releasenotes.os_changes(_now(), tmp_path, read)
    assert found["os_package_diff"] is None
    note = str(found["os_package_diff_note"])
    assert "is not a one-layer image" in note and "remove it" not in note and "\n" not in note


def test_a_registry_failing_to_give_the_previous_manifest_fails_the_push_not_the_notes(
    tmp_path: Path,
) -> None:
    """Notes that silently compared nothing would be attached beside the image and signed."""

    def read(repository: str, digest: str) -> remote_registry.Release | None:
        raise ToolError("cannot read registry.example.com/pytorch@sha256:... (connection refused)", "retry")

    with pytest.raises(ToolError, match="connection refused"):
        releasenotes.os_changes(_now(), tmp_path, read)


def test_a_platform_only_one_release_has_is_named_not_compared(tmp_path: Path) -> None:
    """Else a new platform's whole OS would read as 'added', a dropped one vanish unsaid."""
    both = {"linux/amd64": {"a": "1"}, "linux/s390x": {"a": "1"}}
    _released(tmp_path, "20261101-0000000", {"digest": PREVIOUS, "os_packages": both})
    now = _now(os_packages={"linux/amd64": {"a": "1"}, "linux/arm64": {"a": "1"}})
    found = releasenotes.os_changes(now, tmp_path, _nothing_beside)
    assert found["os_package_diff"] == {"linux/amd64": {"added": {}, "removed": {}, "changed": {}}}
    assert found["os_package_diff_note"] == (
        "linux/arm64: not in the previous release; linux/s390x: in the previous release only"
    )
    text = releasenotes.markdown({**_base_manifest(), **now, **found})
    assert "OS packages (linux/amd64): none changed version." in text
    assert "OS packages not compared: linux/arm64: not in the previous release;" in text


@pytest.mark.parametrize(
    ("earlier", "note"),
    [
        ({}, "predates OS package lists"),
        ({"os_package_diff": ["x"]}, "malformed OS package diff"),
        ({"os_package_diff": {"linux/amd64": None}}, "malformed OS package diff"),
    ],
)
def test_a_version_tags_release_keeps_its_first_releases_diffs_only_when_they_read_back(
    tmp_path: Path, earlier: dict[str, object], note: str
) -> None:
    """A damaged earlier manifest must not break the notes after the moving tags moved."""
    tag = "2.9.1-cu128-runtime-20261101-0000000"
    first = {
        "digest": PREVIOUS,
        "previous": {"digest": "sha256:" + "c" * 64},
        "package_diff": None,
        **earlier,
    }
    (tmp_path / f"{tag}.json").write_text(json.dumps(first))
    kept = releasenotes.recorded(tag, tmp_path)
    assert kept["os_package_diff"] is None and note in str(kept["os_package_diff_note"])
    releasenotes.markdown({**_base_manifest(), **kept})
    (tmp_path / f"{tag}.json").write_text(json.dumps({"previous": {"digest": 5}, "package_diff": "x"}))
    assert "malformed previous release" in str(releasenotes.recorded(tag, tmp_path)["package_diff_note"])


def test_os_packages_are_read_as_dpkg_spells_their_versions() -> None:
    report = {
        "Results": [
            {"Class": "os-pkgs", "Packages": [
                {"Name": "openssl", "Version": "3.5.9", "Release": "1~deb13u1"},
                {"Name": "perl-base", "Version": "5.40.1", "Release": "6", "Epoch": 1},
                {"Name": "base-files", "Version": "13.8+deb13u8"},
                {"Name": None, "Version": "1"},
            ]},
            {"Class": "lang-pkgs", "Packages": [{"Name": "torch", "Version": "2.9.1"}]},
        ]
    }  # fmt: skip
    assert scan_policy.os_packages(report) == {
        "base-files": "13.8+deb13u8",
        "openssl": "3.5.9-1~deb13u1",
        "perl-base": "1:5.40.1-6",
    }


def _pushed(reports: Path, flavor: str, repository: str, release_files: str | None) -> str:
    """A record of an image of the default variant pushed to `repository`; its digest."""
    digest = "sha256:" + ("b" if flavor == "dev" else "c") * 64
    rec = a_record(digest, flavor=flavor)
    rec.push = record.Pushed(
        ok=True,
        image_id=digest,
        repository=repository,
        digest=digest,
        references=[],
        manifest="m",
        release_files=release_files,
    )
    record.Store(reports).write(rec)
    return digest


def test_digests_prints_what_was_pushed_to_the_configured_repository_and_its_release_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    here = "localhost:5000/pytorch"
    files = "sha256:" + "f" * 64
    served = {"now": files}  # what the registry serves beside each image (test_promote asks a real one)
    monkeypatch.setattr(remote_registry, "digest", lambda ref: served["now"] if ".release" in ref else None)
    runtime = _pushed(tmp_path, "runtime", here, files)
    argv = ["--reports", str(tmp_path), "digests"]
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.split() == [f"{here}@{runtime}"]
    assert cli.main([*argv, "--release-files"]) == 0
    assert capsys.readouterr().out.split() == [f"{here}@{runtime}", f"{here}@{files}"]
    served["now"] = "sha256:" + "e" * 64  # a concurrent push replaced them after this one's read back
    assert cli.main([*argv, "--release-files"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and f"no longer the release files this push recorded: {here}:sha256-" in err
    served["now"] = files

    # a record of a push elsewhere (an earlier run's local registry, another --repository)
    dev = _pushed(tmp_path, "dev", "registry.example.com/pytorch", None)
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""  # nothing to sign rather than a partial list
    assert (
        "not pushed to localhost:5000/pytorch: 2.9.1-cu128 dev (pushed to registry.example.com/pytorch)"
        in err
    )
    assert cli.main([*argv, "--repository", "registry.example.com/pytorch"]) == 2  # runtime is elsewhere now
    capsys.readouterr()
    _pushed(tmp_path, "runtime", "registry.example.com/pytorch", files)
    assert cli.main([*argv, "--repository", "registry.example.com/pytorch"]) == 0
    assert capsys.readouterr().out.split() == [f"registry.example.com/pytorch@{x}" for x in (runtime, dev)]
    assert cli.main([*argv, "--repository", "registry.example.com/pytorch", "--release-files"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "no release manifest beside the pushed image of 2.9.1-cu128 dev" in err


@pytest.mark.parametrize(
    ("files", "said"),
    [
        ({"release.json": b'{"digest": "%s"}' % PREVIOUS.encode()}, "no release.md there"),
        ({"release.md": b"notes"}, "no release.json there"),
        ({"release.json": b"\xff{", "release.md": b""}, "release.json is not JSON"),
        ({"release.json": b"[" * 100_000, "release.md": b""}, "release.json is not JSON"),
        ({"release.json": b'["%s"]' % PREVIOUS.encode(), "release.md": b""}, "not the manifest of the image"),
        ({"release.json": b'{"digest": "sha256:%s"}' % (b"e" * 64), "release.md": b""}, "not the manifest"),
    ],
)
def test_release_files_read_back_are_refused_unless_both_are_there_and_describe_the_image(
    files: dict[str, bytes], said: str
) -> None:
    """One reader for push (keep or refuse), the notes' comparison and `notes REF`."""
    ref = f"registry.example.com/pytorch:{tags.release_files(PREVIOUS)}"
    with pytest.raises(RefusedError) as exc:
        remote_registry.release_of(ref, PREVIOUS, files)
    assert exc.value.what.startswith(f"{ref}: ") and said in exc.value.what
    assert ref in exc.value.fix and exc.value.exit_code == 1
    good = {"release.json": b'{"digest": "%s"}' % PREVIOUS.encode(), "release.md": b"# notes"}
    assert remote_registry.release_of(ref, PREVIOUS, good).manifest == {"digest": PREVIOUS}


def test_release_files_are_kept_only_when_they_say_what_this_push_finds_of_the_image() -> None:
    """A later push keeps the first release's files and CI signs them: files planted there with
    other packages, or notes that are not their manifest's, are not kept."""
    smoke = {"pass": 10, "warn": 0, "fail": 0, "skip": 1}  # not in sorted order
    served = [{"platform": "linux/amd64", "digest": "sha256:" + "a" * 64, "size": 5, "served": True}]
    first = releasenotes.round_trip({**_base_manifest(), "smoke": smoke, "platforms": served})
    notes = releasenotes.markdown(first).encode()
    assert b"10 pass, 0 warn, 0 fail, 1 skip" in notes  # counts in their own order, whatever the JSON's
    assert releasenotes.markdown({**_base_manifest(), "smoke": smoke, "platforms": served}).encode() == notes
    # a later push of the same digest: another time, moving tags, test and scan results
    now = releasenotes.round_trip(
        {**_base_manifest(), "pushed": "2026-12-07T00:00:00+00:00", "moving_tags": [], "smoke": {"pass": 9}}
    )
    now["platforms"] = [{**served[0], "served": False}]  # whether the registry answered then: not the image's
    assert releasenotes.unlike(first, notes, now) is None
    forged = {**first, "packages": {"torch": "2.9.1", "evil": "1.0"}}
    assert releasenotes.unlike(forged, releasenotes.markdown(forged).encode(), now) == (
        "their packages differ from this image's"
    )
    assert releasenotes.unlike(first, notes + b"\nAll clear.\n", now) == (
        "their notes are not what their manifest says"
    )
    assert releasenotes.unlike({**first, "git": "c31bdfd"}, notes, now) == "they name another commit"
    assert releasenotes.unlike({**first, "repository": "elsewhere/pytorch"}, notes, now) == (
        "they name another repository"
    )
    assert releasenotes.unlike({**first, "scan": None}, notes, now) == (
        "their notes are not what their manifest says"  # markdown of it fails: not kept either
    )


@pytest.mark.parametrize("label", ["--output=/tmp/pwned", "main", "c31bdfd", "0" * 39 + "g", ""])
def test_a_previous_image_whose_revision_label_is_no_commit_id_is_not_given_to_git(
    label: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The label is the registry's word: it would reach `git show` and the notes."""
    asked: list[str] = []
    monkeypatch.setattr(remote_registry, "digest", lambda ref: PREVIOUS)

    def labelled(ref: str) -> dict[str, str]:
        asked.append(ref)
        return {labels.REVISION: label}

    monkeypatch.setattr(remote_registry, "labels", labelled)
    monkeypatch.setattr(gitinfo, "show", lambda revision, path: pytest.fail(f"git asked for {revision}"))
    found = releasenotes.previous(
        "registry.example.com/pytorch:2.9.1-cu128-runtime",
        "sha256:" + "a" * 64,
        "t",
        ["l.txt"],
        tmp_path,
        _nothing_beside,
    )
    assert asked == [
        f"registry.example.com/pytorch@{PREVIOUS}"
    ]  # the image the digest names, not the tag's now
    assert found["previous"] == {
        "ref": "registry.example.com/pytorch:2.9.1-cu128-runtime",
        "digest": PREVIOUS,
        "revision": "unknown",
    }
    assert str(found["package_diff_note"]).startswith("the previous image names no commit")


def _tar(*entries: tarfile.TarInfo | tuple[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tar.addfile(entry)
            else:
                info = tarfile.TarInfo(entry[0])
                info.size = len(entry[1])
                tar.addfile(info, io.BytesIO(entry[1]))
    return out.getvalue()


def _link(name: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, "/etc/passwd"
    return info


@pytest.mark.parametrize(
    ("layer", "said"),
    [
        (_tar(_link("release.json", tarfile.SYMTYPE)), "release.json: a symbolic link"),
        (_tar(_link("./release.json", tarfile.LNKTYPE)), "release.json: a hard link"),
        (_tar(("release.json", b"{}"), ("/release.json", b"[]")), "release.json: in the layer twice"),
        (_tar(("release.json", b"{}")) + b"x" * 512, "more after its end-of-archive"),
        # a bad header, then another release.json (Go's tar, as BuildKit's, would refuse the layer)
        (
            _tar(("release.json", b"{}"))[:1024] + b"\xff" * 512 + _tar(("release.json", b"[]")),
            "twice|more after",
        ),
        (b"not a tar" * 100, "not a tar archive"),
    ],
)
def test_a_release_files_layer_is_read_in_memory_and_refused_unless_plain(layer: bytes, said: str) -> None:
    """Nothing of the layer is written out: what an unpacked layer would do is refused here."""
    with pytest.raises(RefusedError, match=said):
        registries._files_in("r:sha256-x.release", layer, ["release.json", "release.md"])


def test_a_release_files_layer_gives_the_files_asked_for() -> None:
    layer = _tar(
        ("./release.json", b"{}"), ("release.md", b"# n"), ("other", b"x"), _link("l", tarfile.SYMTYPE)
    )
    assert registries._files_in("r", layer, ["release.json", "release.md"]) == {
        "release.json": b"{}",
        "release.md": b"# n",
    }
    assert registries._files_in("r", layer, ["absent.json"]) == {}


def test_a_compressed_release_files_layer_is_decompressed_in_memory_and_bounded() -> None:
    """A few kB of gzip or zstd may hold gigabytes: at most 1 MiB of it is decompressed."""
    tar = _tar(("release.json", b"{}"))
    assert registries._tar_of("r", gzip.compress(tar), "gzip") == tar
    assert registries._tar_of("r", zstandard.ZstdCompressor().compress(tar), "zstd") == tar
    assert registries._tar_of("r", tar, "none") == tar
    bomb = b"\0" * (registries.FILES_MAX_BYTES + 1)
    for blob, kind in ((gzip.compress(bomb), "gzip"), (zstandard.ZstdCompressor().compress(bomb), "zstd")):
        assert len(blob) < 2**14
        with pytest.raises(RefusedError, match="more than 1048576 bytes decompressed"):
            registries._tar_of("r", blob, kind)
    with pytest.raises(RefusedError, match="not gzip as its type says"):
        registries._tar_of("r", tar, "gzip")
    with pytest.raises(RefusedError, match="does not decompress"):
        registries._tar_of("r", gzip.compress(tar)[:-20], "gzip")


@pytest.mark.parametrize(
    "config",
    [
        b'{"config": {"OnBuild": ["RUN x"]}}',
        b'{"config": {"onbuild": ["RUN x"]}}',  # Go's decoder matches keys in any case
        b'{"CONFIG": {"Onbuild": ["RUN x"]}}',
        b'{"config": {"OnBuild": ["RUN x"]}, "config": {}}',  # Go merges; Python keeps the last
        b'{"config": {"OnBuild": ["RUN x"], "onBuild": null}}',
        b'{"container_config": {"OnBuild": ["RUN x"]}}',
        b"[" * 5000 + b"]" * 5000,
        b'{"config": {}}\xff',
    ],
)
def test_a_files_image_whose_config_could_hold_onbuild_triggers_is_refused_before_any_build(
    config: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading the layer starts a build FROM the image: its triggers would run."""
    digest = f"sha256:{hashlib.sha256(config).hexdigest()}"
    monkeypatch.setattr(registries, "imagetools", lambda ref: config.decode(errors="replace"))
    with pytest.raises(RefusedError, match=r"ONBUILD|not plain JSON|not an image.s|not what its digest"):
        registries._diff_id("r:sha256-x.release", f"r@{digest}")


def test_a_files_image_config_names_its_one_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    def diff_id(config: bytes) -> str:
        monkeypatch.setattr(registries, "imagetools", lambda ref: config.decode())
        return registries._diff_id("r", f"r@sha256:{hashlib.sha256(config).hexdigest()}")

    layer = "sha256:" + "a" * 64
    assert diff_id(b'{"config": {"OnBuild": null}, "rootfs": {"diff_ids": ["%s"]}}' % layer.encode()) == layer
    with pytest.raises(RefusedError, match="does not name one layer"):
        diff_id(b'{"rootfs": {"diff_ids": ["%s", "%s"]}}' % (layer.encode(), layer.encode()))
    with pytest.raises(RefusedError, match="not what its digest says"):
        monkeypatch.setattr(registries, "imagetools", lambda ref: "{}")
        registries._diff_id("r", "r@sha256:" + "b" * 64)


@pytest.mark.parametrize(
    ("served", "said"),
    [
        (b'{"config": {"digest": "a"}, "CONFIG": {"digest": "b"}}', "a key given twice"),
        ('{"layers": [], "Layer\u017f": []}'.encode(), "a key given twice"),  # Go folds the long s
        (b'{"rootfs": [1]}', "does not name one layer"),
        (b"[]", "not a JSON object"),
    ],
)
def test_what_the_registry_serves_by_digest_is_read_as_buildkit_reads_it(
    served: bytes, said: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checked against its digest, and each key once in any case: Go's decoder (BuildKit's)
    would read another config or layer than the one checked here."""
    by_digest = f"r@sha256:{hashlib.sha256(served).hexdigest()}"
    monkeypatch.setattr(registries, "imagetools", lambda ref: served.decode())
    with pytest.raises(RefusedError, match=said):
        registries._diff_id("r", by_digest)
    monkeypatch.setattr(registries, "imagetools", lambda ref: '{"config": {}}')  # not what was asked
    with pytest.raises(RefusedError, match="a manifest that is not what its digest says"):
        registries._by_digest("r", by_digest, "manifest")
