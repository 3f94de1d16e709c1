"""The probe's "user, home and compile scratch" check (docker/probe), on the host: it judges the
folders torch.compile and Triton would use without creating them, never passes a folder where
compiled code cannot be written, and never crashes on an odd environment."""

import getpass
from pathlib import Path

import pytest
from torchimg_probe import scratch
from torchimg_probe.results import Report


def _run(monkeypatch: pytest.MonkeyPatch, **env: str | None) -> tuple[str, str, dict[str, object]]:
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    check = Report("doctor").run("scratch", scratch.check)
    return check.status, check.detail, check.data


def test_a_writable_folder_that_runs_programs_passes_and_keeps_nothing(tmp_path: Path) -> None:
    assert scratch._cannot_run_code_in(str(tmp_path)) == ""
    assert scratch._cannot_run_code_in(str(tmp_path / "not" / "made" / "yet")) == ""
    assert list(tmp_path.iterdir()) == []  # neither the folders nor the test program


def test_folders_where_compiled_code_cannot_go(tmp_path: Path) -> None:
    assert scratch._cannot_run_code_in("") == "set but empty"
    (tmp_path / "link").symlink_to(tmp_path / "missing")
    assert "is a broken symbolic link" in scratch._cannot_run_code_in(str(tmp_path / "link" / "cache"))
    (tmp_path / "file").write_text("")
    assert "is not a folder" in scratch._cannot_run_code_in(str(tmp_path / "file" / "cache"))
    assert "(to be made in /proc) is not writable" in scratch._cannot_run_code_in("/proc/torchimg-cache")


def test_a_relative_folder_is_the_working_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert scratch._cannot_run_code_in("cache") == ""


def test_the_check_passes_where_compile_can_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    status, detail, data = _run(monkeypatch, HOME=str(tmp_path), USER="someone", TORCHINDUCTOR_CACHE_DIR=None)
    assert status == "pass", detail
    assert data["user"] == "someone" and str(data["compile_cache"]).endswith("torchinductor_someone")


def test_no_user_name_fails_unless_the_cache_folder_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def nameless() -> str:
        raise OSError("No username set in the environment")

    monkeypatch.setattr(getpass, "getuser", nameless)
    status, detail, _ = _run(monkeypatch, HOME=str(tmp_path), TORCHINDUCTOR_CACHE_DIR=None)
    assert status == "fail" and "no user name" in detail
    status, detail, _ = _run(monkeypatch, TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor"))
    assert status == "pass", detail


def test_a_set_but_empty_cache_folder_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    status, detail, _ = _run(monkeypatch, HOME=str(tmp_path), TORCHINDUCTOR_CACHE_DIR="")
    assert status == "fail" and "set but empty" in detail


def test_a_home_that_cannot_be_written_warns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = str(tmp_path / "inductor")
    status, detail, _ = _run(monkeypatch, HOME="/nonexistent-home", TORCHINDUCTOR_CACHE_DIR=cache)
    assert status == "warn" and "HOME (/nonexistent-home) is not writable" in detail
    status, detail, _ = _run(monkeypatch, HOME=str(tmp_path / "file"), TORCHINDUCTOR_CACHE_DIR=cache)
    assert status == "warn", detail  # a file, not a folder
