"""The probe's "user, home and compile scratch" check (docker/probe), on the host: it judges the
folders torch.compile and Triton would use without creating them, never passes a folder where
compiled code cannot be written, and never crashes on an odd environment."""

import getpass
import importlib.util
import os
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
    (tmp_path / "file").write_text("")
    status, detail, _ = _run(monkeypatch, HOME=str(tmp_path / "file"), TORCHINDUCTOR_CACHE_DIR=cache)
    assert status == "warn" and "is not writable" in detail, detail  # a file, not a folder


@pytest.mark.parametrize(("cuda", "status"), [(True, "fail"), (False, "warn")])
def test_triton_cache_fails_where_torch_compile_uses_triton_and_warns_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cuda: bool, status: str
) -> None:
    """With triton installed, a Triton cache that cannot be written stops torch.compile on the
    GPU (Triton builds its launchers there); on a CPU build only triton.jit kernels."""
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: object() if name == "triton" else real_find_spec(name, *a),
    )
    monkeypatch.setattr(scratch, "_torch_has_cuda", lambda: cuda)
    cache = str(tmp_path / "inductor")
    assert (
        _run(monkeypatch, HOME=str(tmp_path), TORCHINDUCTOR_CACHE_DIR=cache, TRITON_CACHE_DIR=None)[0]
        == "pass"
    )
    found, detail, data = _run(monkeypatch, TRITON_CACHE_DIR="", TRITON_HOME=None)
    assert (found, data["triton_problem"]) == (status, "set but empty"), detail
    (tmp_path / "file").write_text("")  # ${TRITON_HOME:-$HOME}/.triton/cache under a file
    found, detail, _ = _run(monkeypatch, TRITON_CACHE_DIR=None, TRITON_HOME=str(tmp_path / "file"))
    assert found == status and "Triton's cache" in detail and "is not a folder" in detail, detail


@pytest.mark.skipif(
    os.geteuid() == 0, reason="root enters any folder: the unreachable case needs another user"
)
def test_a_folder_that_cannot_be_reached_is_named_not_raised(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0)
    try:
        assert "cannot be reached" in scratch._cannot_run_code_in(str(locked / "a" / "b"))
    finally:
        locked.chmod(0o700)
