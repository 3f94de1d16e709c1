"""What the invoke tasks do: run a built image for interactive work, clean up after us."""

import contextlib
import os
import shlex
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

from python_on_whales import docker

from torchimg import paths, record, registry, summary, variants
from torchimg.errors import PipelineError

IMAGE_UID = 1000  # the image's user `pytorch` (docker/Dockerfile)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """In invoke tasks: a PipelineError ends with its message and fix, not a traceback."""
    try:
        yield
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _gpu_flags() -> list[str]:
    """`--gpus all` only when the engine has the NVIDIA runtime (detected, not assumed)."""
    runtimes = docker.system.info().runtimes or {}
    return ["--gpus", "all"] if "nvidia" in runtimes else []


def _user_flags(work: Path, created: bool) -> list[str]:
    """Run as the host user, so files written to ./workspace belong to them (HOME in /tmp).
    Root on the host keeps the image's non-root user (Jupyter refuses root) and gives it the
    workspace folder when this call created it."""
    uid, gid = os.getuid(), os.getgid()
    if uid == 0:
        if created:
            os.chown(work, IMAGE_UID, IMAGE_UID)
        elif work.stat().st_uid != IMAGE_UID:
            print(f"note: {work} is not owned by uid {IMAGE_UID}: the container may not write there")
        return []
    return [] if uid == IMAGE_UID else ["--user", f"{uid}:{gid}", "-e", "HOME=/tmp"]


def run_command(
    variant_name: str, flavor: str, command: list[str], ports: dict[int, int] | None = None
) -> str:
    """The `docker run` line for the image last built for this variant and flavor.
    `ports` maps host ports to container ports (published on 127.0.0.1 only)."""
    config = variants.load()
    variant = config.variant(variant_name or config.default)
    rec = record.read(variant.name, flavor)
    if rec is None:
        raise PipelineError(
            f"no {flavor} image of {variant.name} has been built here",
            f"nox -s build -- --variant {variant.name} --flavor {flavor}",
        )
    work = Path.cwd() / "workspace"
    created = not work.exists()
    work.mkdir(exist_ok=True)
    args = ["docker", "run", "--rm", "-it", *_gpu_flags(), *_user_flags(work, created)]
    args += ["-v", f"{work}:/workspace"]
    for host, container in (ports or {}).items():
        args += ["-p", f"127.0.0.1:{host}:{container}", "-e", f"TORCHIMG_HOST_PORT={host}"]
    return shlex.join([*args, rec["tags"][0], *command])


def remove_project_images(prefixes: tuple[str, ...] = ()) -> None:
    """Untag every image of this project (the repository of variants.toml, tests, benchmarks,
    the locker), or only those under `prefixes`; images of anything else stay."""
    repos = prefixes or (variants.load().repository, "torchimg-test/", "torchimg-bench/", "torchimg-locker")
    for image in docker.image.list():
        for tag in image.repo_tags:
            if tag.startswith(repos):
                print(f"removing {tag}", file=sys.stderr)
                docker.image.remove(tag, force=True)


def clean(keep_reports: bool = False) -> None:
    """Images tagged with the configured repository or by tests and benchmarks, our cache,
    and (unless kept, e.g. for CI artifacts) the reports."""
    remove_project_images()
    docker.buildx.prune(all=True)
    if not keep_reports:
        shutil.rmtree(paths.reports_dir(), ignore_errors=True)


def registry_action(action: str, host: str) -> str:
    """`inv registry up|down|status`: the embedded local registry."""
    local = registry.Local(host)
    actions = {"up": local.start, "down": local.stop, "status": local.status}
    if action not in actions:
        raise PipelineError(f"unknown registry action {action!r}", "use up, down or status")
    return actions[action]()


def images_table() -> str:
    """`inv images`: one line per recorded image and each stage's outcome."""
    return summary.text()
