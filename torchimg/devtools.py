"""What the invoke tasks do: run a built image for interactive work, clean up after us."""

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import invoke
from invoke.program import Program

from torchimg import output, paths, probe_results, settings, summary
from torchimg.adapters import engine, local_registry
from torchimg.errors import PipelineError, debugging, unclassified
from torchimg.model import labels, record, references, variants
from torchimg.output import log

IMAGE_UID = 1000  # the image's user `pytorch` (docker/Dockerfile)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """In invoke tasks: a PipelineError ends with its message and fix, anything else as a tool
    failure in one line; never a traceback (unless TORCHIMG_DEBUG asks for it)."""
    output.setup()
    try:
        yield
    except PipelineError as exc:
        log.error("%s", exc)
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:
        log.error("interrupted")
        raise SystemExit(130) from None
    except invoke.exceptions.Failure:  # the command run (`inv shell --run`) failed: its own status
        raise
    except Exception as exc:
        if debugging():
            traceback.print_exc()
        error = unclassified(exc)
        log.error("%s", error)
        raise SystemExit(error.exit_code) from None


def quiet_on_closed_pipe() -> None:
    """`inv --list | head -1` ends as any command-line tool does when its reader goes away (the
    default SIGPIPE: status 141, nothing said), not with a BrokenPipeError traceback. Python
    ignores SIGPIPE by default; the programs the tasks and sessions start get the default
    anyway."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)


def bad_task_arguments_exit_2() -> None:
    """invoke ends a command line it cannot parse (an unknown task or option, a missing or
    malformed value) with status 1, which here says "a gate refused": make it 2, bad input, as
    for every other command of the project. Called when tasks.py is loaded, which invoke does
    before it parses the tasks' arguments (its own options, before that, keep invoke's 1)."""
    for step in ("parse_tasks", "parse_cleanup"):
        original = getattr(Program, step)

        def parsed(self: Program, original: Any = original) -> None:
            try:
                original(self)
            except (invoke.exceptions.ParseError, ValueError) as exc:  # ValueError: a number flag's value
                raise invoke.exceptions.Exit(
                    f"{exc} (inv --list shows the tasks, inv --help TASK their options)", code=2
                ) from None

        setattr(Program, step, parsed)


def _gpu_flags() -> list[str]:
    """`--gpus all` only when the engine has the NVIDIA runtime (detected, not assumed)."""
    return ["--gpus", "all"] if engine.gpu_runtime() else []


def _user_flags(work: Path, created: bool) -> list[str]:
    """Run as the host user, so files written to ./workspace belong to them (HOME in /tmp),
    in group 0, which may write the image's venv (`%pip install`). Root on the host keeps the
    image's non-root user (Jupyter refuses root) and gives it the workspace folder when this
    call created it."""
    uid, gid = os.getuid(), os.getgid()
    if uid == 0:
        if created:
            os.chown(work, IMAGE_UID, IMAGE_UID)
        elif work.stat().st_uid != IMAGE_UID:
            log.warning("%s is not owned by uid %d: the container may not write there", work, IMAGE_UID)
        return []
    return [] if uid == IMAGE_UID else ["--user", f"{uid}:{gid}", "--group-add", "0", "-e", "HOME=/tmp"]


def _check_flavor(flavor: str) -> None:
    if flavor not in variants.FLAVORS:
        raise PipelineError(
            f"--flavor {flavor!r} is not a flavor", f"use one of {', '.join(variants.FLAVORS)}"
        )


def host_port(text: str) -> int:
    """`inv jupyter --port`: a TCP port number, checked before anything runs."""
    port = int(text) if text.isascii() and text.isdigit() else 0
    if not 0 < port < 65536:
        raise PipelineError(f"--port {text!r} is not a TCP port", "give a number from 1 to 65535, e.g. 8888")
    return port


def run_command(
    variant_name: str, flavor: str, command: list[str], ports: dict[int, int] | None = None
) -> str:
    """The `docker run` line for the image last built for this variant and flavor.
    `ports` maps host ports to container ports (published on 127.0.0.1 only)."""
    _check_flavor(flavor)
    config = variants.load(settings.config_file(None))
    variant = config.variant(variant_name or config.default)
    if flavor not in variant.flavors:
        raise PipelineError(
            f"variant {variant.name} has no {flavor} flavor (it has {', '.join(variant.flavors)})",
            f"pick a variant with it, e.g. --variant {config.default}",
        )
    rec = _store().read(variant.name, flavor)
    if rec is None:
        raise PipelineError(
            f"no {flavor} image of {variant.name} has been built here",
            f"nox -s build -- --variant {variant.name} --flavor {flavor}",
        )
    gpus = _gpu_flags()  # the engine answers before ./workspace is made for it
    work = Path.cwd() / "workspace"
    created = not work.exists()
    work.mkdir(exist_ok=True)
    args = ["docker", "run", "--rm", "-it", *gpus, *_user_flags(work, created)]
    args += ["-v", f"{work}:/workspace"]
    for host, container in (ports or {}).items():
        args += ["-p", f"127.0.0.1:{host}:{container}", "-e", f"TORCHIMG_HOST_PORT={host}"]
    return shlex.join([*args, rec.tags[0], *command])


