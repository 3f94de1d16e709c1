"""`nox -s scan` with real trivy on the real image, and on an image with a planted secret."""

import datetime
import json
from pathlib import Path

import pytest

from tests.integration.conftest import build_small, remove_images, require_trivy
from torchimg import gate, record, scan, variants
from torchimg.errors import PipelineError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def _trivy() -> None:
    require_trivy()


def test_scan_writes_reports_sbom_sarif_and_records_the_outcome(
    runtime_image: record.Record, default_variant: variants.Variant, reports: Path
) -> None:
    opts = scan.ScanOptions(allow_no_vuln_db=True)
    try:
        outcome = scan.scan(default_variant, "runtime", opts)["scan"]
    except PipelineError:
        saved = record.read(default_variant.name, "runtime")
        if saved is None or "scan" not in saved:
            raise  # trivy itself failed: nothing was recorded
        outcome = saved["scan"]
        # the only acceptable failures here are real vulnerabilities found with a database
        assert outcome["vulnerabilities"] == "ran", outcome["problems"]
    folder = reports / "2.9.1-cu128-runtime"
    for name in ("image.json", "config.json", "sbom.cdx.json", "image.sarif", "config.sarif"):
        assert (folder / name).stat().st_size > 0, name
    sbom = json.loads((folder / "sbom.cdx.json").read_text())
    components = {c["name"]: c.get("version") for c in sbom["components"]}
    assert components["torch"] == "2.9.1"
    assert components["nvidia-cudnn-cu12"] == "9.10.2.21"
    assert outcome["image_id"] == runtime_image["image_id"]
    assert outcome["counts"]["secret"] == 0
    assert outcome["counts"]["misconfiguration"] == 0
    assert outcome["licenses"]  # licenses reported, for information
    sarif = json.loads((folder / "image.sarif").read_text())
    assert sarif["version"] == "2.1.0"


def test_no_vulnerability_database_fails_unless_accepted(
    runtime_image: record.Record, default_variant: variants.Variant
) -> None:
    with pytest.raises(PipelineError) as exc:
        scan.scan(default_variant, "runtime", scan.ScanOptions())
    saved = record.read(default_variant.name, "runtime")
    assert saved is not None and "scan" in saved, str(exc.value)
    if saved["scan"]["vulnerabilities"] == "ran":
        pytest.skip("trivy's vulnerability database is reachable here: the offline case cannot be shown")
    assert "no vulnerability database" in str(exc.value)
    assert "--allow-no-vuln-db" in str(exc.value)
    assert saved["scan"]["ok"] is False


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
        scan.run_trivy(tag, out, scan.ScanOptions())
        found = gate.findings(json.loads((out / "image.json").read_text()))
        verdict = gate.judge(found, [], gate.Policy(), datetime.date.today())
        assert {f.id for f in verdict.blocking if f.kind == "secret"} >= {"aws-access-key-id"}
        assert any(f.target.endswith("app/credentials.ini") for f in verdict.blocking)
    finally:
        remove_images(tag)


def test_missing_trivy_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCHIMG_TRIVY", "/nonexistent/trivy")
    with pytest.raises(PipelineError, match="trivy not found") as exc:
        scan.trivy()
    assert "install it the official way" in str(exc.value)
