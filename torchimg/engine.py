"""The thin adapter to Docker (python-on-whales): preflight checks, BuildKit builds, runs.

Every failure a user can fix is turned into a PipelineError naming the command that fixes it.
"""

import contextlib
import json
import re
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from python_on_whales import docker
from python_on_whales.exceptions import DockerException, NoSuchImage
from python_on_whales.utils import run as run_cli

from torchimg.errors import RefusedError, ToolError

# Every image this project builds carries a label under this prefix (`inv clean` finds them by it).
PROJECT_LABEL_PREFIX = "io.torchimg."
BUILT_BY = PROJECT_LABEL_PREFIX + "built-by"

# A step's own error line ("#12 0.31 error: ...", pip's "ERROR: ..."), then BuildKit's summary.
_STEP_OUTPUT_ERROR = re.compile(r"^#\d+ [\d.]+ (?:error|ERROR): (?P<msg>.*)")
_BUILDKIT_ERROR = re.compile(r"^(?:#\d+ )?ERROR:? (?P<msg>.*)")


def preflight() -> None:
    """The engine answers and has buildx: checked before anything is built or tagged."""
    try:
        docker.system.info()
    except DockerException as exc:
        raise ToolError(
            f"the Docker Engine does not answer ({_first_line(exc)})",
            "start it (`sudo systemctl start docker`, or `dockerd &`), or point DOCKER_HOST at one",
        ) from None
    except FileNotFoundError:
        raise ToolError("no `docker` client on PATH", "install Docker Engine and its CLI") from None
    if not docker.buildx.is_installed():
        raise ToolError(
            "the docker buildx plugin is missing (BuildKit builds need it)",
            "install it: `apt-get install docker-buildx` (Debian) or `docker-buildx-plugin` "
            "(Docker's repository)",
        )


def _first_line(exc: DockerException) -> str:
    text = (exc.stderr or str(exc)).strip().splitlines()
    return text[-1] if text else "no output"


def server_version() -> str:
    try:
        server = docker.version().server
    except DockerException as exc:
        raise _engine_failed("reading the engine's version", exc) from None
    return str(server.version) if server else "unknown"


def _engine_failed(doing: str, exc: DockerException) -> ToolError:
    return ToolError(
        f"the Docker Engine failed while {doing}: {_first_line(exc)}",
        "check that the engine answers (`docker info`), then run the same command again",
    )


def image_id(ref: str) -> str | None:
    """The local image ID of `ref`, or None when the engine does not have it."""
    try:
        return str(docker.image.inspect(ref).id)
    except NoSuchImage:
        return None
    except DockerException as exc:
        raise _engine_failed(f"looking up {ref}", exc) from None


def gpu_runtime() -> bool:
    """Whether containers can get GPUs here: the engine knows the NVIDIA runtime."""
    try:
        return "nvidia" in (docker.system.info().runtimes or {})
    except DockerException as exc:
        raise _engine_failed("reading its runtimes", exc) from None


def require_base(ref: str) -> str:
    """Check the base image exists locally or in its registry; return its local ID or digest."""
    local = image_id(ref)
    if local:
        return local
    try:
        manifest = docker.buildx.imagetools.inspect(ref)
    except DockerException as exc:
        raise ToolError(
            f"base image {ref} is neither in the local engine nor reachable in its registry "
            f"({_first_line(exc)})",
            f"`docker pull {ref}`, or pass another base with --base (a local image works)",
        ) from None
    return str(getattr(manifest, "digest", "") or ref)


@dataclass(frozen=True)
class BuildResult:
    image_id: str
    seconds: float
    log: list[str]


