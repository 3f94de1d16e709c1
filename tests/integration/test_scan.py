"""`nox -s scan` with real trivy on the real image, on an image with a planted secret, and with
the real trivy made to fail in the ways that once let the gate pass."""

import datetime
import json
import shutil
from pathlib import Path

import pytest

from tests.integration.conftest import Pipeline, build_small, remove_images, require_trivy
from torchimg.adapters import emulation, engine, trivy
from torchimg.errors import BAD_INPUT, TOOL_FAILED, PipelineError, RefusedError, ToolError
from torchimg.model import record, scan_policy, variants
from torchimg.model.push_preconditions import Target, unscanned
from torchimg.stages import scan

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def _trivy() -> None:
    require_trivy()


def _wrapper(tmp_path: Path, script: str) -> Path:
    """A `trivy` that runs the real binary (its path written in), altered by `script`."""
    real = str(trivy.binary())
    path = tmp_path / "trivy"
    path.write_text(f'#!/bin/sh\nREAL="{real}"\n{script}')
    path.chmod(0o755)
    return path


def test_scan_writes_reports_sbom_sarif_and_records_the_outcome(
    pipeline: Pipeline, runtime_image: record.Record, default_variant: variants.Variant, reports: Path
) -> None:
    opts = scan.Options(allow_no_vuln_db=True)
    try:
        outcome = scan.scan(*pipeline.at("runtime", default_variant), opts).scan
    except RefusedError:
        saved = pipeline.store.read(default_variant.name, "runtime")
        assert saved is not None and saved.scan is not None
        outcome = saved.scan
        # the only acceptable refusal here: real vulnerabilities found with a database
        assert outcome.vulnerabilities == "ran", outcome.problems
    assert outcome is not None
    folder = reports / "2.9.1-cu128-runtime"
    for name in ("image.json", "config.json", "sbom.cdx.json", "image.sarif", "config.sarif"):
        assert (folder / name).stat().st_size > 0, name
    sbom = json.loads((folder / "sbom.cdx.json").read_text())
    components = {c["name"]: c.get("version") for c in sbom["components"]}
    assert components["torch"] == "2.9.1"
    assert components["nvidia-cudnn-cu12"] == "9.10.2.21"
    assert outcome.image_id == runtime_image.image_id
    # the report names the recorded image: trivy was given its ID, not a tag
    image_report = json.loads((folder / "image.json").read_text())
    assert image_report["Metadata"]["ImageID"] == runtime_image.image_id
    assert image_report["ArtifactName"] == runtime_image.image_id
    assert outcome.counts["secret"] == 0
    assert outcome.counts["misconfiguration"] == 0
    assert outcome.licenses  # licenses reported, for information
    assert "--download-db-only" in outcome.vuln_db.how or outcome.vuln_db.available
    sarif = json.loads((folder / "image.sarif").read_text())
    assert sarif["version"] == "2.1.0"


def test_no_vulnerability_database_fails_unless_accepted(
    pipeline: Pipeline, runtime_image: record.Record, default_variant: variants.Variant
) -> None:
    with pytest.raises(PipelineError) as exc:
        scan.scan(*pipeline.at("runtime", default_variant), scan.Options())
    saved = pipeline.store.read(default_variant.name, "runtime")
    assert saved is not None and saved.scan is not None, str(exc.value)
    if saved.scan.vuln_db.available:
        pytest.skip("trivy's vulnerability database is reachable here: the offline case cannot be shown")
    assert isinstance(exc.value, RefusedError)
    assert "vulnerabilities not checked" in str(exc.value)
    assert "--allow-no-vuln-db" in str(exc.value)
    assert saved.scan.ok is False
    assert saved.scan.vulnerabilities.startswith("not run")


