"""`nox -s lock`: pip-compile hash-pinned lockfiles per variant, inside the variant's base.

pip-compile runs in the `locker` stage of docker/Dockerfile, i.e. with the Python minor
version and platform of the image the lock goes into. Nothing of the host's pip
configuration reaches it: the container sees only the repository's requirements/*.in.
Results are written to the repository only when every lockfile of the variant compiled.
"""

import argparse
import difflib
import json
import os
import shutil
import ssl
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from torchimg import image_inputs, paths
from torchimg.adapters import emulation, engine, gitinfo, pipcompile
from torchimg.errors import PipelineError, RefusedError, ToolError
from torchimg.model import labels, lockfile, resolution
from torchimg.model.credentials import Credentials
from torchimg.model.variants import PLATFORMS, Variant
from torchimg.output import log
from torchimg.settings import Settings
from torchimg.stages import Selection, StageResult, each

HELP = "pip-compile hash-pinned lockfiles per variant"
SELECTS = "variants"
_CA_IN_CONTAINER = "/run/torchimg-ca.pem"


@dataclass(frozen=True)
class Options:
    creds: Credentials = field(default_factory=Credentials)
    check: bool = False
    base: str | None = None
    upgrade: bool = False


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--check", action="store_true", help="recompile to a temp dir and fail on any difference")
    p.add_argument(
        "--upgrade", action="store_true", help="move every pin to the newest release (default: keep pins)"
    )
    p.add_argument(
        "--base",
        metavar="REF",
        help="compile in this base image instead of the variant's (default: $TORCHIMG_BASE)",
    )
    p.add_argument(
        "--ca-bundle",
        metavar="PATH",
        help="extra CA bundle for the package index (default: $TORCHIMG_CA_BUNDLE, ...)",
    )
    p.add_argument(
        "--netrc", metavar="PATH", help="netrc with private-index credentials (default: $TORCHIMG_NETRC)"
    )


def options(args: argparse.Namespace, settings: Settings) -> Options:
    if args.check and args.upgrade:
        raise PipelineError(
            "--check together with --upgrade: a check compares the committed lockfiles with their "
            "inputs; an upgrade moves them on",
            "drop one of them (`nox -s lock -- --upgrade` re-locks at the newest versions)",
        )
    creds = settings.credentials(args.ca_bundle, args.netrc)
    return Options(creds, args.check, settings.base(args.base), args.upgrade)


def run(selection: Selection, opts: Options) -> StageResult:
    """Compile each variant; write its files, or with --check fail on any difference. One
    variant that cannot be locked here (its index unreachable) does not stop the others."""
    variants = selection.variants()
    return each("lock", [v.name for v in variants], lambda i: lock(variants[i], opts))


def lock(variant: Variant, opts: Options) -> None:
    log.info("   %s from %s", variant.torch_requirement, variant.index)
    files = compile_variant(variant, opts.creds, opts.base, opts.upgrade)
    if opts.check:
        if diff := drift(variant, files):
            log.info("%s", diff)
            raise RefusedError(
                f"lockfiles of {variant.name} drifted from their inputs",
                f"re-lock with `nox -s lock -- --variant {variant.name}` and commit",
            )
        log.info("   ok: lockfiles of %s are up to date", variant.name)
        return
    variant.lock_dir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (variant.lock_dir / name).write_text(text)
    log.info("   wrote %s/", paths.shown(variant.lock_dir))


def require_index(variant: Variant, creds: Credentials) -> None:
    """Fail fast, before any build, when the variant's torch index does not answer."""
    url = variant.index.rstrip("/") + "/torch/"
    ctx = ssl.create_default_context(cafile=str(creds.ca_bundle) if creds.ca_bundle else None)
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=15, context=ctx):
            pass
    except (urllib.error.URLError, OSError) as exc:
        raise ToolError(
            f"variant {variant.name} takes torch from {variant.index}, which does not answer "
            f"from this machine ({getattr(exc, 'reason', exc)}); its lockfiles cannot be made here",
            f"run `nox -s lock -- --variant {variant.name}` on a machine that reaches "
            f"{variant.index} and commit requirements/locks/{variant.name}/ "
            "(lockfiles are never written by hand)",
        ) from None


def _value(output: str, key: str) -> str:
    for line in output.splitlines():
        if line.startswith(f"{key}="):
            return line.split("=", 1)[1].strip()
    raise ToolError(f"the locker did not report {key}; output was:\n{output[-2000:]}", "run the lock again")