def build(
    *,
    context: Path,
    dockerfile: Path,
    target: str | None,
    tags: Sequence[str],
    build_args: Mapping[str, str],
    contexts: Mapping[str, Path],
    secrets: Sequence[str],
    labels: Mapping[str, str],
    cache: bool = True,
    what: str,
    builder: str | None = None,
    cache_ref: str | None = None,
    cache_export: bool = True,
    compression: str = "gzip",
    attest: Sequence[str] = (),
) -> BuildResult:
    """Build one target through BuildKit, streaming its plain progress to stderr.

    The image is tagged only when the whole build succeeded (buildx loads it last).
    `cache_ref`: a registry cache imported and exported (mode=max: every stage's layers).
    `compression`: zstd recompresses every layer (gzip keeps the blobs old clients read).
    `attest`: provenance and/or sbom attestations, attached to the image (releases).
    """
    start = time.monotonic()
    log: list[str] = []
    try:
        stream = docker.buildx.build(
            context,
            file=dockerfile,
            target=target,
            tags=list(tags),
            build_args=dict(build_args),
            build_contexts={k: str(v) for k, v in contexts.items()},
            secrets=list(secrets),
            labels={BUILT_BY: "torchimg", **labels},
            cache=cache,
            builder=builder,
            cache_from={"type": "registry", "ref": cache_ref} if cache_ref else None,
            cache_to=(
                {"type": "registry", "ref": cache_ref, "mode": "max"} if cache_ref and cache_export else None
            ),
            output=(
                {"type": "image", "compression": compression, "force-compression": "true"}
                if compression != "gzip"
                else {}
            ),
            load=True,
            # No attestation unless asked for: its timestamps make the image ID differ between
            # identical builds. Release builds ask for provenance and SBOM.
            provenance={"mode": "max"} if "provenance" in attest else False,
            sbom=True if "sbom" in attest else None,
            progress="plain",
            stream_logs=True,
        )
        assert isinstance(stream, Iterator)
        for line in stream:
            log.append(line.rstrip("\n"))
            print(line, end="", file=sys.stderr, flush=True)
    except DockerException as exc:
        if builder and not any(line.startswith("#") for line in log):  # BuildKit never started
            raise ToolError(
                f"build of {what} failed: builder {builder!r}: {_first_line(exc)}",
                "`docker buildx ls` lists the builders; create one with `docker buildx create`",
            ) from None
        raise ToolError(
            f"build of {what} failed: {_build_error(log)}",
            "read the BuildKit log above for the failing step",
        ) from None
    seconds = time.monotonic() - start
    found = image_id(tags[0])
    if found is None:
        raise ToolError(f"build of {what} finished but {tags[0]} is not in the engine", "build again")
    return BuildResult(found, seconds, log)


def _build_error(log: list[str]) -> str:
    """The first error a step printed (the cause), else BuildKit's own last error line."""
    for line in log:
        if m := _STEP_OUTPUT_ERROR.match(line):
            return m["msg"].strip()
    for line in reversed(log):
        if m := _BUILDKIT_ERROR.match(line):
            return m["msg"].strip()
    return log[-1] if log else "no output"


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
    """Run a throwaway container; return its stdout. With stream=True, echo it as it comes.

    A non-zero exit raises a PipelineError carrying the end of the container's stderr.
    """
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
            f"`{' '.join(command) or '(image default command)'}` failed in {image} "
            f"(exit {exc.return_code}): " + "\n    ".join(tail)
        ) from None
    return "".join(stdout)


# --- registries: what a tag names there, pushes --------------------------------------------

_NOT_FOUND = ("not found", "manifest unknown", "name unknown", "no such manifest")


def _imagetools(ref: str, fmt: str) -> str | None:
    """`docker buildx imagetools inspect` (docker's own credentials); None: no such tag."""
    try:
        return str(run_cli([*docker.docker_cmd, "buildx", "imagetools", "inspect", ref, "--format", fmt]))
    except DockerException as exc:
        text = (exc.stderr or str(exc)).lower()
        if any(s in text for s in _NOT_FOUND):
            return None
        raise ToolError(
            f"cannot read {ref} from its registry ({_first_line(exc)})",
            "check that the registry answers and that `docker login` has credentials for it",
        ) from None


def remote_digest(ref: str) -> str | None:
    """The digest the registry serves for `ref` (a tag), or None when the tag does not exist."""
    out = _imagetools(ref, "{{json .Manifest}}")
    return str(json.loads(out)["digest"]) if out else None


def remote_labels(ref: str) -> dict[str, str]:
    """The labels in the image config the registry serves for `ref` ({} when none)."""
    out = _imagetools(ref, "{{json .Image}}")
    config = (json.loads(out) or {}).get("config") or {} if out else {}
    return dict(config.get("Labels") or {})


def serves(ref: str, local_id: str) -> str | None:
    """The digest under `ref` if the registry serves exactly the local image `local_id`, else None.

    With the containerd image store a local image ID is its manifest digest; with the classic
    store it is the config digest, which the registry's manifest names.
    """
    digest = remote_digest(ref)
    if digest is None:
        return None
    if digest == local_id:
        return digest
    try:
        manifest = docker.buildx.imagetools.inspect(ref)
    except DockerException as exc:
        raise ToolError(
            f"cannot read {ref} from its registry ({_first_line(exc)})",
            "check that the registry answers and that `docker login` has credentials for it",
        ) from None
    if manifest.config is not None and manifest.config.digest == local_id:
        return digest
    return None


