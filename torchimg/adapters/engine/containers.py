"""Containers: throwaway runs, probe runs kept to copy results out, the fallback registry."""

import contextlib
import subprocess
import sys
import tarfile
import tempfile
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from torchimg.adapters.engine._client import DockerException, docker, failed, first_line
from torchimg.errors import RefusedError, ToolError

RESULT_MAX_BYTES = 16 * 1024 * 1024
_COPY_TIMEOUT_S = 120


def run(
    image: str,
    command: Sequence[str],
    *,
    volumes: Sequence[tuple[str, str, str]] = (),
    env: Mapping[str, str] | None = None,
    user: str | None = None,
    workdir: str | None = None,
    stream: bool = False,
) -> str:
    """Run a throwaway container; return its stdout (echoed as it comes with stream=True).
    A non-zero exit raises a ToolError carrying the end of the container's stderr."""
    stdout: list[str] = []
    stderr: list[str] = []
    try:
        for source, chunk in docker.run(
            image,
            list(command),
            stream=True,
            remove=True,
            volumes=list(volumes),
            envs=dict(env or {}),
            user=user,
            workdir=workdir,
        ):
            text = chunk.decode(errors="replace")
            (stdout if source == "stdout" else stderr).append(text)
            if stream:
                print(text, end="", file=sys.stderr, flush=True)
    except DockerException as exc:
        tail = "".join(stderr).strip().splitlines()[-5:] or ["(no stderr)"]
        raise ToolError(
            f"`{' '.join(command) or '(image default command)'}` failed in {image} (exit {exc.return_code}): "
            + "\n    ".join(tail)
        ) from None
    return "".join(stdout)


@dataclass(frozen=True)
class Exited:
    code: int
    output: str


def run_kept(
    image: str,
    command: Sequence[str],
    name: str,
    *,
    gpus: bool,
    env: Mapping[str, str],
    shm_size: str,
    platform: str | None = None,
) -> Exited:
    """Run a container kept after it exits (files are copied out of it), echoing its output.
    Nothing of the host is mounted into it. `platform`: that platform's image of an index."""
    lines: list[str] = []
    try:
        for _, chunk in docker.run(
            image,
            list(command),
            name=name,
            remove=False,
            stream=True,
            gpus="all" if gpus else None,
            envs=dict(env),
            shm_size=shm_size,
            platform=platform,
        ):
            lines.append(chunk.decode(errors="replace"))
            print(lines[-1], end="", file=sys.stderr, flush=True)
    except DockerException as exc:
        if exc.return_code == 125:  # the engine could not create or start the container
            raise ToolError(
                f"the engine could not start {' '.join(command[:3])} in {image[:19]}: {first_line(exc)}",
                "check the engine (and the NVIDIA runtime for --gpus): `docker info`",
            ) from None
        return Exited(exc.return_code, "".join(lines))
    return Exited(0, "".join(lines))


def new_container_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def remove_container(name: str) -> None:
    with contextlib.suppress(DockerException):
        docker.container.remove(name, force=True, volumes=True)


def containers_of(image: str) -> list[str]:
    """Names of the containers (running or not) made from a local image."""
    return [c.name for c in docker.container.list(all=True, filters=[("ancestor", image)])]


def copy_file_out(container: str, path: str, max_bytes: int = RESULT_MAX_BYTES) -> bytes | None:
    """The bytes of one regular file in a (stopped) container; None when there is none.

    `docker cp` to stdout gives a tar stream, read as a stream: the member is inspected, never
    extracted, so a symlink or device planted in the container never reaches the host's files,
    and a huge file is refused from its header without being read. A watchdog ends a hung copy."""
    with (
        tempfile.TemporaryFile() as errors,
        subprocess.Popen(
            [*docker.docker_cmd, "cp", f"{container}:{path}", "-"], stdout=subprocess.PIPE, stderr=errors
        ) as proc,
    ):
        assert proc.stdout is not None
        watchdog = threading.Timer(_COPY_TIMEOUT_S, proc.kill)
        watchdog.start()
        try:
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                member = tar.next()
                data = _regular_file(tar, member, path, max_bytes) if member else None
        except tarfile.TarError:
            data = None
        finally:
            watchdog.cancel()
            proc.kill()
            proc.wait()
        errors.seek(0)
        err = errors.read(4096).decode(errors="replace").strip()
    if data is not None:
        return data
    if "could not find the file" in err.lower() or "no such file" in err.lower():
        return None
    raise ToolError(
        f"cannot copy {path} out of container {container}: {err[-300:] or 'no output'}", "check the engine"
    )


def _regular_file(tar: tarfile.TarFile, member: tarfile.TarInfo, path: str, max_bytes: int) -> bytes:
    if not member.isreg():
        kind = "a symlink" if member.issym() or member.islnk() else "not a regular file"
        raise RefusedError(
            f"{path} in the container is {kind}: refused (results are read as regular files only)",
            "the image's probe must write its results as plain files",
        )
    if member.size > max_bytes:
        raise RefusedError(
            f"{path} in the container is {member.size} bytes, over the {max_bytes} byte cap",
            "the image's probe must write small JSON results",
        )
    handle = tar.extractfile(member)
    assert handle is not None
    return handle.read(max_bytes)


def serve(
    image: str, name: str, port: int, container_port: int, env: Mapping[str, str], command: Sequence[str] = ()
) -> None:
    """Start `image` detached as `name`, `container_port` published on 127.0.0.1:`port` only
    (a server a test talks to; remove it with remove_container)."""
    try:
        docker.run(
            image,
            list(command),
            detach=True,
            name=name,
            publish=[(f"127.0.0.1:{port}", container_port)],
            envs=dict(env),
        )
    except DockerException as exc:
        raise ToolError(
            f"the engine could not start {image[:19]} ({first_line(exc)})", "`docker info`"
        ) from None


def registry_container(name: str, image: str, port: int, start: bool) -> bool:
    """The fallback local registry as a container: whether it runs (start=False), or start it."""
    try:
        if not start:
            return bool(docker.container.exists(name)) and bool(docker.container.inspect(name).state.running)
        if docker.container.exists(name):
            docker.container.start(name)
        else:
            docker.run(
                image,
                detach=True,
                name=name,
                publish=[(f"127.0.0.1:{port}", 5000)],
                volumes=[(f"{name}-data", "/var/lib/registry")],
                restart="unless-stopped",
            )
        return True
    except DockerException as exc:
        if not start:
            return False
        raise ToolError(
            f"the {image.split('@')[0]} container failed ({first_line(exc)})",
            "install Debian's docker-registry package, or push elsewhere with --repository",
        ) from None


def stop_container(name: str) -> None:
    try:
        docker.container.stop(name)
    except DockerException as exc:
        raise failed(f"stopping {name}", exc) from None
