"""The image's entrypoint (docker/image/entrypoint), run with the host's sh: a UID gets a home
it can write, nothing keeps the command from starting, arguments reach it as given."""

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from torchimg import paths

ENTRYPOINT = str(paths.ROOT / "docker" / "image" / "entrypoint")
UID = os.getuid()


def run(*command: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/sh", ENTRYPOINT, *command],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_without_a_command_it_says_how_to_call_it() -> None:
    done = run(PATH="/usr/bin:/bin")
    assert done.returncode == 2 and "usage: torchimg-entrypoint COMMAND" in done.stderr


def test_arguments_reach_the_command_as_given_and_its_status_comes_back(tmp_path: Path) -> None:
    done = run("/usr/bin/printf", "%s|", "a b", "c'd", '"e"', HOME=str(tmp_path))
    assert done.stdout == 'a b|c\'d|"e"|'
    assert run("/bin/sh", "-c", "exit 7", HOME=str(tmp_path)).returncode == 7


def test_a_path_without_the_system_folders_still_starts_the_command(tmp_path: Path) -> None:
    done = run("/usr/bin/env", PATH="/opt/venv/bin", HOME=str(tmp_path))
    assert done.returncode == 0 and f"HOME={tmp_path}" in done.stdout


def test_a_writable_home_is_left_as_it_is(tmp_path: Path) -> None:
    assert (
        run("/usr/bin/env", HOME=str(tmp_path), TMPDIR="/nonexistent").stdout.count(f"HOME={tmp_path}\n") == 1
    )


@pytest.mark.parametrize("home", ["/nonexistent-home", "/dev/null", ""])
def test_a_home_that_is_not_a_writable_folder_moves_to_the_temporary_folder(
    tmp_path: Path, home: str
) -> None:
    done = run("/usr/bin/env", HOME=home, TMPDIR=str(tmp_path))
    assert f"HOME={tmp_path}/home-{UID}\n" in done.stdout, done
    assert (tmp_path / f"home-{UID}").stat().st_mode & 0o777 == 0o700


def test_a_tmpdir_where_no_home_can_be_made_falls_back_to_tmp() -> None:
    made = Path(f"/tmp/home-{UID}")
    existed = made.exists()
    try:
        out = run("/usr/bin/env", HOME="/nonexistent-home", TMPDIR="/proc").stdout
        assert f"HOME=/tmp/home-{UID}" in out
    finally:
        if not existed:
            made.rmdir()


def test_a_home_folder_planted_by_someone_else_is_never_used(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / f"home-{UID}").symlink_to(elsewhere)
    out = run("/usr/bin/env", HOME="/nonexistent-home", TMPDIR=str(tmp_path)).stdout
    home = next(line.split("=", 1)[1] for line in out.splitlines() if line.startswith("HOME="))
    assert home.startswith(f"{tmp_path}/home-{UID}.") and Path(home).is_dir() and not Path(home).is_symlink()


def test_ctrl_z_is_ignored_on_a_terminal_only(tmp_path: Path) -> None:
    """On a terminal tini hands it to the command: a stopped command could not be resumed."""
    show = "import signal; print(signal.getsignal(signal.SIGTSTP) == signal.SIG_IGN)"
    piped = run(sys.executable, "-c", show, HOME=str(tmp_path))
    assert piped.stdout.strip() == "False", piped
    try:
        pid, fd = pty.fork()
    except OSError as exc:
        pytest.skip(f"no pseudo-terminal here: {exc}")
    if pid == 0:  # the child, on the terminal
        try:
            os.execve(
                "/bin/sh",
                ["sh", ENTRYPOINT, sys.executable, "-c", show],
                {**os.environ, "HOME": str(tmp_path)},
            )
        finally:
            os._exit(127)
    output = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 1024)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.waitpid(pid, 0)
    assert output.decode().strip() == "True"