def tag(source: str, target: str) -> None:
    try:
        docker.image.tag(source, target)
    except DockerException as exc:
        raise ToolError(f"cannot tag {source} as {target} ({_first_line(exc)})", "check the engine") from None


def untag(ref: str, force: bool = False) -> None:
    """Remove a tag only (the image stays while another tag or the record's ID names it)."""
    with contextlib.suppress(DockerException):
        run_cli([*docker.docker_cmd, "image", "rm", "--no-prune", *(["--force"] if force else []), ref])


def labelled_tags(prefix: str) -> list[str]:
    """Every local tag of an image carrying a label that starts with `prefix`."""
    try:
        images = docker.image.list()
    except DockerException as exc:
        raise _engine_failed("listing images", exc) from None
    found = []
    for image in images:
        labels = (image.config.labels if image.config else None) or {}
        if any(key.startswith(prefix) for key in labels):
            found += image.repo_tags
    return sorted(found)


def push_as(source: str, ref: str, keep_tag: bool = False) -> str:
    """Push the local image `source` under `ref` (a tag added for the push and removed after,
    unless kept); return the digest the engine reports."""
    tag(source, ref)
    try:
        return push(ref)
    finally:
        if not keep_tag:
            untag(ref)


_PUSHED_DIGEST = re.compile(r"digest: (?P<digest>sha256:[0-9a-f]{64})")


def push(ref: str) -> str:
    """Push a local tag, echoing progress; return the digest the engine reports for it."""
    lines: list[str] = []
    try:
        stream = docker.image.push(ref, stream_logs=True)
        assert stream is not None
        for _, chunk in stream:
            text = chunk.decode(errors="replace")
            lines.append(text)
            print(text, end="" if text.endswith("\n") else "\n", file=sys.stderr, flush=True)
    except DockerException as exc:
        raise ToolError(
            f"push of {ref} failed ({_first_line(exc)})",
            "check that the registry answers (`inv registry status`) and `docker login` for it; "
            "then push again: nothing after the failed step was changed",
        ) from None
    found = _PUSHED_DIGEST.findall("".join(lines))
    if not found:
        raise ToolError(f"push of {ref} reported no digest", "push again")
    return str(found[-1])


# --- probe containers: run, then copy a result file out as a regular file only -----------

RESULT_MAX_BYTES = 16 * 1024 * 1024
_COPY_TIMEOUT_S = 120


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
) -> Exited:
    """Run a container that is kept after it exits (so files can be copied out of it), echoing
    its output. Nothing of the host is mounted into it."""
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
        ):
            text = chunk.decode(errors="replace")
            lines.append(text)
            print(text, end="", file=sys.stderr, flush=True)
    except DockerException as exc:
        if exc.return_code == 125:  # the engine could not create or start the container
            raise ToolError(
                f"the engine could not start {' '.join(command[:3])} in {image[:19]}: {_first_line(exc)}",
                "check the engine (and the NVIDIA runtime for --gpus): `docker info`",
            ) from None
        return Exited(exc.return_code, "".join(lines))
    return Exited(0, "".join(lines))


def new_container_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def remove_container(name: str) -> None:
    with contextlib.suppress(DockerException):
        docker.container.remove(name, force=True, volumes=True)


def copy_file_out(container: str, path: str, max_bytes: int = RESULT_MAX_BYTES) -> bytes | None:
    """The bytes of one regular file in a (stopped) container; None when there is none.

    `docker cp` to stdout gives a tar stream, read as a stream: the member is inspected, never
    extracted, so a symlink or device planted in the container never reaches the host's files,
    and a huge file is refused from its header without being read."""
    with (
        tempfile.TemporaryFile() as errors,
        subprocess.Popen(
            [*docker.docker_cmd, "cp", f"{container}:{path}", "-"], stdout=subprocess.PIPE, stderr=errors
        ) as proc,
    ):
        assert proc.stdout is not None
        watchdog = threading.Timer(_COPY_TIMEOUT_S, proc.kill)  # a hung engine never hangs the stage
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
