"""Host safety: a stale pid file never gets a signal sent; untracked image inputs make a tree dirty."""

import subprocess
from pathlib import Path

import pytest

from torchimg import paths
from torchimg.adapters import gitinfo, local_registry
from torchimg.errors import PipelineError


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


def test_a_shallow_clone_that_cuts_the_lockfiles_history_is_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """git dates every file by a shallow clone's oldest commit: the layer epoch would be that
    commit's time, not the lockfile's, and the layers another build's than a full clone's."""
    full, shallow = tmp_path / "full", tmp_path / "shallow"
    full.mkdir()
    _git(full, "init", "-q")
    commit = ["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm"]
    (full / "runtime.txt").write_text("torch==2.9.1\n")
    _git(full, "add", ".")
    _git(full, *commit, "lock")
    (full / "README").write_text("docs\n")
    _git(full, "add", ".")
    _git(full, *commit, "docs")
    monkeypatch.setattr(paths, "ROOT", full)
    assert gitinfo.shallow_cut(full / "runtime.txt") is None
    _git(tmp_path, "clone", "-q", "--depth", "1", f"file://{full}", str(shallow))
    monkeypatch.setattr(paths, "ROOT", shallow)
    head = subprocess.run(["git", "-C", str(shallow), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert gitinfo.shallow_cut(shallow / "runtime.txt") == head.stdout.strip()  # dated by the cut
    (shallow / "runtime.txt").write_text("torch==2.9.0\n")
    _git(shallow, "add", ".")
    _git(shallow, *commit, "re-lock")
    assert gitinfo.shallow_cut(shallow / "runtime.txt") is None  # its own commit, in the clone


def test_clean_removes_only_what_the_pipeline_wrote_in_the_reports_folder(tmp_path: Path) -> None:
    """$TORCHIMG_REPORTS may name a folder with other files (the checkout itself, say)."""
    from torchimg import devtools
    from torchimg.model import variants

    config = variants.load(paths.ROOT / "tests" / "fixtures" / "repo" / "variants.toml")
    mixed = tmp_path / "mixed"
    for d in (
        "records",
        "releases",
        "refresh/sub",
        "2.9.1-cu128-runtime",
        "web-dev",
        "my-runtime",
        "src",
        ".git",
    ):
        (mixed / d).mkdir(parents=True)
    for f in ("records/x.json", "build-report.md", "doctor-img.json", "thesis.tex", "src/main.py"):
        (mixed / f).write_text("x")
    lines = devtools.remove_reports(mixed, config)
    kept = [".git", "my-runtime", "refresh", "src", "thesis.tex", "web-dev"]
    assert sorted(p.name for p in mixed.iterdir()) == kept  # refresh/ holds a folder: not ours
    assert (mixed / "src" / "main.py").exists()
    assert any("kept" in line and "thesis.tex" in line for line in lines), lines
    assert f"removed {mixed}/records/" in lines, lines
    ours = tmp_path / "reports"
    (ours / "records").mkdir(parents=True)
    (ours / "records" / ".2.9.1-cu128-runtime.json.lock").write_text("")
    (ours / "build-report-platforms.json").write_text("{}")
    assert devtools.remove_reports(ours, config) == [f"removed {ours}/"]
    assert not ours.exists()
    linked = tmp_path / "linked"
    (tmp_path / "target" / "records").mkdir(parents=True)
    linked.symlink_to(tmp_path / "target")
    devtools.remove_reports(linked, config)  # a symlinked folder is emptied, and stays a link
    assert linked.is_symlink() and list(linked.iterdir()) == []


def test_each_port_of_the_embedded_registry_keeps_its_own_state(tmp_path: Path) -> None:
    """`registry down` on one port never stops the registry of another (one pid file each)."""
    default, other = (
        local_registry.Local("localhost:5000", tmp_path),
        local_registry.Local("localhost:5991", tmp_path),
    )
    assert default.pid_file.name == "registry.pid" and default.storage.name == "storage"
    assert len({default.pid_file, other.pid_file}) == 2
    assert len({default.config_file, other.config_file}) == 2
    assert len({default.storage, other.storage}) == 2


@pytest.mark.parametrize(
    "host", ["[::1]:5999", "localhost:\uff15\uff10\uff10\uff10", "localhost:0", "example.com:5000"]
)
def test_the_embedded_registry_listens_on_ipv4_loopback_only(host: str) -> None:
    with pytest.raises(PipelineError, match="not a loopback HOST:PORT"):
        local_registry.check_host(host, "--host")