def test_a_trivy_crash_after_its_db_line_is_a_failed_scan_no_flag_waives(
    pipeline: Pipeline,
    runtime_image: record.Record,
    default_variant: variants.Variant,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The DB step succeeds (a DB appears in the cache); the vulnerability scan then prints
    trivy's normal DB line and dies. Once recorded as "no database" and waived: now exit 3."""
    fake = _wrapper(
        tmp_path,
        'case " $* " in\n'
        '  *" --download-db-only "*)\n'
        '    cache=$(echo " $* " | sed -n "s/.* --cache-dir \\([^ ]*\\) .*/\\1/p")\n'
        '    mkdir -p "$cache/db" && echo \'{"Version": 2}\' > "$cache/db/metadata.json"\n'
        '    echo junk > "$cache/db/trivy.db"; exit 0 ;;\n'
        '  *" --scanners vuln "*)\n'
        '    echo "2026-11-27T00:00:00Z INFO [vulndb] Downloading vulnerability DB..." >&2; exit 2 ;;\n'
        "esac\n"
        'exec "$REAL" "$@"\n',
    )
    monkeypatch.setenv("TORCHIMG_TRIVY", str(fake))
    opts = scan.Options(allow_no_vuln_db=True, scanner=trivy.TrivyOptions(cache_dir=tmp_path / "cache"))
    with pytest.raises(ToolError) as exc:
        scan.scan(*pipeline.at("runtime", default_variant), opts)
    assert exc.value.exit_code == TOOL_FAILED
    assert "vulnerability scan exited 2" in exc.value.what
    saved = pipeline.store.read(default_variant.name, "runtime")
    assert saved is not None and saved.scan is not None
    assert saved.scan.ok is False and saved.scan.vulnerabilities == "scan failed"
    assert saved.scan.vuln_db.available is True  # decided before the scan, from the cache folder
    # the scan's own gate: whatever the working tree or an earlier test left in the record
    refused = unscanned(saved, Target("localhost:5000/x", allow_no_vuln_db=True), True, None)
    assert refused is not None and "failed its scan gate" in refused.what


def _report_edited(tmp_path: Path, edit: str) -> Path:
    """A trivy that runs the real one, then runs `edit` (shell, `$out`: the report) on the
    report of the scan that lists all packages."""
    return _wrapper(
        tmp_path,
        'out=""; prev=""\n'
        'for a in "$@"; do [ "$prev" = "-o" ] && out="$a"; prev="$a"; done\n'
        '"$REAL" "$@"; code=$?\n'
        f'case " $* " in *" --list-all-pkgs "*)\n  {edit} ;;\nesac\n'
        "exit $code\n",
    )


def test_a_truncated_report_is_a_failed_scan(
    pipeline: Pipeline,
    runtime_image: record.Record,
    default_variant: variants.Variant,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = _report_edited(tmp_path, 'head -c 200 "$out" > "$out.part"; mv "$out.part" "$out"')
    monkeypatch.setenv("TORCHIMG_TRIVY", str(fake))
    with pytest.raises(ToolError, match=r"image\.json is empty, truncated or not JSON"):
        scan.scan(*pipeline.at("runtime", default_variant), scan.Options(allow_no_vuln_db=True))
    saved = pipeline.store.read(default_variant.name, "runtime")
    assert saved is not None and saved.scan is not None and saved.scan.ok is False


def test_a_scan_that_breaks_on_an_odd_report_never_leaves_an_earlier_pass_standing(
    pipeline: Pipeline,
    runtime_image: record.Record,
    default_variant: variants.Variant,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A report of schema 2 that trivy's own SBOM conversion accepts, with a null result: an
    error no adapter classifies; the record of this scan says failed, never the pass before it."""
    fake = _report_edited(
        tmp_path,
        "python3 -c \"import json,sys; d=json.load(open(sys.argv[1])); d['Results']=[None]; "
        'json.dump(d, open(sys.argv[1], \'w\'))" "$out"',
    )
    earlier = record.Scanned(ok=True, image_id=runtime_image.image_id, vulnerabilities="ran",
                             vuln_db=record.VulnDb(available=True, how="fresh"))  # fmt: skip
    pipeline.store.save_section(default_variant.name, "runtime", "scan", earlier)
    monkeypatch.setenv("TORCHIMG_TRIVY", str(fake))
    with pytest.raises(AttributeError):  # not one the adapters classify
        scan.scan(*pipeline.at("runtime", default_variant), scan.Options(allow_no_vuln_db=True))
    saved = pipeline.store.read(default_variant.name, "runtime")
    assert saved is not None and saved.scan is not None
    assert saved.scan.ok is False and saved.scan.vulnerabilities == "scan failed", saved.scan


def test_a_retag_between_test_and_scan_never_scans_the_other_image(
    pipeline: Pipeline, runtime_image: record.Record, default_variant: variants.Variant, base: str | None
) -> None:
    tag = runtime_image.tags[0]
    other = base or default_variant.base.image
    engine.tag(other, tag)
    try:
        with pytest.raises(PipelineError, match="no longer names") as exc:
            scan.scan(*pipeline.at("runtime", default_variant), scan.Options(allow_no_vuln_db=True))
        assert exc.value.exit_code == BAD_INPUT
    finally:
        engine.tag(runtime_image.image_id, tag)
    assert engine.image_id(tag) == runtime_image.image_id


def test_a_secret_planted_in_an_image_is_caught(base: str | None, tmp_path: Path) -> None:
    key_id = "AKIA" + "QYLPMN5HHHFPZAM2"  # a made-up key, assembled so no scanner flags this file
    secret = "8KlwwPfqazD6BZzHyDrwTBdIvYZFMw1y" + "7A1pK9n1"
    (tmp_path / "credentials.ini").write_text(
        f"aws_access_key_id = {key_id}\naws_secret_access_key = {secret}\n"
    )
    base_ref = base or variants.load().bases["debian-trixie"].image
    tag = build_small(
        tmp_path,
        f"FROM {base_ref}\nCOPY credentials.ini /app/credentials.ini\n",
        "torchimg-test/planted-secret:latest",
    )
    try:
        out = tmp_path / "reports"
        out.mkdir()
        image_id = engine.image_id(tag)
        assert image_id is not None
        no_db = record.VulnDb(available=False, how="not needed for secrets")
        here = emulation.engine_platform()
        reports = trivy.analyse_image(trivy.Source(image_id, here), out, trivy.TrivyOptions(), no_db)
        found = scan_policy.findings(reports["image"])
        verdict = scan_policy.judge(found, [], scan_policy.Policy(), datetime.date.today())
        assert {f.id for f in verdict.blocking if f.kind == "secret"} >= {"aws-access-key-id"}
        assert any(f.target.endswith("app/credentials.ini") for f in verdict.blocking)
    finally:
        remove_images(tag)


def test_each_platform_of_an_index_is_scanned_and_a_secret_in_one_only_blocks(tmp_path: Path) -> None:
    """trivy reads an index from the engine as the engine's platform only: a secret in the
    other platform's image is found through that platform's own OCI layout."""
    key_id = "AKIA" + "QYLPMN5HHHFPZAM2"  # made up, assembled so no scanner flags this file
    secret = "8KlwwPfqazD6BZzHyDrwTBdIvYZFMw1y" + "7A1pK9n1"
    for arch, text in (("amd64", "nothing here\n"), ("arm64", f"aws_access_key_id = {key_id}\n")):
        (tmp_path / arch).mkdir()
        (tmp_path / arch / "credentials.ini").write_text(text + f"aws_secret_access_key = {secret[:8]}\n")
    both = ("linux/amd64", "linux/arm64")
    tag = build_small(
        tmp_path,
        "FROM scratch\nARG TARGETARCH\nCOPY ${TARGETARCH}/credentials.ini /app/credentials.ini\n",
        "torchimg-test/two-platform-secret:latest",
        platforms=both,
    )
    out = tmp_path / "reports"
    out.mkdir()
    try:
        image_id = engine.image_id(tag)
        assert image_id is not None
        no_db = record.VulnDb(available=False, how="not needed for secrets")
        reports = scan.analyse(image_id, list(both), out, trivy.TrivyOptions(), no_db)
        assert list(reports) == list(both)
        secrets = {
            p: {f.id for f in scan_policy.findings(r["image"]) if f.kind == "secret"}
            for p, r in reports.items()
        }
        assert secrets == {"linux/amd64": set(), "linux/arm64": {"aws-access-key-id"}}
        arm = json.loads((out / "image.linux-arm64.json").read_text())
        assert arm["Metadata"]["ImageConfig"]["architecture"] == "arm64"
        assert (
            json.loads((out / "image.json").read_text())["Metadata"]["ImageConfig"]["architecture"] == "amd64"
        )
        assert (out / "sbom.linux-arm64.cdx.json").stat().st_size > 0
        assert not list(out.glob(".layout-*")), "the layout folder stays behind"
        # the engine's read filed under another platform (a remote engine of another machine)
        other = next(p for p in both if p != emulation.engine_platform())
        with pytest.raises(RefusedError, match=f"about a {emulation.engine_platform()} image, not {other}"):
            trivy.analyse_image(trivy.Source(image_id, other), out, trivy.TrivyOptions(), no_db)
        with pytest.raises(ToolError, match="holds no linux/s390x image") as exc:
            scan.analyse(image_id, ["linux/s390x"], out, trivy.TrivyOptions(), no_db)
        assert exc.value.exit_code == TOOL_FAILED
        assert not list(out.glob(".layout-*"))
    finally:
        remove_images(tag)


def test_missing_trivy_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A $TORCHIMG_TRIVY naming no program is a setting to fix (exit 2); no trivy, a tool missing."""
    for named in ("/nonexistent/trivy", "/etc/passwd", str(tmp_path)):
        monkeypatch.setenv("TORCHIMG_TRIVY", named)
        with pytest.raises(PipelineError, match="is not an executable file") as bad:
            trivy.binary()
        assert bad.value.exit_code == 2 and "point $TORCHIMG_TRIVY" in str(bad.value)
    monkeypatch.setenv("TORCHIMG_TRIVY", "")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolError, match="trivy not found") as exc:
        trivy.binary()
    assert "install it the official way" in str(exc.value) and exc.value.exit_code == TOOL_FAILED


def test_no_trivy_leaves_the_records_last_scan_as_it_was(
    pipeline: Pipeline,
    runtime_image: record.Record,
    default_variant: variants.Variant,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Without trivy nothing was scanned: an earlier verdict is neither replaced nor touched."""
    before = pipeline.store.path(default_variant.name, "runtime").read_bytes()
    docker = shutil.which("docker")
    assert docker is not None
    (tmp_path / "docker").symlink_to(docker)  # a PATH with the engine's client and no trivy
    monkeypatch.setenv("TORCHIMG_TRIVY", "")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolError, match="trivy not found"):
        scan.scan(*pipeline.at("runtime", default_variant), scan.Options())
    assert pipeline.store.path(default_variant.name, "runtime").read_bytes() == before


def test_lint_config_passes_on_a_report_only_never_on_an_exit_status(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A trivy that exits 0 without a report (or fails) is a failed lint, not a clean docker/."""
    from torchimg import cli

    require_trivy()
    assert cli.main(["lint-config"]) == 0
    assert "docker/ clean" in capsys.readouterr().err
    for fake, says in (("/bin/true", "wrote no report"), ("/bin/false", "exited 1")):
        monkeypatch.setenv("TORCHIMG_TRIVY", fake)
        assert cli.main(["lint-config"]) == TOOL_FAILED
        err = capsys.readouterr().err
        assert says in err and "clean" not in err
