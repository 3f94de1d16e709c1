"""`python -m torchimg preflight`: what a runner must have before a job starts.

Each missing prerequisite is found in seconds, with its fix, instead of an hour into a job:
the engine answers, and has buildx where the job builds (a test or scan job pulls and runs
with the plain engine, so a GPU node without buildx still serves); it stores images in
containerd (an image ID is then its digest on every runner, and attestations survive); the
NVIDIA runtime (GPU jobs); QEMU for a variant's platforms this machine does not run natively
(not for a scan: it reads an image, never runs it); free disk where the engine keeps its
data. Every check runs; any failure fails the preflight.
"""

import shutil

from torchimg.adapters import emulation, engine, trivy
from torchimg.errors import PipelineError
from torchimg.output import log

# Measured (containerd store): after building 2.9.1-cu128 runtime and dev, the engine's data
# root held 27 GB (images 24.2 GB as `docker system df` counts them, build cache 7.8 GB); a
# pulled staged copy shares those blobs. 40 GB leaves room for the unpack and trivy's cache.
MIN_FREE_GB = 40


JOBS = ("build", "test", "scan")


def check(
    gpu: bool,
    min_free_gb: float,
    scanner: bool = False,
    platforms: tuple[str, ...] = (),
    buildx: bool = True,
    builder: str | None = None,
) -> None:
    """Log each prerequisite as ok or missing; PipelineError (exit 2) naming every one missing."""
    engine.preflight(buildx)  # the engine answers (and has buildx); else nothing more can be checked
    if buildx:
        log.info("   %-8s %s", "ok", "docker buildx")
    problems: list[str] = []

    def verdict(ok: bool, what: str, fix: str) -> None:
        log.info("   %-8s %s", "ok" if ok else "MISSING", what)
        if not ok:
            problems.append(f"{what}: {fix}")

    if buildx:
        try:
            engine.require_dockerfile_support(builder)
            named = f"buildx builder {builder}" if builder else "the current buildx builder"
            what = f"{named} on Docker Engine {engine.server_version()}"
            verdict(True, f"{what} (builds docker/Dockerfile)", "")
        except PipelineError as exc:
            verdict(False, "a builder that builds docker/Dockerfile", f"{exc.what}; {exc.fix}")

    verdict(
        engine.containerd_store(),
        "the containerd image store",
        engine.CONTAINERD_STORE_FIX,
    )
    if gpu:
        verdict(
            engine.gpu_runtime(),
            "the NVIDIA container runtime",
            "install the NVIDIA Container Toolkit, then `nvidia-ctk runtime configure --runtime=docker` "
            "and restart dockerd",
        )
    if scanner:
        try:
            verdict(True, f"trivy {trivy.version()} ({trivy.binary()})", "")
        except PipelineError as exc:
            verdict(False, "trivy", f"{exc.what}; {exc.fix}")
    for platform in platforms:
        if emulation.native(platform):
            continue
        try:
            emulation.require(platform)
            verdict(True, f"QEMU emulation of {platform}", "")
        except PipelineError as exc:
            verdict(False, f"QEMU emulation of {platform}", f"{exc.what}; {exc.fix}")
    for root in engine.data_roots():
        try:
            free_gb = shutil.disk_usage(root).free / 1e9
            verdict(
                free_gb >= min_free_gb,
                f"{free_gb:.0f} GB free in {root} (a job needs {min_free_gb:g} GB)",
                "`inv clean` removes this project's images, `docker builder prune` the build cache",
            )
        except OSError as exc:
            verdict(
                min_free_gb <= 0,
                f"free disk in {root} cannot be read from here ({exc.strerror})",
                "run on the engine's machine, or pass --min-free-gb 0 for a remote engine",
            )
    if problems:
        raise PipelineError(
            "this runner lacks: " + "; ".join(problems), "fix the runner, then run the job again"
        )
