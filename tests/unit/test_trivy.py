"""The scan stage's fail-closed decisions, with a stand-in trivy (no engine needed): whether a
vulnerability DB is there is decided before scanning, and every report is checked."""

import datetime
import json
from pathlib import Path

import pytest

from torchimg.adapters import trivy
from torchimg.errors import RefusedError, ToolError

IMAGE = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64


def _fake_trivy(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "trivy"
    path.write_text(f'#!/bin/sh\necho "$@" >> "{tmp_path}/calls"\n{body}\n')
    path.chmod(0o755)
    return path


def _db(cache: Path, updated: datetime.datetime) -> None:
    (cache / "db").mkdir(parents=True)
    (cache / "db" / "metadata.json").write_text(json.dumps({"Version": 2, "UpdatedAt": updated.isoformat()}))
    (cache / "db" / "trivy.db").write_bytes(b"db")


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def user_trivy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A TRIVY_* variable in the user's environment, which the gate must not pass on."""
    monkeypatch.setenv("TRIVY_SEVERITY", "CRITICAL")


NOW = datetime.datetime.now(datetime.UTC)


@pytest.mark.parametrize(
    ("exit_code", "updated", "available", "how"),
    [
        (0, NOW, True, "downloaded or current"),
        (1, NOW - datetime.timedelta(days=1), True, "using the DB already"),
        (1, NOW - datetime.timedelta(days=30), False, "older than 7 days"),
        (1, None, False, "holds no database"),
        (0, None, False, "exited 0 but"),
    ],
)
def test_the_db_is_decided_before_scanning_from_the_cache_folder(
    tmp_path: Path,
    cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    user_trivy_env: None,
    exit_code: int,
    updated: datetime.datetime | None,
    available: bool,
    how: str,
) -> None:
    if updated is not None:
        _db(cache, updated)
    body = '[ -n "$TRIVY_SEVERITY" ] && exit 9\necho "INFO Downloading vulnerability DB..." >&2\n'
    monkeypatch.setenv("TORCHIMG_TRIVY", str(_fake_trivy(tmp_path, body + f"exit {exit_code}")))
    db = trivy.vuln_db(trivy.TrivyOptions(cache_dir=cache))
    assert (db.available, how in db.how) == (available, True), db.how
    call = (tmp_path / "calls").read_text()
    assert "--download-db-only" in call and f"--cache-dir {cache}" in call
    assert "--config /dev/null --ignorefile /dev/null" in call


def _report(**changes: object) -> dict[str, object]:
    report: dict[str, object] = {
        "SchemaVersion": 2,
        "ArtifactName": IMAGE,
        "ArtifactType": "container_image",
        "Metadata": {"ImageID": IMAGE},
        "Results": [],
    }
    report.update(changes)
    return report


@pytest.mark.parametrize(
    ("content", "error", "message"),
    [
        (None, ToolError, "wrote no report"),
        (b"", ToolError, "empty, truncated or not JSON"),
        (json.dumps(_report()).encode()[:40], ToolError, "empty, truncated or not JSON"),
        (b"[]", ToolError, "not a trivy JSON report"),
        (json.dumps(_report(SchemaVersion=1)).encode(), ToolError, "not a trivy JSON report"),
        (json.dumps(_report(Metadata={"ImageID": OTHER})).encode(), RefusedError, "not the recorded"),
    ],
)  # fmt: skip
def test_every_report_is_checked(tmp_path: Path, content: bytes | None, error: type, message: str) -> None:
    path = tmp_path / "image.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(error, match=message):
        trivy.read_report(path, IMAGE)


def test_a_complete_report_about_the_image_is_read(tmp_path: Path) -> None:
    path = tmp_path / "image.json"
    path.write_text(json.dumps(_report()))
    assert trivy.read_report(path, IMAGE)["ArtifactName"] == IMAGE
