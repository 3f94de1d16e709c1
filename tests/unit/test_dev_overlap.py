"""docker/image/no-overlap, the dev build's check that no dev-only package writes a path of
the runtime venv (the dev layer is copied over runtime's, where an overwrite is silent): the
script itself, on folders laid out as the build lays them out."""

import subprocess
from pathlib import Path

from torchimg import paths

IMAGE = paths.ROOT / "docker" / "image"


def _tree(root: Path, files: list[str], folders: tuple[str, ...] = ()) -> Path:
    for name in folders:
        (root / name).mkdir(parents=True, exist_ok=True)
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name)
    return root


def _check(tmp_path: Path, dev: Path, *runtime_layers: Path) -> subprocess.CompletedProcess[str]:
    listed = subprocess.run(
        ["sh", str(IMAGE / "files-list"), *map(str, runtime_layers)],
        capture_output=True,
        text=True,
        check=True,
    )
    (tmp_path / "runtime-files.txt").write_text(listed.stdout)
    return subprocess.run(
        ["sh", str(IMAGE / "no-overlap"), str(dev), str(tmp_path / "runtime-files.txt")],
        capture_output=True,
        text=True,
    )


def test_dev_only_paths_beside_the_runtime_venv_pass(tmp_path: Path) -> None:
    site = "opt/venv/lib/python3.13/site-packages"
    rest = _tree(tmp_path / "rest", [f"{site}/numpy/__init__.py", "opt/venv/bin/torchrun"])
    torch = _tree(tmp_path / "torch", [f"{site}/torch/__init__.py"])
    dev = _tree(tmp_path / "dev", [f"{site}/jupyterlab/__init__.py", "opt/venv/bin/jupyter lab"])
    ran = _check(tmp_path, dev, torch, rest)
    assert ran.returncode == 0, ran.stderr
    assert "dev-only paths, none a runtime venv path" in ran.stderr


def test_a_dev_file_over_a_runtime_file_or_folder_fails_naming_it(tmp_path: Path) -> None:
    site = "opt/venv/lib/python3.13/site-packages"
    rest = _tree(tmp_path / "rest", [f"{site}/six.py", "opt/venv/bin/jupyter"], (f"{site}/pkg",))
    dev = _tree(tmp_path / "dev", [f"{site}/six.py", "opt/venv/bin/ok", f"{site}/pkg/x.py"])
    ran = _check(tmp_path, dev, rest)
    assert ran.returncode == 1
    assert f"/{site}/six.py of a dev-only package is in the runtime venv too" in ran.stderr
    assert "pkg/x.py" not in ran.stderr  # a file inside a folder both have is new
    dev2 = _tree(tmp_path / "dev2", [f"{site}/pkg"])  # a file where runtime has a folder
    assert _check(tmp_path, dev2, rest).returncode == 1
    dev3 = _tree(tmp_path / "dev3", [], ("opt/venv/bin/jupyter",))  # a folder over a runtime file
    assert _check(tmp_path, dev3, rest).returncode == 1


def test_a_layout_it_does_not_know_fails_instead_of_passing(tmp_path: Path) -> None:
    rest = _tree(tmp_path / "rest", ["opt/venv/bin/torchrun"])
    ran = _check(tmp_path, tmp_path / "missing", rest)
    assert ran.returncode == 2 and "holds no opt/venv" in ran.stderr
    (tmp_path / "empty.txt").write_text("")
    dev = _tree(tmp_path / "dev", ["opt/venv/bin/x"])
    ran = subprocess.run(
        ["sh", str(IMAGE / "no-overlap"), str(dev), str(tmp_path / "empty.txt")],
        capture_output=True,
        text=True,
    )
    assert ran.returncode == 2 and "lists no runtime venv file" in ran.stderr
