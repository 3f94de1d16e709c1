"""Start Jupyter Lab on port 8888, never without a token.

A token given in JUPYTER_TOKEN is used; when none is given, one is generated and the URL with
it is printed. An empty JUPYTER_TOKEN (which would turn authentication off) is refused: put
an authenticating proxy in front and pass a token anyway.
"""

import os
import secrets
import sys


def main() -> int:
    token = os.environ.get("JUPYTER_TOKEN")
    if token is not None and not token.strip():
        print(
            "refusing to start Jupyter without authentication: JUPYTER_TOKEN is empty.\n"
            "fix: unset JUPYTER_TOKEN to get a generated token, or set one.",
            file=sys.stderr,
        )
        return 2
    if token is None:
        token = secrets.token_urlsafe(32)
        print(f"Jupyter token (generated): {token}", flush=True)
        port = os.environ.get("TORCHIMG_HOST_PORT", "8888")  # where the host publishes 8888
        print(f"  open http://127.0.0.1:{port}/lab?token={token}", flush=True)
    os.environ["JUPYTER_TOKEN"] = token
    args = [
        "jupyter",
        "lab",
        "--ip=",  # every address, IPv4 and IPv6 (as docker-stacks)
        "--port=8888",
        "--no-browser",
        "--ServerApp.root_dir=/workspace",
        *sys.argv[1:],
    ]
    os.execvp(args[0], args)


if __name__ == "__main__":
    sys.exit(main())
