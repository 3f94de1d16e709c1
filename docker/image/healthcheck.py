"""Container health: torch is installed, when GPUs were requested their devices exist, and a
Jupyter server the container's command started (the dev image's command) answers.

Runs every minute for the container's whole life, so it reads /proc and asks Jupyter's
`/api` (which needs no token and does not count as activity) only: importing torch or
Jupyter would cost seconds of CPU and hundreds of MB each time.

A server is asked on the address its own process listens on (read from /proc, so no name
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
from pathlib import Path
from types import FrameType

# What `jupyter lab`, `jupyter server` and `jupyter notebook` exec (their processes' argv[1])
_JUPYTER_SERVERS = {"jupyter-lab", "jupyter-server", "jupyter-notebook"}
_JUPYTER_MODULES = {"jupyterlab", "jupyter_server", "notebook"}
# Their subcommands that serve nothing (a server takes options, or a file to open)
_NOT_SERVING = {"build", "clean", "extension", "labextension", "licenses", "list", "password"}
_NOT_SERVING |= {"path", "paths", "stop", "workspace", "workspaces"}
# Their options that print and exit (or wait on a pager) instead of serving
_PRINTING = ("-h", "--help", "--version", "--generate-config", "--show-config")
# A server that listens on no port yet is starting (unhealthy: `docker compose up --wait`
# waits) for this long, then it is stuck
_STARTING_S = 120
# One request's wait, and the whole check's (inside the HEALTHCHECK's --timeout=10s)
_ASK_S = 4.0
_LIMIT_S = 9


class _OutOfTimeError(Exception):
    """The whole check ran past _LIMIT_S (a name lookup or a read the socket timeout misses)."""


def main() -> int:
    if importlib.util.find_spec("torch") is None:
        print("unhealthy: torch is not importable from /opt/venv", file=sys.stderr)
        return 1
    requested = os.environ.get("NVIDIA_VISIBLE_DEVICES", "")
    gpus_requested = requested not in ("", "void", "none")
    if gpus_requested and Path("/proc/driver/nvidia").exists() and not Path("/dev/nvidiactl").exists():
        print("unhealthy: NVIDIA driver present but /dev/nvidiactl missing", file=sys.stderr)
        return 1
    signal.signal(signal.SIGALRM, _out_of_time)
    signal.alarm(_LIMIT_S)
    pid = ""
    try:
        for pid in _jupyter_servers():
            problem = _jupyter_problem(pid)
            if problem:
                print(f"unhealthy: the Jupyter server (pid {pid}) {problem}", file=sys.stderr)
                return 1
    except _OutOfTimeError:
        print(f"unhealthy: the Jupyter server (pid {pid}) gave no answer in {_LIMIT_S} s", file=sys.stderr)
        return 1
    return 0


def _out_of_time(signum: int, frame: FrameType | None) -> None:
    raise _OutOfTimeError


def _jupyter_servers() -> list[str]:
    """The PIDs of the Jupyter servers the container's command runs (in its mount namespace:
    with --pid=host, /proc lists the host's too) that this user may look into. A server a
    user started by `docker exec` is theirs to watch: stopping it must not fail the container."""
    try:
        ours = Path("/proc/self/ns/mnt").readlink()
    except OSError:
        return []
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "ns" / "mnt").readlink() != ours:
                continue
            argv = [os.fsdecode(arg) for arg in (proc / "cmdline").read_bytes().split(b"\0")]
            serving = _serving(argv) and _under_the_command(proc.name)
        except (OSError, ValueError, IndexError):  # ended meanwhile, or another user's
            continue
        if serving:
            found.append(proc.name)
    return found


def _serving(argv: list[str]) -> bool:
    """Whether that command line runs a Jupyter server: its launcher run by Python (a script's
    `#!` line) or directly, or its module by `python -m`; not a subcommand, not --help."""
    names = [Path(arg).name for arg in argv]
    if names[0] in _JUPYTER_SERVERS:
        rest = argv[1:]
    elif not names[0].startswith("python"):
        return False
    elif len(names) > 1 and names[1] in _JUPYTER_SERVERS:
        rest = argv[2:]
    elif argv[1:2] == ["-m"] and argv[2:3] and argv[2] in _JUPYTER_MODULES:
        rest = argv[3:]
    else:
        return False
    rest = [arg for arg in rest if arg]
    if rest and rest[0] in _NOT_SERVING:
        return False
    return not any(arg.split("=", 1)[0].startswith(_PRINTING) for arg in rest)


def _stat(pid: str) -> list[str]:
    """/proc/PID/stat's fields after the command's name (which may hold spaces): [0] is field 3."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _under_the_command(pid: str) -> bool:
    """Whether the process descends from the container's PID 1 (a `docker exec` process's
    parent is 0, outside the container's process tree)."""
    for _ in range(64):
        if pid == "1":
            return True
        pid = _stat(pid)[1]
        if pid == "0":
            return False
    return False


