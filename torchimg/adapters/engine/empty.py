"""An empty Docker Engine beside the main one: what a new CI runner starts with. The build
report measures cold builds, registry-cache rebuilds and pulls there, so that nothing the main
engine holds (layers, unpacked snapshots, BuildKit's cache) can make them look faster.

It runs its own containerd (a dockerd started without one would join a system containerd and
share its images) and has its own data root beside the main engine's (on disk: /tmp may be
RAM), exec root, pid file and socket, with the main engine's image store and network settings.
Its containers join the main engine's default bridge on a /24 of the upper half of its subnet,
and it leaves iptables alone: an engine started with `--bridge none` deletes the host's docker0,
and one that manages iptables rewrites the main engine's chains. The main engine's rules
already forward and masquerade that bridge's whole subnet.
"""

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torchimg.adapters.engine._client import DockerClient, DockerException, docker, failed
from torchimg.adapters.engine.images import containerd_store
from torchimg.errors import PipelineError, ToolError
from torchimg.output import log

_START_SECONDS = 60
_STOP_SECONDS = 60
_MAIN_CONFIG = Path("/etc/docker/daemon.json")
# What the empty engine takes from the main engine's daemon.json: how it reaches registries
# and the network. Never its paths, sockets or bridge settings.
_CARRIED = ("dns", "dns-opts", "dns-search", "proxies", "registry-mirrors", "insecure-registries")
# Variables that would send the client somewhere other than the empty engine.
_CLIENT_VARIABLES = ("DOCKER_HOST", "DOCKER_CONTEXT", "BUILDX_BUILDER")


def _main_engine() -> tuple[str, str, Path]:
    """The main engine's bridge, a /24 of the upper half of its subnet (one per process, so
    that two empty engines never hand out the same address), and its data root."""
    try:
        network = docker.network.inspect("bridge")
        root = Path(str(docker.system.info().docker_root_dir))
    except DockerException as exc:
        raise failed("reading its default bridge network", exc) from None
    name = (network.options or {}).get("com.docker.network.bridge.name", "docker0")
    subnets = [c.get("Subnet") for c in (network.ipam.config or []) if ":" not in (c.get("Subnet") or ":")]
    if not subnets or not Path(f"/sys/class/net/{name}").exists():
        raise PipelineError(
            f"the main engine has no IPv4 default bridge ({name}) for an empty engine's containers",
            "start dockerd with its default bridge (no `--bridge none`), then run the report again",
        )
    upper = list(ipaddress.IPv4Network(str(subnets[0])).subnets(prefixlen_diff=1))[1]
    pieces = list(upper.subnets(new_prefix=max(upper.prefixlen, 24)))
    return name, str(pieces[os.getpid() % len(pieces)]), root


def _config() -> dict[str, Any]:
    """The main engine's image store and network settings; no BuildKit garbage collection
    (the engine lives for one measurement, and a collection would evict what it measures)."""
    config: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        main = json.loads(_MAIN_CONFIG.read_text())
        config = {k: main[k] for k in _CARRIED if k in main}
    config["features"] = {"containerd-snapshotter": containerd_store()}
    config["builder"] = {"gc": {"enabled": False}}
    return config


def _answers(host: str) -> bool:
    try:
        DockerClient(host=host).system.info()
    except DockerException:
        return False
    return True