def compile_variant(
    variant: Variant, creds: Credentials, base: str | None = None, upgrade: bool = False
) -> dict[str, str]:
    """Compile the variant's lockfiles; return file name -> full text (header included).

    The committed lockfiles are copied in first, so pip-compile keeps their pins unless the
    inputs changed or `upgrade` is asked for: a re-lock never moves versions by surprise.
    """
    require_index(variant, creds)
    if not any(emulation.native(p) for p in variant.platforms):
        raise PipelineError(
            f"variant {variant.name} is built for {', '.join(variant.platforms)}; this machine runs "
            f"{emulation.engine_platform()}, where its lock would be compiled",
            "lock it on a machine of one of its platforms (pip-compile never runs under emulation)",
        )
    base_ref = base or variant.base.image
    engine.preflight()
    engine.require_dockerfile_support()
    engine.require_base(base_ref)
    tag = f"torchimg-locker:{variant.name}"
    engine.build(
        context=paths.DOCKER,
        dockerfile=paths.DOCKERFILE,
        target="locker",
        tags=[tag],
        build_args={
            "BASE_IMAGE": base_ref,
            "LAYER_EPOCH": str(image_inputs.layer_epoch(variant, gitinfo.current())),
        },
        contexts={"requirements": paths.REQUIREMENTS},
        secrets=creds.buildkit_secrets(),
        labels={labels.VARIANT: variant.name},
        what=f"the locker for {variant.name}",
    )
    lock_rel = f"requirements/locks/{variant.name}"
    with tempfile.TemporaryDirectory(prefix="torchimg-lock-") as tmp:
        src = Path(tmp)
        (src / lock_rel).mkdir(parents=True)
        for f in paths.REQUIREMENTS.glob("*.in"):
            shutil.copy(f, src / "requirements" / f.name)
        if not upgrade:
            for f in variant.lock_dir.glob("*.txt"):
                shutil.copy(f, src / lock_rel / f.name)
        (src / lock_rel / "torch.in").write_text(
            f"# torch for variant {variant.name}, from variants.toml. Made by `nox -s lock`.\n"
            f"{variant.torch_requirement}\n"
        )
        volumes = [(str(src), "/src", "rw")]
        env = {"HOME": "/tmp", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        if creds.ca_bundle:
            volumes.append((str(creds.ca_bundle), _CA_IN_CONTAINER, "ro"))
            env["PIP_CERT"] = _CA_IN_CONTAINER
        machines = tuple(PLATFORMS[p] for p in variant.platforms if not emulation.native(p))
        out = engine.run(
            tag,
            ["sh", "-c", pipcompile.container_script(lock_rel, variant.index, upgrade, machines)],
            volumes=volumes,
            env=env,
            user=f"{os.getuid()}:{os.getgid()}",
            workdir="/src",
            stream=True,
        )
        python, platform = _value(out, "TORCHIMG_PYTHON"), _value(out, "TORCHIMG_PLATFORM")
        files = {"torch.in": (src / lock_rel / "torch.in").read_text()}
        for flavor in ("runtime", "dev"):
            info = lockfile.LockInfo(
                variant.name,
                flavor,
                python,
                platform,
                variant.lock_index(flavor),
            )
            files[f"{flavor}.txt"] = info.header() + (src / lock_rel / f"{flavor}.txt").read_text()
        for machine in machines:
            for flavor in ("runtime", "dev"):
                report = src / lock_rel / pipcompile.report_name(machine, flavor)
                _serves(variant, flavor, files[f"{flavor}.txt"], report, machine)
    mismatched = lockfile.shared_mismatches(
        lockfile.pins(files["runtime.txt"]), lockfile.pins(files["dev.txt"])
    )
    if mismatched:
        raise PipelineError(
            f"variant {variant.name}: the dev lock changes runtime versions: {'; '.join(mismatched)}",
            "loosen the conflicting pin in requirements/dev.in",
        )
    return files


def _serves(variant: Variant, flavor: str, lock: str, report_path: Path, machine: str) -> None:
    """A flavor's lock must be exactly what pip resolves on `machine` too (versions, and the
    hash of each wheel pip picks there): then it serves every platform of the variant."""
    try:
        report = json.loads(report_path.read_text())
    except (OSError, ValueError) as exc:
        raise ToolError(
            f"pip's resolution of {flavor}.txt for {machine} is unreadable ({exc})", "run the lock again"
        ) from None
    problems = resolution.differences(lockfile.pins(lock), lockfile.hashes(lock), report, machine)
    if problems:
        raise PipelineError(
            f"variant {variant.name}: {flavor}.txt is not what pip resolves on {machine}:\n  "
            + "\n  ".join(problems),
            f"drop that machine's platform from the variant in variants.toml (a lockfile per platform "
            f"is not supported), or pick versions whose {machine} wheels match",
        )
    log.info("   ok: %s.txt is exactly what pip resolves on %s (versions and wheel hashes)", flavor, machine)


def drift(variant: Variant, files: dict[str, str]) -> str:
    """Unified diff between the committed lockfiles and freshly compiled ones ('' if none)."""
    diff: list[str] = []
    for name, new in files.items():
        path = variant.lock_dir / name
        old = path.read_text() if path.exists() else ""
        rel = paths.shown(path)
        diff += difflib.unified_diff(
            old.splitlines(keepends=True),
            new.splitlines(keepends=True),
            f"{rel} (committed)",
            f"{rel} (recompiled)",
        )
    return "".join(diff)
