"""docker/image/healthcheck.py, the image's HEALTHCHECK: which process it judges and how it
asks it, against real processes on this machine (stand-ins named like Jupyter's launchers:
what the check reads is /proc and the sockets, not Jupyter)."""

import importlib.util
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

_SCRIPT = Path(__file__).parents[2] / "docker" / "image" / "healthcheck.py"

# An HTTP server (on TCP, or on a Unix socket), and beside it, given a file to write its port
# to, a port that accepts connections and never answers (a hung server, seen from outside)
_SERVER = """
import http.server, socket, socketserver, sys
class Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(500 if self.path.startswith("/broken/") else 200)
        self.end_headers()
    def log_message(self, *args):
        pass
if sys.argv[2:]:
    mute = socket.socket()
    mute.bind(("127.0.0.1", 0))
    mute.listen()
    open(sys.argv[2], "w").write(str(mute.getsockname()[1]))
if sys.argv[1].startswith("/"):
    class Unix(socketserver.UnixStreamServer):
        def get_request(self):
            request, _ = super().get_request()
            return request, ("local", 0)
    Unix(sys.argv[1], Answer).serve_forever()
http.server.HTTPServer((sys.argv[1], 0), Answer).serve_forever()
"""

# A port that accepts and closes at once, saying nothing in HTTP or TLS
_CLOSER = """
import socket
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen()
while True:
    listener.accept()[0].close()
"""


