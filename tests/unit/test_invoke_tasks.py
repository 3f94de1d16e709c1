"""The invoke tasks' edges: a command's own exit status passes through, anything unclassified
ends in one line with exit 3, and their inputs are checked before anything runs."""

import os
from pathlib import Path

import invoke
import pytest
from invoke.context import Context

from torchimg import devtools, errors
from torchimg.errors import PipelineError


def test_a_failing_command_keeps_its_exit_status_and_an_unclassified_error_is_exit_3(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TORCHIMG_DEBUG", raising=False)
    with pytest.raises(invoke.exceptions.UnexpectedExit) as ran, devtools.user_errors():
        Context().run(
            "exit 5", hide=True, in_stream=False
        )  # `inv shell --run CMD`: CMD's status is the answer
    assert ran.value.result.exited == 5
    with pytest.raises(SystemExit) as ended, devtools.user_errors():
        raise KeyError("x")
    assert ended.value.code == errors.TOOL_FAILED
    err = capsys.readouterr().err
    assert "KeyError" in err and "TORCHIMG_DEBUG=1" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("value", "on"), [("1", True), ("true", True), ("0", False), ("false", False), ("", False)]
)
def test_torchimg_debug_is_on_only_when_it_says_so(
    value: str, on: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCHIMG_DEBUG", value)
    assert errors.debugging() is on


@pytest.mark.parametrize("port", ["abc", "0", "65536", "-1", "8888.0", "\uff18\uff18"])
def test_a_jupyter_port_that_is_not_a_tcp_port_is_refused(port: str) -> None:
    with pytest.raises(PipelineError, match="is not a TCP port"):
        devtools.host_port(port)
    assert devtools.host_port("8888") == 8888


def test_a_traceback_asked_for_keeps_the_exit_status_of_a_tool_failure(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TORCHIMG_DEBUG", "1")
    with pytest.raises(SystemExit) as ended, devtools.user_errors():
        raise KeyError("x")
    assert ended.value.code == errors.TOOL_FAILED  # not 1, which says a gate refused
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["abc", "1e9", "-5", "99999999999999", "9" * 5000])
def test_a_source_date_epoch_that_is_not_a_time_is_named(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchimg.adapters import gitinfo

    monkeypatch.setenv("SOURCE_DATE_EPOCH", value)
    with pytest.raises(PipelineError, match=r"\$SOURCE_DATE_EPOCH"):
        gitinfo._source_date_epoch()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "")
    assert gitinfo._source_date_epoch() == 0


def test_a_host_user_runs_in_group_0_which_may_write_the_images_venv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`inv shell` / `inv jupyter` as a host user other than root or 1000: their uid, group 0
    added (the venv's group: `%pip install` works), HOME in /tmp."""
    monkeypatch.setattr(os, "getuid", lambda: 4321)
    monkeypatch.setattr(os, "getgid", lambda: 4321)
    assert devtools._user_flags(tmp_path, created=False) == [
        "--user",
        "4321:4321",
        "--group-add",
        "0",
        "-e",
        "HOME=/tmp",
    ]
    monkeypatch.setattr(os, "getuid", lambda: devtools.IMAGE_UID)
    assert devtools._user_flags(tmp_path, created=False) == []  # the image's own user


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["clean", "--bogus"], "No idea what '--bogus' is!"),
        (["nosuchtask"], "No idea what 'nosuchtask' is!"),
        (["registry"], "did not receive required positional arguments: 'action'"),
        (["shell", "--run"], "needed value and was not given one"),
        (["--nosuch"], "No idea what '--nosuch' is!"),
        (["doctor", "--list-depth", "abc"], "invalid literal for int()"),
    ],
)
def test_a_task_command_line_invoke_cannot_parse_is_bad_input(
    argv: list[str], says: str, tmp_path: Path
) -> None:
    """invoke's own answer would be 1, which here means a gate refused."""
    import subprocess
    import sys

    inv = Path(sys.executable).parent / "inv"
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-such-docker.sock"}
    done = subprocess.run(
        [str(inv), *argv], cwd=Path(devtools.__file__).parents[1], env=env, capture_output=True, text=True
    )
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and "inv --list" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(("variant", "flavor"), [("nope", "runtime"), ("", "dev")])
def test_doctor_refuses_a_variant_or_flavor_beside_an_image(
    variant: str, flavor: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """--image names the image: a --variant or --flavor beside it would be silently ignored."""
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such-docker.sock")
    monkeypatch.setenv("TORCHIMG_REPORTS", str(tmp_path / "reports"))
    with pytest.raises(PipelineError, match="--image names the image itself") as exc:
        devtools.doctor(variant, flavor, "localhost:5000/pytorch:2.9.1-cu128-runtime")
    assert exc.value.exit_code == 2


@pytest.mark.parametrize(
    ("argv", "env", "unknown"),
    [
        (["-s", "biuld"], {}, "'biuld'"),
        (["-s", "build", "tset", "--", "--variant", "x"], {}, "'tset'"),
        (["--session=refresh-bases", "--list"], {}, "'refresh-bases'"),
        (["--list"], {"NOXSESSION": "lint,nope"}, "'nope'"),
    ],
)
def test_a_session_name_nox_does_not_know_is_bad_input(
    argv: list[str], env: dict[str, str], unknown: str
) -> None:
    """nox's own answer would be 3, which here means a tool failed."""
    import subprocess
    import sys

    nox = Path(sys.executable).parent / "nox"
    done = subprocess.run(
        [str(nox), *argv],
        cwd=Path(devtools.__file__).parents[1],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2, done.stderr
    assert f"no session {unknown}" in done.stderr and "refresh_bases" in done.stderr


def test_session_names_nox_knows_are_listed() -> None:
    """The check of session names lets a known one through to nox."""
    import subprocess
    import sys

    nox = Path(sys.executable).parent / "nox"
    done = subprocess.run(
        [str(nox), "-s", "lint", "refresh_bases", "--list"],
        cwd=Path(devtools.__file__).parents[1],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "* refresh_bases" in done.stdout and "* lint" in done.stdout