# Repositories only this project's tests, benchmarks and locker tag into.
_OWN_REPOSITORIES = ("torchimg-test", "torchimg-bench", "torchimg-locker")


def _repositories() -> set[str]:
    """Every repository this project tags or pulls images in: variants.toml's, $TORCHIMG_REPOSITORY,
    the staging ones, those its records name, and its own test, benchmark and locker repositories."""
    config = variants.load(settings.config_file(None))
    repos = {config.repository, *_OWN_REPOSITORIES}
    if env := os.environ.get("TORCHIMG_REPOSITORY"):
        repos.add(env)
    for repo in list(repos):
        repos.add(f"{repo}-staging")
    repos.update(r for r in (config.staging, os.environ.get("TORCHIMG_STAGING")) if r)
    for rec in _store().every():
        repos.update(tag.rsplit(":", 1)[0] for tag in rec.tags)
        if rec.stage is not None:
            repos.add(rec.stage.repository)
    return repos


def remove_project_images(repositories: tuple[str, ...] = ()) -> list[str]:
    """Untag this project's images: only images carrying its io.torchimg.* labels, and only
    their tags in exactly this project's repositories (or `repositories`), or under its own
    test, benchmark and locker names. Returns what was removed. An image built FROM ours
    inherits our labels: in another repository (even `<ours>/app`) it is never touched."""
    repos = set(repositories) or _repositories()
    removed = []
    for tag in engine.labelled_tags(labels.OURS):
        repo = tag.split("@", 1)[0] if "@" in tag else tag.rsplit(":", 1)[0]
        if repo in repos or (not repositories and repo.split("/", 1)[0] in _OWN_REPOSITORIES):
            engine.untag(tag, force=True)
            removed.append(tag)
    return removed


def remove_recorded_images() -> list[str]:
    """Untag only what the records of this reports folder name: their tags and the staged
    digest pulled by `--staged`. A CI job on an engine other jobs share removes its own images,
    never an image another job is about to stage or test."""
    removed = []
    for rec in _store().every():
        staged = rec.staged()
        # a tag only while it names the recorded image: a record is a file anyone may edit,
        # and a tag moved on since names an image this record did not build
        mine = [ref for ref in rec.tags if engine.image_id(ref) == rec.image_id]
        if staged and engine.image_id(staged.by_digest) is not None:
            mine.append(staged.by_digest)
        for ref in mine:
            engine.untag(ref, force=True)
            removed.append(ref)
    return removed


_REPORT_FILES = re.compile(r"build-report(-platforms)?(\.partial)?\.(json|md)|doctor-.+\.json")
_FLAT_DIRS = ("records", "releases", "refresh")  # hold only files the pipeline writes, no folders
_FLAT_FILES = re.compile(r"[^/]+\.(json|md|lock|tmp)")


def _ours(entry: Path, image_dirs: set[str]) -> bool:
    """Whether a reports folder entry is one the pipeline writes: a declared image's folder,
    a records/releases/refresh folder holding only its kind of files, a report file."""
    if entry.is_symlink():
        return False
    if entry.is_file():
        return bool(_REPORT_FILES.fullmatch(entry.name))
    if entry.name in image_dirs:
        return True
    return entry.name in _FLAT_DIRS and all(
        f.is_file() and not f.is_symlink() and _FLAT_FILES.fullmatch(f.name) for f in entry.iterdir()
    )


def remove_reports(reports: Path, config: variants.Config) -> list[str]:
    """What this project wrote in the reports folder, and the folder if nothing else is left:
    $TORCHIMG_REPORTS may name a folder that holds other files too (or the checkout itself)."""
    image_dirs = {f"{v.name}-{f}" for v in config.variants.values() for f in variants.FLAVORS}
    removed: list[str] = []
    for entry in sorted(reports.iterdir()):
        if _ours(entry, image_dirs):
            if entry.is_dir():
                removed.append(f"{entry.name}/")
                shutil.rmtree(entry, ignore_errors=True)
            else:
                removed.append(entry.name)
                entry.unlink(missing_ok=True)
    others = sorted(e.name for e in reports.iterdir())
    where = paths.shown(reports)
    if not others and not reports.is_symlink():
        reports.rmdir()
        return [f"removed {where}/"]
    return [f"removed {where}/{name}" for name in removed] + (
        [
            f"kept {where}/: it holds what this project did not write ({', '.join(others[:5])}"
            + (", ..." if len(others) > 5 else "")
            + ")"
        ]
        if others
        else []
    )


