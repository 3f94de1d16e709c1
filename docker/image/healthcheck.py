"""Container health: torch is installed, when GPUs were requested their devices exist, and the
Jupyter server the container's command started (the dev image's command) answers.

Runs every minute for the container's whole life, so it reads /proc and asks Jupyter's
`/api` (which needs no token and does not count as activity) only: importing torch or
Jupyter would cost seconds of CPU and hundreds of MB each time.

The server is asked on an address its own process listens on (read from /proc, so no name
lookup, and never another container's record in a shared home). Any HTTP answer below 500
means its event loop runs (a 403 from its Host check, a 404 from a base_url it was not told
about); a stopped or hung server accepts the connection in the kernel and then says nothing.
"""

import http.client
import importlib.util
import json
import os
import pwd
import signal
import socket
import ssl
import sys
import time
import urllib.parse
from pathlib import Path
from types import FrameType
from typing import NamedTuple

# What `jupyter lab`, `jupyter server`, `jupyter notebook` exec (a script Python runs), and
# JupyterHub's single-user server (DockerSpawner's command); their modules, for `python -m`
_JUPYTER_SERVERS = {"jupyter-lab", "jupyter-server", "jupyter-notebook", "jupyterhub-singleuser"}
_JUPYTER_MODULES = {"jupyterlab", "jupyter_server", "notebook", "jupyterhub.singleuser"}
# Python's options that take the next argument
_PYTHON_VALUED = {"-W", "-X", "--check-hash-based-pycs"}
# Their subcommands that serve nothing (a server takes options, or a file to open)
_NOT_SERVING = {"build", "clean", "extension", "labextension", "licenses", "list", "password"}
_NOT_SERVING |= {"path", "paths", "stop", "workspace", "workspaces"}
# Their options that print and exit (or wait on a pager) instead of serving
_PRINTING = ("-h", "--help", "--version", "--generate-config", "--show-config")
# Where a server's port may be given, when it wrote no record
_PORT_OPTIONS = {"--port", "--ServerApp.port", "--NotebookApp.port"}
# A server that listens nowhere yet is starting (unhealthy: `docker compose up --wait`
# waits) for this long, then it is stuck
_STARTING_S = 120
# One request's wait (a server is asked at most twice: HTTP, then HTTPS), and the whole
# check's, from its first line (inside the HEALTHCHECK's --timeout=10s)
_ASK_S = 3.0
_LIMIT_S = 8


class _OutOfTimeError(Exception):
    """The check ran past _LIMIT_S (a slow /proc, a read the socket timeout misses)."""


class _Listener(NamedTuple):
    """Where a process listens: a TCP address and port, or a Unix socket's path."""

    host: str
    port: int
    unix: str = ""

    def url(self, path: str, tls: bool) -> str:
        if self.unix:
            return f"http://localhost{path} on {self.unix}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if tls else 'http'}://{host}:{self.port}{path}"


def main() -> int:
    signal.signal(signal.SIGALRM, _out_of_time)
    signal.alarm(_LIMIT_S)
    asking = "the check"
    try:
        if importlib.util.find_spec("torch") is None:
            print("unhealthy: torch is not importable from /opt/venv", file=sys.stderr)
            return 1
        requested = os.environ.get("NVIDIA_VISIBLE_DEVICES", "")
        gpus_requested = requested not in ("", "void", "none")
        if gpus_requested and Path("/proc/driver/nvidia").exists() and not Path("/dev/nvidiactl").exists():
            print("unhealthy: NVIDIA driver present but /dev/nvidiactl missing", file=sys.stderr)
            return 1
        server = _container_server()
        if server is None:
            return 0
        asking = f"the Jupyter server (pid {server[0]})"
        problem = _jupyter_problem(*server)
        if problem:
            print(f"unhealthy: {asking} {problem}", file=sys.stderr)
            return 1
        return 0
    except _OutOfTimeError:
        print(f"unhealthy: {asking} gave no answer in {_LIMIT_S} s", file=sys.stderr)
        return 1
    finally:
        signal.alarm(0)


def _out_of_time(signum: int, frame: FrameType | None) -> None:
    raise _OutOfTimeError


