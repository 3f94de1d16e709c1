"""`nox -s lock_tools`: recompile the pipeline's own tool lockfiles, on the host, for its Python."""

import argparse
import difflib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from torchimg import paths
from torchimg.adapters import pipcompile
from torchimg.errors import RefusedError
from torchimg.output import log
from torchimg.settings import Settings
from torchimg.stages import Selection, StageResult, each

HELP = "recompile the pipeline's own tool lockfiles"
SELECTS = "nothing"
LOCKS = {"tools.txt": "tools.in", "locker.txt": "locker.in", "trivy-ci.txt": "trivy-ci.in"}


@dataclass(frozen=True)
class Options:
    check: bool = False


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--check", action="store_true", help="fail on drift instead of writing")


def options(args: argparse.Namespace, settings: Settings) -> Options:
    return Options(args.check)


def run(selection: Selection, opts: Options) -> StageResult:
    names = list(LOCKS)
    return each("lock_tools", names, lambda i: _one(names[i], opts))


def _one(out: str, opts: Options) -> None:
    with tempfile.TemporaryDirectory(prefix="torchimg-tools-") as tmp:
        target = Path(tmp) / out
        shutil.copy(paths.REQUIREMENTS / out, target)  # keep its pins unless the inputs moved
        pipcompile.compile_on_host(LOCKS[out], target, paths.REQUIREMENTS)
        new, old = target.read_text(), (paths.REQUIREMENTS / out).read_text()
    if new == old:
        log.info("   requirements/%s is up to date", out)
    elif opts.check:
        log.info("%s", "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), out, out)))
        raise RefusedError(
            f"requirements/{out} drifted from {LOCKS[out]}", "run `nox -s lock_tools` and commit"
        )
    else:
        (paths.REQUIREMENTS / out).write_text(new)
        log.info("   wrote requirements/%s", out)