def clean(keep_reports: bool = False, recorded: bool = False) -> list[str]:
    """This project's images (all, or only those its records name), and (unless kept, e.g. for
    CI artifacts) the reports. BuildKit's cache is shared with everything else built on this
    engine, so it is left alone."""
    reports = settings.reports_dir(None)  # checked before anything is removed
    config = variants.load(settings.config_file(None))
    removed = remove_recorded_images() if recorded else remove_project_images()
    lines = [f"removed {tag}" for tag in removed] or ["no image of this project to remove"]
    if not keep_reports and reports.is_dir():
        lines += remove_reports(reports, config)
    lines.append(
        "BuildKit's cache was left as it is (it holds other projects' layers too): `docker buildx du` "
        "shows it, `docker buildx prune --filter until=168h` trims what is older than a week"
    )
    return lines


def registry_action(action: str, host: str) -> str:
    """`inv registry up|down|status`: the embedded local registry."""
    local = local_registry.Local(local_registry.check_host(host, "--address"))
    actions = {"up": local.start, "down": local.stop, "status": local.status}
    if action not in actions:
        raise PipelineError(f"unknown registry action {action!r}", "use up, down or status")
    return actions[action]()


def doctor(variant_name: str, flavor: str, image: str) -> tuple[list[str], Path]:
    """`inv doctor`: the probe's node checks (driver, /dev/shm, MIG, ECC, persistence and
    compute mode, PCIe, P2P, NCCL all_reduce through torchrun) in the image last built for a
    variant, or in any CUDA image of this pipeline by reference (pulled when not here).
    Returns (what is not healthy, the JSON report); nothing listed means healthy."""
    from torchimg.stages import test  # the probe's runner and its result checks: one place

    given, flavor = flavor, flavor or "runtime"
    _check_flavor(flavor)  # every input is checked before the engine is asked anything
    reports = settings.reports_dir(None)
    if image:
        references.image(image, "--image")
        if variant_name or given:
            raise PipelineError(
                "--image names the image itself: --variant and --flavor would be ignored",
                "give either --image REF or --variant/--flavor",
            )
    else:
        config = variants.load(settings.config_file(None))
        variant = config.variant(variant_name or config.default)
    engine.preflight(buildx=False)  # a GPU node needs the engine, not BuildKit
    if image:
        ref = image
        if engine.image_id(ref) is None:
            engine.pull(ref)
        out = reports / f"doctor-{re.sub(r'[^A-Za-z0-9_.-]+', '-', ref)[:100]}.json"
    else:
        rec = _store().read(variant.name, flavor)
        if rec is None or engine.image_id(rec.tags[0]) is None:
            raise PipelineError(
                f"no {flavor} image of {variant.name} is here to run the doctor in",
                f"nox -s build -- --variant {variant.name} --flavor {flavor}, or inv doctor --image REF",
            )
        ref = rec.tags[0]
        out = reports / f"{variant.name}-{flavor}" / "doctor.json"
    found = engine.image_labels(ref)
    if labels.VARIANT not in found:
        raise PipelineError(
            f"{ref} is not an image of this pipeline (no {labels.VARIANT} label, no torchimg-probe)",
            "pass an image built by `nox -s build`, or run the probe's doctor in yours",
        )
    if found.get(labels.CUDA_TAG, "cpu") == "cpu":
        raise PipelineError(
            f"{ref} is a CPU-only image: the doctor checks a node's GPUs with a CUDA image",
            "pass a CUDA variant's image (e.g. the default one)",
        )
    gpu = engine.gpu_runtime()
    env = test.doctor_env({"TORCHIMG_EXPECT": json.dumps(probe_results.expected(found))})
    result = test.run_probe(ref, "doctor", gpu, env, ["--require-gpu"] if gpu else [])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    unhealthy = probe_results.failures(result)
    if not gpu:
        unhealthy.append(
            "this engine has no NVIDIA runtime: containers cannot see a GPU (the checks above ran "
            "in CPU mode); install the NVIDIA Container Toolkit and "
            "`nvidia-ctk runtime configure --runtime=docker`"
        )
    return unhealthy, out


def images_table() -> str:
    """`inv images`: one line per recorded image and each stage's outcome."""
    return summary.table(_store())


def _store() -> record.Store:
    return record.Store(settings.reports_dir(None))
