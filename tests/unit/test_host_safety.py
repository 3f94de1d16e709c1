"""Host safety: a stale pid file never gets a signal sent; untracked image inputs make a tree dirty."""

import subprocess
from pathlib import Path

import pytest

from torchimg import paths
from torchimg.adapters import gitinfo, local_registry


def test_a_stale_pid_file_naming_another_process_never_gets_it_signalled(tmp_path: Path) -> None:
    other = subprocess.Popen(["sleep", "60"])
    try:
        reg = local_registry.Local.on_free_port(tmp_path)
        reg.pid_file.write_text(str(other.pid))
        assert "no registry running" in reg.stop()
        assert other.poll() is None, "the process named by a stale pid file was signalled"
    finally:
        other.kill()
        other.wait()


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


def test_untracked_files_under_the_image_inputs_make_the_tree_dirty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _git(tmp_path, "init", "-q")
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "Dockerfile").write_text("FROM scratch\n")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "x")
    monkeypatch.setattr(paths, "ROOT", tmp_path)
    assert gitinfo.current().dirty is False
    (tmp_path / "notes.txt").write_text("outside the image's inputs\n")
    assert gitinfo.current().dirty is False
    (tmp_path / "docker" / "extra.py").write_text("reaches the image\n")
    assert gitinfo.current().dirty is True
