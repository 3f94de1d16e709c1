"""Container health: torch is installed, when GPUs were requested their devices exist, and a
Jupyter server running in the container (the dev image's command) answers.

Runs every minute for the container's whole life, so it reads files and asks Jupyter's
`/api` (which needs no token) only: importing torch or Jupyter would cost seconds of CPU and
hundreds of MB each time.
"""

import importlib.util
import json
import os
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path

# What `jupyter lab`, `jupyter server` and `jupyter notebook` exec (their processes' name)
_JUPYTER_SERVERS = {"jupyter-lab", "jupyter-server", "jupyter-notebook"}


def main() -> int:
    if importlib.util.find_spec("torch") is None:
        print("unhealthy: torch is not importable from /opt/venv", file=sys.stderr)
        return 1
    requested = os.environ.get("NVIDIA_VISIBLE_DEVICES", "")
    gpus_requested = requested not in ("", "void", "none")
    if gpus_requested and Path("/proc/driver/nvidia").exists() and not Path("/dev/nvidiactl").exists():
        print("unhealthy: NVIDIA driver present but /dev/nvidiactl missing", file=sys.stderr)
        return 1
    for pid in _jupyter_servers():
        problem = _jupyter_problem(pid)
        if problem:
            print(f"unhealthy: the Jupyter server (pid {pid}) {problem}", file=sys.stderr)
            return 1
    return 0


def _jupyter_servers() -> list[str]:
    """The PIDs of the Jupyter servers this container runs (those this user may look into)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")[:2]
        except OSError:  # ended meanwhile
            continue
        if any(Path(arg.decode(errors="replace")).name in _JUPYTER_SERVERS for arg in argv):
            found.append(proc.name)
    return found


def _runtime_dir(pid: str) -> Path | None:
    """Where that server writes jpserver-PID.json: jupyter_core's runtime folder, from that
    process's own environment (the entrypoint may have given it another HOME)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    env = dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)
    if env.get("JUPYTER_RUNTIME_DIR"):
        return Path(env["JUPYTER_RUNTIME_DIR"])
    if env.get("JUPYTER_DATA_DIR"):
        return Path(env["JUPYTER_DATA_DIR"]) / "runtime"
    data = env.get("XDG_DATA_HOME") or (env.get("HOME", "/") + "/.local/share")
    return Path(data) / "jupyter" / "runtime"


def _jupyter_problem(pid: str) -> str | None:
    """Why that server does not answer (None: it does, or it cannot be asked: another user's
    process, or one listening on a Unix socket)."""
    runtime = _runtime_dir(pid)
    if runtime is None:
        return None
    try:
        info = json.loads((runtime / f"jpserver-{pid}.json").read_text())
        url = str(info["url"])
    except FileNotFoundError:
        return f"has not written {runtime}/jpserver-{pid}.json yet: starting"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"wrote no readable jpserver-{pid}.json ({exc})"
    if not url.startswith(("http://", "https://")):
        return None
    # the server's own address, never through a proxy the container's environment names; its
    # certificate, when it has one, is usually self-signed
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    api = url.rstrip("/") + "/api"
    try:
        with opener.open(api, timeout=5) as answer:
            if answer.status == 200:
                return None
            return f"answers {api} with HTTP {answer.status}"
    except (OSError, urllib.error.URLError) as exc:
        return f"does not answer {api} ({exc})"


if __name__ == "__main__":
    sys.exit(main())