def _age_s(pid: str) -> float:
    """Seconds since the process started (field 22, clock ticks since boot) by the boot clock
    itself: a container's /proc/uptime may be another's (LXCFS)."""
    started = int(_stat(pid)[19]) / os.sysconf("SC_CLK_TCK")
    return time.clock_gettime(time.CLOCK_BOOTTIME) - started


def _listening(pid: str) -> tuple[list[tuple[str, int]], bool]:
    """The TCP addresses the process listens on (in its own network namespace), and whether
    it listens on a Unix socket."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().name
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        try:
            rows = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except FileNotFoundError:  # a kernel without IPv6
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                address, port = fields[1].split(":")
                found.append((_loopback(_address(address, family)), int(port, 16)))
    unix = Path(f"/proc/{pid}/net/unix").read_text().splitlines()[1:]
    on_unix = any(row.split()[3] == "00010000" and row.split()[6] in inodes for row in unix)
    return found, on_unix


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
    nothing when there is none to read: it only adds the base_url and the scheme."""
    try:
        runtime = _runtime_dir(pid)
        for name in (f"jpserver-{pid}.json", f"nbserver-{pid}.json"):
            if (runtime / name).exists():
                info = json.loads((runtime / name).read_text())
                return info if isinstance(info, dict) else {}
    except (OSError, ValueError, KeyError):
        pass
    return {}


def _jupyter_problem(pid: str) -> str | None:
    """Why that server does not answer (None: it does, or it cannot be asked over TCP)."""
    try:
        addresses, on_unix = _listening(pid)
        age = _age_s(pid)
    except (OSError, ValueError, IndexError) as exc:
        if not Path(f"/proc/{pid}").exists():  # ended meanwhile
            return None
        return f"cannot be looked into ({type(exc).__name__}: {exc})"
    if not addresses:
        if on_unix:
            return None
        if age < _STARTING_S:
            return f"listens on no port yet: starting ({age:.0f} s)"
        return f"listens on no port after {age:.0f} s"
    info = _record(pid)
    # the record's port when the process listens on it (a shared home may hold another
    # container's record under the same PID), else the first port it listens on
    host, port = next((a for a in addresses if a[1] == info.get("port")), addresses[0])
    base = str(info.get("base_url") or "/") if port == info.get("port") else "/"
    secure = bool(info.get("secure")) if port == info.get("port") else False
    return _ask(host, port, base.rstrip("/") + "/api", secure)


def _ask(host: str, port: int, path: str, secure: bool) -> str | None:
    """Ask the server; a reset or a non-HTTP answer on one scheme tries the other (ssl_options
    make a TLS server whose record says secure: false). A TLS alert is an answer too."""
    answered = ""
    for tls in (secure, not secure):
        shown = f"{'https' if tls else 'http'}://{f'[{host}]' if ':' in host else host}:{port}{path}"
        try:
            status = _status(host, port, path, tls)
        except (TimeoutError, ConnectionRefusedError) as exc:
            return f"does not answer {shown} ({exc or type(exc).__name__})"
        except ssl.SSLError as exc:
            if tls:  # the server did its part of a handshake: a client certificate it wants
                return None
            answered = f"{shown}: {exc}"
            continue
        except (OSError, http.client.HTTPException) as exc:
            answered = f"{shown}: {exc or type(exc).__name__}"
            continue
        return None if status < 500 else f"answers {shown} with HTTP {status}"
    return f"answers neither HTTP nor HTTPS ({answered})"


def _status(host: str, port: int, path: str, tls: bool) -> int:
    """One GET's HTTP status, straight to the server (never through a proxy the container's
    environment names; its certificate, when it has one, is usually self-signed)."""
    connection: http.client.HTTPConnection
    if tls:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        connection = http.client.HTTPSConnection(host, port, timeout=_ASK_S, context=context)
    else:
        connection = http.client.HTTPConnection(host, port, timeout=_ASK_S)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    finally:
        connection.close()


if __name__ == "__main__":
    sys.exit(main())
