"""Images in the local engine: is it there, what it holds, tags, and the engine itself."""

import contextlib
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torchimg.adapters.engine._client import (
    ClientNotFoundError,
    DockerException,
    NoSuchImage,
    docker,
    failed,
    first_line,
    run_cli,
)
from torchimg.errors import PipelineError, ToolError


def preflight(buildx: bool = True) -> None:
    """The engine answers and (for builds) has buildx: checked before anything is built or tagged."""
    try:
        docker.system.info()
    except DockerException as exc:
        raise ToolError(
            f"the Docker Engine does not answer ({first_line(exc)})",
            "start it (`sudo systemctl start docker`, or `dockerd &`), or point DOCKER_HOST at one",
        ) from None
    except (FileNotFoundError, ClientNotFoundError):
        raise ToolError("no `docker` client on PATH", "install Docker Engine and its CLI") from None
    if buildx and not docker.buildx.is_installed():
        raise ToolError(
            "the docker buildx plugin is missing (BuildKit builds need it)",
            "install it: `apt-get install docker-buildx` (Debian) "
            "or `docker-buildx-plugin` (Docker's repository)",
        )


CONTAINERD_STORE_FIX = (
    'set {"features": {"containerd-snapshotter": true}} in /etc/docker/daemon.json and restart '
    "dockerd (images are then pulled again)"
)


def containerd_store() -> bool:
    """Whether the engine stores images in containerd (image ID = digest; attestations kept)."""
    try:
        status = docker.system.info().driver_status or []
    except DockerException as exc:
        raise failed("reading its storage driver", exc) from None
    return ["driver-type", "io.containerd.snapshotter.v1"] in status


_SYSTEM_CONTAINERD = "/var/lib/containerd"


def data_roots() -> list[str]:
    """Where the engine keeps images and build cache: `docker info`'s DockerRootDir, and with
    the containerd image store a system containerd's root too (image content and snapshots
    live there when dockerd uses the host's containerd)."""
    try:
        info = docker.system.info()
    except DockerException as exc:
        raise failed("reading its data root", exc) from None
    roots = [str(info.docker_root_dir)]
    if containerd_store() and Path(_SYSTEM_CONTAINERD).is_dir():
        roots.append(_SYSTEM_CONTAINERD)
    return roots


# The Dockerfile's HEALTHCHECK --start-interval needs BuildKit 0.12, first in Engine 25: an older
# engine's builder refuses the whole Dockerfile ("Unknown flag: start-interval").
MIN_ENGINE_MAJOR = 25


MIN_BUILDKIT = (0, 12)
_VERSION = re.compile(r"v?(\d+)\.(\d+)")
_DRIVER = re.compile(r"(?im)^driver:[ \t]*(\S*)")
_NODES = re.compile(r"(?m)^Nodes:[ \t]*$")


def builder_nodes(inspected: str) -> list[dict[str, str]]:
    """The nodes `docker buildx inspect` lists, each as its `Key: value` lines (keys in lower
    case; the indented lines of labels and GC policies left out)."""
    found = _NODES.search(inspected)
    nodes: list[dict[str, str]] = []
    for line in inspected[found.end() :].splitlines() if found else []:
        key, sep, value = line.partition(":")
        if not sep or not line[:1].strip():
            continue
        key = key.strip().lower()
        if key == "name":
            nodes.append({})
        if nodes:
            nodes[-1].setdefault(key, value.strip())
    return nodes


def buildkit_problem(inspected: str) -> str | None:
    """Why a builder of another driver than docker cannot be trusted to read docker/Dockerfile:
    a node runs a BuildKit older than MIN_BUILDKIT, or reports no version to check (a check
    that cannot run is not passed); None when every node runs one new enough."""
    nodes = builder_nodes(inspected)
    if not nodes:
        return "lists no node"
    oldest = None
    for node in nodes:
        said = node.get("buildkit version") or node.get("buildkit") or ""  # "Buildkit:" before buildx 0.13
        version = _VERSION.match(said)
        if version is None or version[0].lstrip("v") == "0.0":
            name = node.get("name") or "unnamed"
            return f"has a node ({name}) that reports no BuildKit version ({said or 'none'})"
        seen = (int(version[1]), int(version[2]))
        oldest = seen if oldest is None else min(oldest, seen)
    if oldest is not None and oldest < MIN_BUILDKIT:
        return f"runs BuildKit {oldest[0]}.{oldest[1]}"
    return None