@pytest.fixture(scope="module")
def check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("healthcheck", _SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    setattr(module, "_ASK_S", 1.0)  # noqa: B010 (a module loaded from a file: no attributes to mypy)
    return module


def _start(
    tmp_path: Path, check: ModuleType, *args: str, code: str = _SERVER, listeners: int = 1
) -> subprocess.Popen[bytes]:
    launcher = tmp_path / "jupyter-server"
    launcher.write_text(code)
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    server = subprocess.Popen([sys.executable, str(launcher), *args], env={"HOME": str(home)})
    for _ in range(100):
        if len(check._listening(str(server.pid))) >= listeners:
            return server
        time.sleep(0.1)
    server.kill()
    pytest.fail("the stand-in server did not listen within 10 s")


@pytest.fixture
def started(tmp_path: Path, check: ModuleType) -> Iterator[list[subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        process.send_signal(signal.SIGCONT)
        process.kill()
        process.wait()


def _record(tmp_path: Path, pid: int, content: object) -> None:
    runtime = tmp_path / "home" / ".local" / "share" / "jupyter" / "runtime"
    runtime.mkdir(parents=True, exist_ok=True)
    (runtime / f"jpserver-{pid}.json").write_text(json.dumps(content))


def test_a_server_that_answers_is_healthy_and_a_stopped_one_is_not(
    tmp_path: Path, check: ModuleType, started: list[subprocess.Popen[bytes]]
) -> None:
    server = _start(tmp_path, check, "127.0.0.1")
    started.append(server)
    assert check._jupyter_problem(str(server.pid), []) is None
    server.send_signal(signal.SIGSTOP)  # the kernel still accepts; nothing answers
    port = check._listening(str(server.pid))[0].port
    assert check._jupyter_problem(str(server.pid), []) == (
        f"does not answer http://127.0.0.1:{port}/api (timed out)"
    )


def test_the_record_adds_the_base_url_only_for_a_port_the_process_listens_on(
    tmp_path: Path, check: ModuleType, started: list[subprocess.Popen[bytes]]
) -> None:
    server = _start(tmp_path, check, "127.0.0.1")
    started.append(server)
    port = check._listening(str(server.pid))[0].port
    _record(tmp_path, server.pid, {"port": port, "base_url": "/broken/"})
    assert check._jupyter_problem(str(server.pid), []) == (
        f"answers http://127.0.0.1:{port}/broken/api with HTTP 500"
    )
    # another container's record under the same PID (a shared home): not this server's
    _record(tmp_path, server.pid, {"port": port + 1, "base_url": "/broken/"})
    assert check._jupyter_problem(str(server.pid), []) is None
    # a record that is not an object is no record; a base_url is sent quoted
    _record(tmp_path, server.pid, [])
    assert check._jupyter_problem(str(server.pid), []) is None
    _record(tmp_path, server.pid, {"port": port, "base_url": "/my lab/josé/"})
    assert check._jupyter_problem(str(server.pid), []) is None


def test_without_a_record_any_port_of_the_server_that_answers_will_do(
    tmp_path: Path, check: ModuleType, started: list[subprocess.Popen[bytes]]
) -> None:
    """An extension may listen in the server's process (a scheduler's dashboard); its command
    line's --port, when it names one, is the server's."""
    server = _start(tmp_path, check, "127.0.0.1", str(tmp_path / "mute"), listeners=2)
    started.append(server)
    assert check._jupyter_problem(str(server.pid), []) is None
    mute = int((tmp_path / "mute").read_text())
    (answering,) = {listener.port for listener in check._listening(str(server.pid))} - {mute}
    assert check._jupyter_problem(str(server.pid), ["--port", str(answering)]) is None
    assert check._jupyter_problem(str(server.pid), [f"--ServerApp.port={mute}"]) == (
        f"does not answer http://127.0.0.1:{mute}/api (timed out)"
    )


def test_a_port_that_closes_without_a_word_is_no_answer(
    tmp_path: Path, check: ModuleType, started: list[subprocess.Popen[bytes]]
) -> None:
    closer = _start(tmp_path, check, code=_CLOSER)
    started.append(closer)
    problem = str(check._jupyter_problem(str(closer.pid), []))
    assert problem.startswith("does not answer in HTTP nor HTTPS ("), problem


def test_every_address_is_asked_on_loopback_and_a_unix_socket_over_it(
    tmp_path: Path, check: ModuleType, started: list[subprocess.Popen[bytes]]
) -> None:
    server = _start(tmp_path, check, "0.0.0.0")
    started.append(server)
    assert check._listening(str(server.pid))[0].host == "127.0.0.1"
    assert check._jupyter_problem(str(server.pid), []) is None
    path = str(tmp_path / "jupyter.sock")
    on_unix = _start(tmp_path, check, path)
    started.append(on_unix)
    assert check._listening(str(on_unix.pid)) == [check._Listener("", 0, path)]
    assert check._jupyter_problem(str(on_unix.pid), []) is None
    on_unix.send_signal(signal.SIGSTOP)
    assert check._jupyter_problem(str(on_unix.pid), []) == (
        f"does not answer http://localhost/api on {path} (timed out)"
    )


def test_a_server_without_a_port_is_starting_then_stuck(
    check: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, started: list[subprocess.Popen[bytes]]
) -> None:
    launcher = tmp_path / "jupyter-lab"
    launcher.write_text("import time\ntime.sleep(60)\n")
    process = subprocess.Popen([sys.executable, str(launcher)], env={"HOME": str(tmp_path)})
    started.append(process)
    time.sleep(0.5)
    assert str(check._jupyter_problem(str(process.pid), [])).startswith("listens nowhere yet: starting (")
    monkeypatch.setattr(check, "_STARTING_S", 0)
    assert str(check._jupyter_problem(str(process.pid), [])).startswith("listens nowhere after ")


_LAB = ["/opt/venv/bin/python3", "/opt/venv/bin/jupyter-lab", "--ip="]


@pytest.mark.parametrize(
    ("processes", "judged"),
    [
        # tini, the entrypoint exec'd into Jupyter, a user's `docker exec` server (parent 0)
        ({"1": ("0", 100, ["tini"]), "7": ("1", 101, _LAB), "30": ("0", 500, _LAB)}, "7"),
        # a user's later server run in the background, reparented to tini
        ({"1": ("0", 100, ["tini"]), "7": ("1", 101, _LAB), "30": ("1", 500, _LAB)}, "7"),
        # a shared PID namespace: the container's first process is not PID 1
        ({"4242": ("0", 100, ["tini"]), "4250": ("4242", 101, _LAB), "4300": ("0", 500, _LAB)}, "4250"),
        # the container runs no Jupyter; a foreground `docker exec` one is the user's
        ({"1": ("0", 100, ["sleep", "inf"]), "30": ("0", 500, _LAB)}, None),
        ({}, None),
    ],
)
def test_the_first_started_server_under_the_containers_first_process_is_judged(
    check: ModuleType, processes: dict[str, tuple[str, int, list[str]]], judged: str | None
) -> None:
    assert check._first_server(processes) == judged


@pytest.mark.parametrize(
    ("argv", "serving"),
    [
        (["/opt/venv/bin/python3", "/opt/venv/bin/jupyter-lab", "--ip="], True),
        (["/opt/venv/bin/jupyter-lab"], True),
        (["python", "/opt/venv/bin/jupyter-notebook", "notebook.ipynb"], True),
        (["/usr/bin/python3.13", "-m", "jupyterlab", "--no-browser"], True),
        (["python", "-I", "-m", "jupyterlab"], True),
        (["python", "-u", "/opt/venv/bin/jupyter-lab"], True),
        (["python", "-X", "dev", "-W", "ignore", "-m", "notebook"], True),
        (["/opt/venv/bin/python", "/opt/venv/bin/jupyterhub-singleuser", "--port=8888"], True),
        (["python", "/opt/venv/bin/jupyter-server", "password"], False),
        (["python", "/opt/venv/bin/jupyter-lab", "list"], False),
        (["python3", "-m", "jupyter_server", "list"], False),
        (["python", "/opt/venv/bin/jupyter-lab", "build", "--minimize=False"], False),
        (["python", "/opt/venv/bin/jupyter-server", "--help-all"], False),
        (["python", "/opt/venv/bin/jupyter-lab", "--ip=", "--version"], False),
        (["python", "/opt/venv/bin/jupyter-lab", "--show-config-json"], False),
        (["python", "/opt/venv/bin/jupyter-lab", "--generate-config", "-y"], False),
        (["vim", "/opt/venv/bin/jupyter-lab"], False),  # a file being edited, not a server
        (["python", "/opt/venv/bin/jupyter-nbconvert", "--to", "html"], False),
        (["python3", "-c", "print('/opt/venv/bin/jupyter-lab')"], False),
        (["python3", "-I"], False),
        ([""], False),  # a kernel thread's empty command line
    ],
)
def test_only_a_command_that_serves_is_judged(check: ModuleType, argv: list[str], serving: bool) -> None:
    assert check._serving(argv) is serving


def test_addresses_as_proc_net_writes_them(check: ModuleType) -> None:
    v4 = (0x7F000001).to_bytes(4, "big")
    hexed = f"{int.from_bytes(v4, sys.byteorder):08X}"
    assert check._address(hexed, socket.AF_INET) == "127.0.0.1"
    assert check._loopback(check._address("0" * 32, socket.AF_INET6)) == "::1"
    v6 = socket.inet_pton(socket.AF_INET6, "fd00::1")
    hexed6 = "".join(f"{int.from_bytes(v6[i : i + 4], sys.byteorder):08X}" for i in range(0, 16, 4))
    assert check._address(hexed6, socket.AF_INET6) == "fd00::1"
    assert check._port_option(["--port", "x"]) is None
    assert check._port_option(["--NotebookApp.port=9000"]) == 9000
