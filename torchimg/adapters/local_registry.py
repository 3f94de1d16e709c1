"""The embedded default target: a local registry on localhost:5000, started when none answers.

Where Debian's `docker-registry` program is installed it runs as a background process (no
image to pull); otherwise the `registry:2` image runs as a container. Real registries are
used as they are, with `docker login`'s credentials.
"""

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from torchimg import compression
from torchimg.adapters import engine
from torchimg.errors import PipelineError, ToolError
from torchimg.output import log

LOCAL = "localhost:5000"
# registry 2.8.3 (the multi-platform index); pulled only where the program is not installed.
IMAGE = (
    "docker.io/library/registry:2.8.3@sha256:a3d8aaa63ed8681a604f1dea0aa03f100d5895b6a58ace528858a7b332415373"
)
CONTAINER = "torchimg-registry"
_LOOPBACK = ("localhost", "127.0.0.1", "[::1]")


def host_of(repository: str) -> str:
    """The registry host of an image repository, as docker reads it (docker.io by default)."""
    first, _, rest = repository.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def check_host(value: str, what: str) -> str:
    """An IPv4 loopback HOST:PORT for the embedded registry (it listens on 127.0.0.1 only)."""
    host, _, port = value.rpartition(":")
    if host not in _LOOPBACK[:2] or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise PipelineError(
            f"{what} {value!r} is not a loopback HOST:PORT the embedded registry can listen on",
            f"e.g. {LOCAL} or 127.0.0.1:5001 (it listens on 127.0.0.1, not on IPv6)",
        )
    return value


def is_local(host: str) -> bool:
    return host.rsplit(":", 1)[0] in _LOOPBACK