def _stat(pid: str) -> list[str]:
    """/proc/PID/stat's fields after the command's name (which may hold spaces): [0] is field 3."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _container_server() -> tuple[str, list[str]] | None:
    """The container's Jupyter server, with its command line: the first started of those that
    descend from the container's first process (its PID 1, or the first of its mount namespace
    where the PID namespace is shared). A server a user starts later (a terminal in JupyterLab,
    `docker exec`) is theirs: stopping it must not fail the container."""
    try:
        ours = Path("/proc/self/ns/mnt").readlink()
    except OSError:
        return None
    processes: dict[str, tuple[str, int, list[str]]] = {}  # PID: parent, start, command line
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "ns" / "mnt").readlink() != ours:  # another container's, or the host's
                continue
            stat = _stat(proc.name)
            argv = [os.fsdecode(arg) for arg in (proc / "cmdline").read_bytes().split(b"\0")]
        except (OSError, ValueError, IndexError):  # ended meanwhile, or another user's
            continue
        if stat[0] not in ("Z", "X") and argv != [""]:  # neither ended nor a kernel thread
            processes[proc.name] = (stat[1], int(stat[19]), argv)
    server = _first_server(processes)
    return None if server is None else (server, processes[server][2])


def _first_server(processes: dict[str, tuple[str, int, list[str]]]) -> str | None:
    """Of those processes (PID: parent, start, command line), the first-started Jupyter server
    among the first-started process and its descendants."""
    if not processes:
        return None
    first = min(processes, key=lambda pid: (processes[pid][1], int(pid)))
    servers = [pid for pid, (_, _, argv) in processes.items() if _serving(argv)]
    ours_only = [pid for pid in servers if _descends(pid, first, processes)]
    return min(ours_only, key=lambda pid: (processes[pid][1], int(pid)), default=None)


def _descends(pid: str, first: str, processes: dict[str, tuple[str, int, list[str]]]) -> bool:
    """Whether the process is the first one or one of its descendants (a `docker exec`
    process's parent is 0, or a process outside the container)."""
    for _ in range(64):
        if pid == first:
            return True
        if pid not in processes:
            return False
        pid = processes[pid][0]
    return False


def _serving(argv: list[str]) -> bool:
    """Whether that command line runs a Jupyter server: its launcher run by Python (a script's
    `#!` line, after any interpreter options) or directly, or its module by `python -m`; not
    a subcommand, not --help."""
    names = [Path(arg).name for arg in argv]
    if names[0] in _JUPYTER_SERVERS:
        rest = argv[1:]
    elif not names[0].startswith("python"):
        return False
    else:
        at = 1
        while at < len(argv) and argv[at].startswith("-") and argv[at] not in ("-m", "-c", "-"):
            at += 2 if argv[at] in _PYTHON_VALUED else 1
        if at >= len(argv):
            return False
        if argv[at] == "-m" and argv[at + 1 : at + 2] and argv[at + 1] in _JUPYTER_MODULES:
            rest = argv[at + 2 :]
        elif names[at] in _JUPYTER_SERVERS:
            rest = argv[at + 1 :]
        else:
            return False
    rest = [arg for arg in rest if arg]
    if rest and rest[0] in _NOT_SERVING:
        return False
    return not any(arg.split("=", 1)[0].startswith(_PRINTING) for arg in rest)


def _port_option(argv: list[str]) -> int | None:
    """The port the command line gives (`--port=N`, `--port N`, `--ServerApp.port=N`)."""
    for at, arg in enumerate(argv):
        name, equals, value = arg.partition("=")
        if name in _PORT_OPTIONS:
            value = value if equals else (argv[at + 1] if at + 1 < len(argv) else "")
            return int(value) if value.isdigit() else None
    return None


def _age_s(pid: str) -> float:
    """Seconds since the process started (field 22, clock ticks since boot) by the boot clock
    itself: a container's /proc/uptime may be another's (LXCFS)."""
    started = int(_stat(pid)[19]) / os.sysconf("SC_CLK_TCK")
    return time.clock_gettime(time.CLOCK_BOOTTIME) - started


def _listening(pid: str) -> list[_Listener]:
    """Where the process listens (in its own network namespace): each TCP port once (IPv4
    first: `--ip=` listens on both), then its Unix sockets."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().name
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found: dict[int, _Listener] = {}
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        try:
            rows = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except FileNotFoundError:
            if table == "tcp6":  # a kernel without IPv6
                continue
            raise
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                address, port = fields[1].split(":")
                listener = _Listener(_loopback(_address(address, family)), int(port, 16))
                found.setdefault(listener.port, listener)
    unix = []
    for row in Path(f"/proc/{pid}/net/unix").read_text().splitlines()[1:]:
        fields = row.split(maxsplit=7)
        if fields[3] == "00010000" and fields[6] in inodes and len(fields) == 8:  # listening, named
            unix.append(_Listener("", 0, fields[7]))
    return [*found.values(), *unix]


def _address(hexed: str, family: int) -> str:
    """An address as /proc/net/tcp writes it: each 32-bit word of it as a native integer."""
    words = (int(hexed[i : i + 8], 16) for i in range(0, len(hexed), 8))
    return socket.inet_ntop(family, b"".join(word.to_bytes(4, sys.byteorder) for word in words))


def _loopback(address: str) -> str:
    """Where to reach a server that listens on every address."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(address, address)


def _runtime_dir(pid: str) -> Path:
    """Where that server writes jpserver-PID.json: jupyter_core's runtime folder, from that
    process's own environment (the entrypoint may have given it another HOME) and folder."""
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    env = dict(os.fsdecode(item).split("=", 1) for item in raw if b"=" in item)
    if env.get("JUPYTER_RUNTIME_DIR"):
        found = Path(env["JUPYTER_RUNTIME_DIR"])
    elif env.get("JUPYTER_DATA_DIR"):
        found = Path(env["JUPYTER_DATA_DIR"]) / "runtime"
    else:
        home = env.get("HOME") or pwd.getpwuid(Path(f"/proc/{pid}").stat().st_uid).pw_dir
        found = Path(env.get("XDG_DATA_HOME") or Path(home) / ".local" / "share") / "jupyter" / "runtime"
    return found if found.is_absolute() else Path(f"/proc/{pid}/cwd").readlink() / found


def _record(pid: str) -> dict[str, object]:
    """The server's own record (jpserver-PID.json; nbserver-PID.json from Notebook 6), or
    nothing when there is none to read."""
    try:
        runtime = _runtime_dir(pid)
        for name in (f"jpserver-{pid}.json", f"nbserver-{pid}.json"):
            if (runtime / name).exists():
                info = json.loads((runtime / name).read_text())
                return info if isinstance(info, dict) else {}
    except (OSError, ValueError, KeyError):
        pass
    return {}


def _jupyter_problem(pid: str, argv: list[str]) -> str | None:
    """Why that server does not answer (None: it does)."""
    try:
        listeners = _listening(pid)
        age = _age_s(pid)
    except FileNotFoundError:  # ended meanwhile
        return None
    except (OSError, ValueError, IndexError) as exc:
        return f"cannot be looked into ({type(exc).__name__}: {exc})"
    if not listeners:
        if age < _STARTING_S:
            return f"listens nowhere yet: starting ({age:.0f} s)"
        return f"listens nowhere after {age:.0f} s"
    info = _record(pid)
    # the record only where it names a place this process listens on (a shared home may hold
    # another container's record under the same PID); else the port its command line names
    named = [
        listener
        for listener in listeners
        if (listener.unix and listener.unix == info.get("sock"))
        or (not listener.unix and listener.port == info.get("port"))
    ]
    if named:
        base, secure = str(info.get("base_url") or "/"), bool(info.get("secure"))
    else:
        base, secure = "/", False
        port = _port_option(argv)
        named = [listener for listener in listeners if listener.port == port and not listener.unix]
    path = urllib.parse.quote(base.rstrip("/") + "/api", safe="/%")
    if named:
        return _ask(named[0], path, secure)
    # nothing names its place: it answers where any of them answers (an extension may listen
    # beside it, a scheduler's dashboard)
    first = None
    for listener in listeners:
        problem = _ask(listener, path, secure)
        if problem is None:
            return None
        first = first or problem
    return first


def _ask(listener: _Listener, path: str, secure: bool) -> str | None:
    """Ask the server; a reset or a non-HTTP answer on one scheme tries the other (ssl_options
    make a TLS server whose record says secure: false). A TLS alert or a finished handshake
    is an answer too (a server that wants a client certificate); a connection closed in
    silence is not."""
    answered = ""
    for tls in (secure, not secure) if not listener.unix else (False,):
        url = listener.url(path, tls)
        try:
            status = _status(listener, path, tls)
        except (TimeoutError, ConnectionRefusedError) as exc:
            return f"does not answer {url} ({exc or type(exc).__name__})"
        except ssl.SSLError as exc:
            if tls and "ALERT" in str(exc.reason or ""):
                return None
            answered = f"{url}: {exc}"
        except (OSError, http.client.HTTPException, ValueError) as exc:
            answered = f"{url}: {exc or type(exc).__name__}"
        else:
            return None if status is None or status < 500 else f"answers {url} with HTTP {status}"
    return f"does not answer in HTTP{'' if listener.unix else ' nor HTTPS'} ({answered})"


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket (`jupyter lab --sock`)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def _status(listener: _Listener, path: str, tls: bool) -> int | None:
    """One GET's HTTP status, straight to the server (never through a proxy the container's
    environment names; its certificate, when it has one, is usually self-signed); None where a
    TLS server finished its handshake, then closed the connection."""
    connection: http.client.HTTPConnection
    if listener.unix:
        connection = _UnixConnection(listener.unix, _ASK_S)
    elif tls:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        connection = http.client.HTTPSConnection(
            listener.host, listener.port, timeout=_ASK_S, context=context
        )
    else:
        connection = http.client.HTTPConnection(listener.host, listener.port, timeout=_ASK_S)
    try:
        connection.connect()  # TLS: the handshake, which the server's event loop does
        try:
            connection.request("GET", path)
            return connection.getresponse().status
        except TimeoutError:
            raise
        except (OSError, http.client.HTTPException):
            if tls:  # closed after its handshake: TLS 1.3 asks for a client certificate then
                return None
            raise
    finally:
        connection.close()


if __name__ == "__main__":
    sys.exit(main())
