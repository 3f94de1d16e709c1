"""What the invoke tasks do: run a built image for interactive work, clean up after us."""

import shlex
import shutil
import sys
from pathlib import Path

from python_on_whales import docker

from torchimg import paths, record, variants
from torchimg.errors import PipelineError


def _gpu_flags() -> list[str]:
    """`--gpus all` only when the engine has the NVIDIA runtime (detected, not assumed)."""
    runtimes = docker.system.info().runtimes or {}
    return ["--gpus", "all"] if "nvidia" in runtimes else []


def run_command(variant_name: str, flavor: str, command: list[str], ports: list[str] | None = None) -> str:
    """The `docker run` line for the image last built for this variant and flavor."""
    config = variants.load()
    variant = config.variant(variant_name or config.default)
    rec = record.read(variant.name, flavor)
    if rec is None:
        raise PipelineError(
            f"no {flavor} image of {variant.name} has been built here",
            f"nox -s build -- --variant {variant.name} --flavor {flavor}",
        )
    work = Path.cwd() / "workspace"
    work.mkdir(exist_ok=True)
    args = ["docker", "run", "--rm", "-it", *_gpu_flags(), "-v", f"{work}:/workspace"]
    for port in ports or []:
        args += ["-p", port]
    return shlex.join([*args, rec["tags"][0], *command])


def clean() -> None:
    """Images tagged with the configured repository or by tests and benchmarks, our cache."""
    config = variants.load()
    repos = (config.repository, "torchimg-test/", "torchimg-bench/", "torchimg-locker")
    for image in docker.image.list():
        for tag in image.repo_tags:
            if tag.startswith(repos):
                print(f"removing {tag}", file=sys.stderr)
                docker.image.remove(tag, force=True)
    docker.buildx.prune(all=True)
    shutil.rmtree(paths.reports_dir(), ignore_errors=True)