def answers(host: str, timeout: float = 2.0) -> bool:
    """A registry answers at http://host/v2/ (any HTTP status: 401 means it is up)."""
    try:
        with urllib.request.urlopen(f"http://{host}/v2/", timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


def state_dir() -> Path:
    """Storage, config, log and pid of the program-run registry: $TORCHIMG_REGISTRY_DIR or
    the user's data folder, so its images outlive `inv clean` and a reboot."""
    if env := os.environ.get("TORCHIMG_REGISTRY_DIR"):
        return Path(env).absolute()  # `down` from another folder finds the same registry
    data = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data / "torchimg" / "registry"


@dataclass(frozen=True)
class Local:
    """One local registry: where it listens and where it keeps its state."""

    host: str = LOCAL
    folder: Path | None = None

    @classmethod
    def on_free_port(cls, folder: Path) -> "Local":
        """A registry of its own (tests, the build report): a free port, state in `folder`."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        return cls(f"localhost:{port}", folder)

    @property
    def dir(self) -> Path:
        return self.folder or state_dir()

    def unpacked_bytes(self, repository: str, digest: str) -> int:
        """A layer blob's bytes once decompressed (its tar stream), read straight from this
        registry: the build report's uncompressed size of an image of any platform."""
        url = f"http://{self.host}/v2/{repository}/blobs/{digest}"
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                hashing = compression.Hashing(response)
                blob = io.BufferedReader(hashing, 1 << 22)
                stream = compression.decompressed(blob, compression.kind(blob.peek(4)[:4]))
                total = sum(len(chunk) for chunk in iter(lambda: stream.read(1 << 22), b""))
                while blob.read(1 << 22):  # anything after the stream belongs to the blob too
                    pass
        except compression.ERRORS as exc:  # URLError is an OSError
            raise ToolError(f"reading {url}: {exc}", "is the report's registry still running?") from None
        if hashing.digest != digest:  # a short read decompresses without an error
            raise ToolError(f"reading {url}: got {hashing.digest}, a short or damaged read", "run it again")
        return total

    @property
    def port(self) -> int:
        return int(self.host.rsplit(":", 1)[1])

    @property
    def _per_port(self) -> str:
        """Each port's registry has its own state, so `down` on one never stops another
        (5000's names are the plain ones)."""
        return "" if self.port == 5000 else f"-{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.dir / f"registry{self._per_port}.pid"

    @property
    def log_file(self) -> Path:
        return self.dir / f"registry{self._per_port}.log"

    @property
    def config_file(self) -> Path:
        return self.dir / f"config{self._per_port}.yml"

    @property
    def storage(self) -> Path:
        return self.dir / f"storage{self._per_port}"

    @property
    def container(self) -> str:
        return CONTAINER if self.port == 5000 else f"{CONTAINER}-{self.port}"

    def _pid(self) -> int | None:
        """The pid in the pid file, if that process is alive and is a registry serving our config
        (a stale pid file may name any process by now: it must never get our signal)."""
        try:
            pid = int(self.pid_file.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        ours = [b"serve", str(self.config_file).encode()]
        if not (cmdline and cmdline[0].endswith(b"docker-registry") and cmdline[1:3] == ours):
            return None
        return pid

    def _container_running(self) -> bool:
        return engine.registry_container(self.container, IMAGE, self.port, start=False)

    def status(self) -> str:
        if pid := self._pid():
            how = f"the docker-registry program (pid {pid}, storage {self.storage})"
        elif self._container_running():
            how = f"container {self.container} ({IMAGE.split('@')[0]})"
        else:
            how = "started outside this project"
        return f"{self.host}: " + (f"up, {how}" if answers(self.host) else "down")

    def start(self) -> str:
        """Start it if nothing answers; return how it runs. Waits until it answers."""
        if answers(self.host):
            return "already up"
        program = shutil.which("docker-registry")
        how = self._start_program(program) if program else self._start_container()
        for _ in range(60):
            if answers(self.host):
                log.info("== registry: started on %s (%s)", self.host, how)
                return how
            time.sleep(0.5)
        raise ToolError(
            f"the local registry did not answer on {self.host} after starting it ({how})",
            f"read {self.log_file}" if program else f"`docker logs {self.container}`",
        )

    def _start_program(self, program: str) -> str:
        storage = self.storage
        try:
            storage.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PipelineError(
                f"the local registry's folder {self.dir} cannot hold its storage ({exc.strerror})",
                "point $TORCHIMG_REGISTRY_DIR at a writable folder (or unset it)",
            ) from None
        config = self.config_file
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n"
            "storage:\n  filesystem:\n"
            f"    rootdirectory: {json.dumps(str(storage))}\n"  # quoted: any folder name is YAML-safe
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n"
        )
        with self.log_file.open("ab") as log:
            proc = subprocess.Popen(
                [program, "serve", str(config)],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # outlives the nox session that started it
            )
        self.pid_file.write_text(str(proc.pid))
        return f"docker-registry program, storage {storage}"

    def _start_container(self) -> str:
        engine.preflight()
        try:
            engine.registry_container(self.container, IMAGE, self.port, start=True)
        except PipelineError as exc:
            raise ToolError(
                f"cannot start a local registry on {self.host}: no `docker-registry` program, and {exc.what}",
                exc.fix,
            ) from None
        return f"container {self.container}"

    def stop(self) -> str:
        """Stop what this project started (never a registry someone else runs)."""
        if pid := self._pid():
            os.kill(pid, signal.SIGTERM)
            for _ in range(40):
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)  # reap it when this process started it
                if self._pid() is None:
                    break
                time.sleep(0.25)
            self.pid_file.unlink(missing_ok=True)
            return f"stopped the docker-registry program (pid {pid}); images kept in {self.storage}"
        if not answers(self.host):
            return f"{self.host}: no registry running"
        if self._container_running():
            engine.stop_container(self.container)
            return f"stopped container {self.container}; images kept in volume {self.container}-data"
        return f"{self.host} answers, but it was not started by this project: left alone"


def ensure(repository: str) -> None:
    """The repository's registry must answer; the embedded local one is started if not."""
    host = host_of(repository)
    if host == LOCAL or host == LOCAL.replace("localhost", "127.0.0.1"):
        Local(host).start()
    elif is_local(host) and not answers(host):
        raise ToolError(
            f"no registry answers on {host} (repository {repository})",
            f"start one there, or use the embedded default {LOCAL} (`inv registry up`)",
        )