def require_dockerfile_support(builder: str | None = None) -> None:
    """The builder a build will use (`builder`, else buildx's current one) exists, starts, and
    runs a BuildKit that reads docker/Dockerfile: said before anything is built, not as a parse
    error of the Dockerfile after the stages before it ran. The docker driver's BuildKit is the
    engine's (it reports no version: the engine's is checked); every node of another builder
    is checked, and one that reports no version is not passed."""
    named = f"buildx builder {builder!r}" if builder else "the current buildx builder"
    inspect = ["buildx", "inspect", "--bootstrap", *([builder] if builder else [])]
    try:
        out = str(run_cli([*docker.docker_cmd, *inspect]))
    except DockerException as exc:
        preflight()
        why = first_line(exc)
        if "no builder" in why.lower() and "found" in why.lower():
            wanted = builder or os.environ.get("BUILDX_BUILDER")
            source = (
                "--builder (variants.toml `builder`, $TORCHIMG_BUILDER)" if builder else "$BUILDX_BUILDER"
            )
            raise PipelineError(
                f"no buildx builder named {wanted!r} ({why})"
                if wanted
                else f"{named} does not exist ({why})",
                "`docker buildx ls` lists the builders; create it with `docker buildx create --name "
                f"NAME ...`, or name another in {source}",
            ) from None
        raise ToolError(
            f"{named} does not start ({why})",
            f"`docker {' '.join(inspect)}` shows why; fix it, or pass another --builder",
        ) from None
    shown = f"`docker {' '.join(inspect)}` shows which"
    nodes = builder_nodes(out)
    stopped = [n.get("status", "") for n in nodes if n.get("status", "").lower() != "running"]
    if stopped or not nodes:  # buildx starts a builder when one node answers; a build may land on another
        state = (
            "lists no node"
            if not nodes
            else f"has a node that is {stopped[0] or 'not reported'}, not running"
        )
        raise ToolError(f"{named} {state}", f"{shown}; fix or remove it, or pass another --builder")
    found = _DRIVER.search(out)
    driver = found[1] if found else ""
    if driver == "docker":  # the engine's own BuildKit
        version = server_version()
        major = version.split(".", 1)[0]
        if major.isdigit() and int(major) < MIN_ENGINE_MAJOR:
            raise PipelineError(
                f"Docker Engine {version} is older than {MIN_ENGINE_MAJOR}: its BuildKit cannot read "
                "docker/Dockerfile (HEALTHCHECK --start-interval needs BuildKit 0.12)",
                f"upgrade Docker Engine to {MIN_ENGINE_MAJOR} or newer, or build with --builder on a "
                "BuildKit 0.12+ builder",
            )
        return
    problem = buildkit_problem(out)
    if problem:
        raise PipelineError(
            f"{named} (driver {driver or 'not said'}) {problem}: docker/Dockerfile needs BuildKit "
            f"{MIN_BUILDKIT[0]}.{MIN_BUILDKIT[1]} or newer (HEALTHCHECK --start-interval)",
            f"{shown}; recreate the builder on a released, newer BuildKit (`docker buildx create "
            "--driver-opt image=moby/buildkit:v0.12.5 ...` or newer), or pass another --builder",
        )


def server_version() -> str:
    try:
        server = docker.version().server
    except DockerException as exc:
        raise failed("reading its version", exc) from None
    return str(server.version) if server else "unknown"


def image_id(ref: str) -> str | None:
    """The local image ID of `ref`, or None when the engine does not have it."""
    try:
        return str(docker.image.inspect(ref).id)
    except NoSuchImage:
        return None
    except DockerException as exc:
        raise failed(f"looking up {ref}", exc) from None
    except (FileNotFoundError, ClientNotFoundError):
        raise ToolError("no `docker` client on PATH", "install Docker Engine and its CLI") from None


