"""docker/image/healthcheck.py, the image's HEALTHCHECK: which processes it judges and how it
asks them, against real processes on this machine (an HTTP server named like Jupyter's
launcher: what the check reads is /proc and the socket, not Jupyter)."""

import importlib.util
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

_SCRIPT = Path(__file__).parents[2] / "docker" / "image" / "healthcheck.py"

_SERVER = """
import http.server, sys
class Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(500 if self.path.startswith("/broken/") else 200)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer((sys.argv[1], 0), Answer).serve_forever()
"""


@pytest.fixture(scope="module")
def check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("healthcheck", _SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    setattr(module, "_ASK_S", 1.0)  # noqa: B010 (a module loaded from a file: no attributes to mypy)
    return module


def _start(tmp_path: Path, check: ModuleType, address: str = "127.0.0.1") -> subprocess.Popen[bytes]:
    launcher = tmp_path / "jupyter-server"
    launcher.write_text(_SERVER)
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    server = subprocess.Popen([sys.executable, str(launcher), address], env={"HOME": str(home)})
    for _ in range(100):
        if check._listening(str(server.pid))[0]:
            return server
        time.sleep(0.1)
    server.kill()
    pytest.fail("the stand-in server did not listen within 10 s")


@pytest.fixture
def server(tmp_path: Path, check: ModuleType) -> Iterator[subprocess.Popen[bytes]]:
    process = _start(tmp_path, check)
    yield process
    process.send_signal(signal.SIGCONT)
    process.kill()
    process.wait()


def _record(tmp_path: Path, pid: int, **info: object) -> None:
    runtime = tmp_path / "home" / ".local" / "share" / "jupyter" / "runtime"
    runtime.mkdir(parents=True, exist_ok=True)
    (runtime / f"jpserver-{pid}.json").write_text(json.dumps(info))


def test_a_server_that_answers_is_healthy_and_a_stopped_one_is_not(
    server: subprocess.Popen[bytes], check: ModuleType
) -> None:
    assert check._jupyter_problem(str(server.pid)) is None
    server.send_signal(signal.SIGSTOP)  # the kernel still accepts; nothing answers
    port = check._listening(str(server.pid))[0][0][1]
    assert check._jupyter_problem(str(server.pid)) == (
        f"does not answer http://127.0.0.1:{port}/api (timed out)"
    )


def test_the_record_adds_the_base_url_only_for_a_port_the_process_listens_on(
    server: subprocess.Popen[bytes], check: ModuleType, tmp_path: Path
) -> None:
    port = check._listening(str(server.pid))[0][0][1]
    _record(tmp_path, server.pid, port=port, base_url="/broken/")
    assert check._jupyter_problem(str(server.pid)) == (
        f"answers http://127.0.0.1:{port}/broken/api with HTTP 500"
    )
    # another container's record under the same PID (a shared home): not this server's
    _record(tmp_path, server.pid, port=port + 1, base_url="/broken/")
    assert check._jupyter_problem(str(server.pid)) is None
    # a record that is not an object is no record
    (
        tmp_path / "home" / ".local" / "share" / "jupyter" / "runtime" / f"jpserver-{server.pid}.json"
    ).write_text("[]")
    assert check._jupyter_problem(str(server.pid)) is None


def test_every_address_is_asked_on_loopback(tmp_path: Path, check: ModuleType) -> None:
    process = _start(tmp_path, check, "0.0.0.0")
    try:
        (host, _port), *_ = check._listening(str(process.pid))[0]
        assert host == "127.0.0.1"
        assert check._jupyter_problem(str(process.pid)) is None
    finally:
        process.kill()
        process.wait()


def test_a_server_without_a_port_is_starting_then_stuck(
    check: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    launcher = tmp_path / "jupyter-lab"
    launcher.write_text("import time\ntime.sleep(60)\n")
    process = subprocess.Popen([sys.executable, str(launcher)], env={"HOME": str(tmp_path)})
    try:
        time.sleep(0.5)
        assert str(check._jupyter_problem(str(process.pid))).startswith("listens on no port yet: starting (")
        monkeypatch.setattr(check, "_STARTING_S", 0)
        assert str(check._jupyter_problem(str(process.pid))).startswith("listens on no port after ")
    finally:
        process.kill()
        process.wait()


@pytest.mark.parametrize(
    ("argv", "serving"),
    [
        (["/opt/venv/bin/python3", "/opt/venv/bin/jupyter-lab", "--ip="], True),
        (["/opt/venv/bin/jupyter-lab"], True),
        (["python", "/opt/venv/bin/jupyter-notebook", "notebook.ipynb"], True),
        (["python", "/opt/venv/bin/jupyter-server", "password"], False),
        (["python", "/opt/venv/bin/jupyter-lab", "list"], False),
        (["python", "/opt/venv/bin/jupyter-lab", "build", "--minimize=False"], False),
        (["python", "/opt/venv/bin/jupyter-server", "--help-all"], False),
        (["python", "/opt/venv/bin/jupyter-lab", "--ip=", "--version"], False),
        (["python", "/opt/venv/bin/jupyter-lab", "--show-config-json"], False),
        (["python", "/opt/venv/bin/jupyter-lab", "--generate-config", "-y"], False),
        (["vim", "/opt/venv/bin/jupyter-lab"], False),  # a file being edited, not a server
        (["python", "/opt/venv/bin/jupyter-nbconvert", "--to", "html"], False),
        (["/usr/bin/python3.13", "-m", "jupyterlab", "--no-browser"], True),
        (["python3", "-m", "jupyter_server", "list"], False),
        (["python3", "-c", "print('/opt/venv/bin/jupyter-lab')"], False),
    ],
)
def test_only_a_command_that_serves_is_judged(check: ModuleType, argv: list[str], serving: bool) -> None:
    assert check._serving(argv) is serving


def test_addresses_as_proc_net_writes_them(check: ModuleType) -> None:
    import socket

    v4 = (0x7F000001).to_bytes(4, "big")
    hexed = f"{int.from_bytes(v4, sys.byteorder):08X}"
    assert check._address(hexed, socket.AF_INET) == "127.0.0.1"
    assert check._loopback(check._address("0" * 32, socket.AF_INET6)) == "::1"
    v6 = socket.inet_pton(socket.AF_INET6, "fd00::1")
    hexed6 = "".join(f"{int.from_bytes(v6[i : i + 4], sys.byteorder):08X}" for i in range(0, 16, 4))
    assert check._address(hexed6, socket.AF_INET6) == "fd00::1"
    assert check._under_the_command("1")
