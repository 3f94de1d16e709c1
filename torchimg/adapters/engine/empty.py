"""An empty Docker Engine beside the main one: what a new CI runner starts with. The build
report measures cold builds, registry-cache rebuilds and pulls there, so that nothing the main
engine holds (layers, unpacked snapshots, BuildKit's cache) can make them look faster.

It has its own data root, exec root (so its own containerd), pid file and socket, and the same
image store as the main engine. Its containers join the main engine's default bridge on the
upper half of its subnet, and it leaves iptables alone: an engine started with `--bridge none`
deletes the host's docker0, and one that manages iptables rewrites the main engine's chains.
The main engine's rules already forward and masquerade that bridge's whole subnet.
"""

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from torchimg.adapters.engine._client import DockerClient, DockerException, docker, failed
from torchimg.adapters.engine.images import containerd_store
from torchimg.errors import PipelineError, ToolError
from torchimg.output import log

_START_SECONDS = 60
_STOP_SECONDS = 60


def _bridge() -> tuple[str, str]:
    """The main engine's default bridge: its interface and the upper half of its subnet."""
    try:
        network = docker.network.inspect("bridge")
    except DockerException as exc:
        raise failed("reading its default bridge network", exc) from None
    name = (network.options or {}).get("com.docker.network.bridge.name", "docker0")
    subnets = [c.get("Subnet") for c in (network.ipam.config or []) if ":" not in (c.get("Subnet") or ":")]
    if not subnets or not Path(f"/sys/class/net/{name}").exists():
        raise PipelineError(
            f"the main engine has no IPv4 default bridge ({name}) for an empty engine's containers",
            "start dockerd with its default bridge (no `--bridge none`), then run the report again",
        )
    upper = list(ipaddress.ip_network(str(subnets[0])).subnets(prefixlen_diff=1))[1]
    return name, str(upper)


def _answers(host: str) -> bool:
    try:
        DockerClient(host=host).system.info()
    except DockerException:
        return False
    return True


@contextlib.contextmanager
def running(folder: Path) -> Iterator[str]:
    """Start an empty engine in `folder` and point this process's Docker client at it (through
    DOCKER_HOST) while inside; then stop it and delete everything it stored. Needs root."""
    dockerd = shutil.which("dockerd")
    if os.geteuid() != 0 or dockerd is None:
        raise PipelineError(
            "an empty engine for the report needs root and `dockerd` on PATH",
            "run the build report as root on a build machine with Docker Engine installed",
        )
    bridge, subnet = _bridge()
    folder.mkdir(parents=True)
    # sockets live under the exec root: a short path, whatever `folder` is (108-byte limit)
    exec_root = Path(tempfile.mkdtemp(prefix="torchimg-exec-", dir="/tmp"))
    config = folder / "daemon.json"
    config.write_text(json.dumps({"features": {"containerd-snapshotter": containerd_store()}}))
    host = f"unix://{folder / 'docker.sock'}"
    args = [
        dockerd,
        f"--config-file={config}",
        f"--data-root={folder / 'data'}",
        f"--exec-root={exec_root}",
        f"--pidfile={folder / 'docker.pid'}",
        f"--host={host}",
        f"--bridge={bridge}",
        f"--fixed-cidr={subnet}",
        "--iptables=false",
        "--ip6tables=false",
    ]
    engine_log = folder / "dockerd.log"
    with engine_log.open("ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
    before = os.environ.get("DOCKER_HOST")
    try:
        deadline = time.monotonic() + _START_SECONDS
        while not _answers(host):
            if proc.poll() is not None or time.monotonic() > deadline:
                said = engine_log.read_text(errors="replace").strip().splitlines()[-3:]
                raise ToolError(
                    f"the report's empty engine did not start: {' / '.join(said) or 'no output'}",
                    "`dockerd` must be able to run beside the main engine (as root, same version)",
                )
            time.sleep(0.5)
        log.info("== empty engine: up at %s (containers on %s, %s)", host, bridge, subnet)
        os.environ["DOCKER_HOST"] = host
        yield host
    finally:
        if before is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = before
        _stop(proc, (folder, exec_root))


def _stop(proc: "subprocess.Popen[bytes]", folders: tuple[Path, ...]) -> None:
    """Stop the engine (its containerd with it) and remove its data and exec roots."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for folder in folders:
        try:
            shutil.rmtree(folder)
        except OSError as exc:
            log.warning("== empty engine: could not remove %s (%s): remove it by hand", folder, exc)