def _start(args: list[str], log_file: Path) -> "subprocess.Popen[bytes]":
    try:
        with log_file.open("ab") as out:
            return subprocess.Popen(args, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
    except OSError as exc:
        raise ToolError(
            f"cannot start {args[0]} for an empty engine: {exc}", "is Docker Engine installed?"
        ) from None


def _failed_to_start(log_file: Path) -> ToolError:
    said = log_file.read_text(errors="replace").strip().splitlines()[-3:] if log_file.exists() else []
    return ToolError(
        f"the report's empty engine did not start: {' / '.join(said) or 'no output'}",
        "`dockerd` and `containerd` must be able to run beside the main engine (as root)",
    )


@contextlib.contextmanager
def running(name: str) -> Iterator[str]:
    """Start an empty engine and point this process's Docker client at it (DOCKER_HOST) while
    inside; then stop it and delete everything it stored, also after an error or SIGTERM
    (the CLI turns that into an interrupt). Needs root."""
    dockerd, containerd = shutil.which("dockerd"), shutil.which("containerd")
    if os.geteuid() != 0 or dockerd is None or containerd is None:
        raise PipelineError(
            "an empty engine for the report needs root, and `dockerd` and `containerd` on PATH",
            "run the build report as root on a build machine with Docker Engine installed",
        )
    bridge, subnet, main_root = _main_engine()
    saved = {k: os.environ.get(k) for k in _CLIENT_VARIABLES}
    procs: list[subprocess.Popen[bytes]] = []
    folder = main_root.parent / f"torchimg-empty-engine-{os.getpid()}-{name}"
    # sockets live under the exec root: a short path (108-byte limit), in RAM, small
    run = Path(tempfile.mkdtemp(prefix="torchimg-engine-"))
    try:
        folder.mkdir(parents=True)
        (folder / "containerd.toml").write_text(
            "version = 2\n"
            f'root = "{folder / "containerd"}"\n'
            f'state = "{run / "containerd"}"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{run / "containerd.sock"}"\n'
        )
        (folder / "daemon.json").write_text(json.dumps(_config()))
        host = f"unix://{run / 'docker.sock'}"
        engine_log = folder / "engine.log"
        procs.append(_start([containerd, "--config", str(folder / "containerd.toml")], engine_log))
        procs.append(
            _start(
                [
                    dockerd,
                    f"--config-file={folder / 'daemon.json'}",
                    f"--containerd={run / 'containerd.sock'}",
                    f"--data-root={folder / 'data'}",
                    f"--exec-root={run / 'exec'}",
                    f"--pidfile={run / 'docker.pid'}",
                    f"--host={host}",
                    f"--bridge={bridge}",
                    f"--fixed-cidr={subnet}",
                    "--iptables=false",
                    "--ip6tables=false",
                ],
                engine_log,
            )
        )
        deadline = time.monotonic() + _START_SECONDS
        while not _answers(host):
            if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
                raise _failed_to_start(engine_log)
            time.sleep(0.5)
        for key in _CLIENT_VARIABLES:
            os.environ.pop(key, None)
        os.environ["DOCKER_HOST"] = host
        if docker.image.list(all=True):  # fail closed: a measurement here must start from nothing
            raise ToolError(f"the empty engine at {host} lists images", f"read {engine_log}")
        log.info("== empty engine: up at %s (data %s, containers on %s %s)", host, folder, bridge, subnet)
        yield host
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _stop(procs, (folder, run))


def _stop(procs: "list[subprocess.Popen[bytes]]", folders: tuple[Path, ...]) -> None:
    """Stop dockerd, then its containerd, and remove their folders: shielded from another
    Ctrl-C or SIGTERM, which would leave an engine running and tens of GB on disk."""
    shielded = (signal.SIGINT, signal.SIGTERM)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = [signal.signal(s, signal.SIG_IGN) for s in shielded] if main_thread else []
    try:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(_STOP_SECONDS)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for folder in folders:
            _unmount_under(folder)
            _remove(folder)
    finally:
        for sig, handler in zip(shielded, previous, strict=False):
            signal.signal(sig, handler)


def _remove(folder: Path) -> None:
    """Remove a folder; an entry that vanishes meanwhile (a process still exiting) is no
    reason to leave the rest of it behind."""
    why = "still there after 5 tries"
    for _ in range(5):
        if not folder.exists():
            return
        try:
            shutil.rmtree(folder)
        except FileNotFoundError:
            time.sleep(1)
        except OSError as exc:
            why = str(exc)
            break
    log.warning("== empty engine: could not remove %s (%s): remove it by hand", folder, why)


def _unmount_under(folder: Path) -> None:
    """Detach what a stopped engine can leave mounted in its folders (a build step's network
    namespace, an interrupted container's root), deepest first, so that they can be removed."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return
    points = [m.split()[1].encode().decode("unicode_escape") for m in mounts if len(m.split()) > 1]
    inside = sorted((p for p in points if Path(p).is_relative_to(folder)), key=len, reverse=True)
    for point in inside:
        subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)
