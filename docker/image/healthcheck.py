"""Container health: torch is installed, when GPUs were requested their devices exist, and a
Jupyter server running in the container (the dev image's command) answers.

Runs every minute for the container's whole life, so it reads files and asks Jupyter's
`/api` (which needs no token and does not count as activity) only: importing torch or
Jupyter would cost seconds of CPU and hundreds of MB each time.
"""

import http.client
import importlib.util
import json
import os
import pwd
import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

# What `jupyter lab`, `jupyter server` and `jupyter notebook` exec (their processes' argv[1])
_JUPYTER_SERVERS = {"jupyter-lab", "jupyter-server", "jupyter-notebook"}
# Their subcommands that serve nothing (a server takes options, or a file to open)
_NOT_SERVING = {"build", "clean", "extension", "labextension", "licenses", "list", "password"}
_NOT_SERVING |= {"path", "paths", "stop", "workspace", "workspaces"}
# The container's own server may take this long to write its jpserver-PID.json: until then it
# is starting (unhealthy: `docker compose up --wait` waits for it); later, a missing file (a
# shared home whose other user removed it) leaves the server unjudged, never unhealthy.
_STARTING_S = 120
# Every request together stays inside the HEALTHCHECK's --timeout=10s.
_DEADLINE_S = 8.0


def main() -> int:
    if importlib.util.find_spec("torch") is None:
        print("unhealthy: torch is not importable from /opt/venv", file=sys.stderr)
        return 1
    requested = os.environ.get("NVIDIA_VISIBLE_DEVICES", "")
    gpus_requested = requested not in ("", "void", "none")
    if gpus_requested and Path("/proc/driver/nvidia").exists() and not Path("/dev/nvidiactl").exists():
        print("unhealthy: NVIDIA driver present but /dev/nvidiactl missing", file=sys.stderr)
        return 1
    deadline = time.monotonic() + _DEADLINE_S
    for pid in _jupyter_servers():
        problem = _jupyter_problem(pid, deadline)
        if problem:
            print(f"unhealthy: the Jupyter server (pid {pid}) {problem}", file=sys.stderr)
            return 1
    return 0


def _jupyter_servers() -> list[str]:
    """The PIDs of the Jupyter servers running in this container (its mount namespace: with
    --pid=host, /proc lists the host's processes too) that this user may look into."""
    try:
        ours = Path("/proc/self/ns/mnt").readlink()
    except OSError:
        return []
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if (proc / "ns" / "mnt").readlink() != ours:
                continue
        except OSError:  # ended meanwhile, or another user's
            continue
        names = [Path(arg.decode(errors="replace")).name for arg in argv[:2]]
        if _JUPYTER_SERVERS.isdisjoint(names):
            continue
        rest = argv[names.index(next(n for n in names if n in _JUPYTER_SERVERS)) + 1 :]
        if rest and rest[0].decode(errors="replace") in _NOT_SERVING:
            continue
        found.append(proc.name)
    return found


def _process_env(pid: str) -> dict[str, str]:
    """The environment the process started with (ValueError/OSError: not readable)."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def _runtime_dir(pid: str) -> Path:
    """Where that server writes jpserver-PID.json: jupyter_core's runtime folder, from that
    process's own environment (the entrypoint may have given it another HOME) and folder."""
    env = _process_env(pid)
    if env.get("JUPYTER_RUNTIME_DIR"):
        found = Path(env["JUPYTER_RUNTIME_DIR"])
    elif env.get("JUPYTER_DATA_DIR"):
        found = Path(env["JUPYTER_DATA_DIR"]) / "runtime"
    else:
        home = env.get("HOME") or pwd.getpwuid(Path(f"/proc/{pid}").stat().st_uid).pw_dir
        found = Path(env.get("XDG_DATA_HOME") or Path(home) / ".local" / "share") / "jupyter" / "runtime"
    return found if found.is_absolute() else Path(f"/proc/{pid}/cwd").readlink() / found


def _age_s(pid: str) -> float:
    """Seconds since the process started (/proc/PID/stat's 22nd field, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")


def _api_url(info: dict[str, object]) -> str | None:
    """The server's /api on this machine, from its own record (None: a Unix socket)."""
    if info.get("sock"):
        return None
    host = str(info.get("hostname") or "localhost")
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "localhost": "127.0.0.1", "::": "::1"}.get(host, host)
    host = f"[{host}]" if ":" in host else host
    base = str(info.get("base_url") or "/")
    scheme = "https" if info.get("secure") else "http"
    return f"{scheme}://{host}:{int(str(info['port']))}{base.rstrip('/')}/api"


def _jupyter_problem(pid: str, deadline: float) -> str | None:
    """Why that server does not answer (None: it does, or it cannot be judged: another user's
    process, one listening on a Unix socket, or one whose record is gone after its start)."""
    try:
        runtime = _runtime_dir(pid)
        record = runtime / f"jpserver-{pid}.json"
        if not record.exists():
            if _age_s(pid) < _STARTING_S:
                return f"has not written {record} yet: starting"
            return None
        info = json.loads(record.read_text())
        api = _api_url(info)
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        if not Path(f"/proc/{pid}").exists():  # ended meanwhile
            return None
        return f"cannot be asked: its record is not readable ({type(exc).__name__}: {exc})"
    if api is None:
        return None
    # the server's own address, never through a proxy the container's environment names; its
    # certificate, when it has one, is usually self-signed
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    try:
        with opener.open(api, timeout=max(0.5, deadline - time.monotonic())) as answer:
            return None if answer.status == 200 else f"answers {api} with HTTP {answer.status}"
    except urllib.error.HTTPError as exc:
        return f"answers {api} with HTTP {exc.code}"
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return f"does not answer {api} ({exc})"


if __name__ == "__main__":
    sys.exit(main())
