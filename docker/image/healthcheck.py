"""Container health: torch is installed and, when GPUs were requested, their devices exist.

Runs every minute for the container's whole life, so it only looks at files: importing torch
would cost seconds of CPU and hundreds of MB each time.
"""

import importlib.util
import os
import sys
from pathlib import Path


def main() -> int:
    if importlib.util.find_spec("torch") is None:
        print("unhealthy: torch is not importable from /opt/venv", file=sys.stderr)
        return 1
    requested = os.environ.get("NVIDIA_VISIBLE_DEVICES", "")
    gpus_requested = requested not in ("", "void", "none")
    if gpus_requested and Path("/proc/driver/nvidia").exists() and not Path("/dev/nvidiactl").exists():
        print("unhealthy: NVIDIA driver present but /dev/nvidiactl missing", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