def layer_ids(ref: str) -> list[str]:
    """The uncompressed layer digests (diff IDs) of a local image."""
    try:
        return list(docker.image.inspect(ref).root_fs.layers or [])
    except DockerException as exc:
        raise failed(f"inspecting {ref}", exc) from None


def image_labels(ref: str) -> dict[str, str]:
    """The labels of a local image's config."""
    try:
        config = docker.image.inspect(ref).config
    except DockerException as exc:
        raise failed(f"inspecting {ref}", exc) from None
    return dict((config.labels if config else None) or {})


def exposed_ports(ref: str) -> list[str]:
    """The ports a local image declares (EXPOSE)."""
    try:
        config = docker.image.inspect(ref).config
    except DockerException as exc:
        raise failed(f"inspecting {ref}", exc) from None
    return sorted((config.exposed_ports if config else None) or {})


def gpu_runtime() -> bool:
    """Whether containers can get GPUs here: the engine knows the NVIDIA runtime."""
    try:
        return "nvidia" in (docker.system.info().runtimes or {})
    except DockerException as exc:
        raise failed("reading its runtimes", exc) from None


def tag(source: str, target: str) -> None:
    try:
        docker.image.tag(source, target)
    except DockerException as exc:
        raise ToolError(f"cannot tag {source} as {target} ({first_line(exc)})", "check the engine") from None


def untag(ref: str, force: bool = False) -> None:
    """Remove a tag only (the image stays while another tag or the record's ID names it)."""
    with contextlib.suppress(DockerException):
        run_cli([*docker.docker_cmd, "image", "rm", "--no-prune", *(["--force"] if force else []), ref])


def labelled_tags(prefix: str) -> list[str]:
    """Every local tag of an image carrying a label that starts with `prefix`, and every
    `repository@digest` it was pulled as (an image pulled by digest has no tag)."""
    try:
        images = docker.image.list()
    except DockerException as exc:
        raise failed("listing images", exc) from None
    found = []
    for image in images:
        if any(key.startswith(prefix) for key in ((image.config.labels if image.config else None) or {})):
            found += image.repo_tags
            found += [ref for ref in image.repo_digests if not image.repo_tags]
    return sorted(found)


SAVE_CHUNK = 1 << 20


def save(ref: str) -> Iterator[bytes]:
    """`docker save` of a local image, streamed in 1 MiB chunks (never on disk).

    Read from the CLI here, not through the client library's save, which splits the binary
    stream at newline bytes (15 million pieces for a torch image, most of the read's time) and
    raises its own error when the save fails midway. A save that fails, at its start or midway,
    is a ToolError; a reader that stops early ends the save."""
    with tempfile.TemporaryFile() as errors:
        try:
            proc = subprocess.Popen(
                [*docker.docker_cmd, "image", "save", ref], stdout=subprocess.PIPE, stderr=errors
            )
        except OSError as exc:
            raise ToolError(
                f"cannot run the docker client: {exc.strerror or exc}", "install Docker's CLI"
            ) from None
        assert proc.stdout is not None
        try:
            while chunk := proc.stdout.read(SAVE_CHUNK):
                yield chunk
        finally:
            if proc.poll() is None:  # the reader stopped before the end (or an error): no orphan
                proc.kill()
            proc.stdout.close()
            code = proc.wait()
        if code != 0:
            errors.seek(max(0, errors.seek(0, os.SEEK_END) - 4096))  # the error comes last
            said = errors.read(4096).decode(errors="replace").strip().splitlines()
            raise ToolError(
                f"the Docker Engine failed while saving {ref}: {said[-1] if said else f'exit {code}'}",
                "check that the engine answers (`docker info`) and holds the image, then run it again",
            )


def history(ref: str) -> list[dict[str, Any]]:
    """`docker history` of a local image, newest layer first."""
    out = run_cli([*docker.docker_cmd, "history", "--no-trunc", "--format", "{{json .}}", ref])
    return [json.loads(line) for line in str(out).splitlines() if line.strip()]


def remove_image(ref: str) -> None:
    """Remove a tag, and the image when no other tag names it (tests, benchmarks)."""
    if image_id(ref):
        with contextlib.suppress(DockerException):
            docker.image.remove(ref, force=True)
