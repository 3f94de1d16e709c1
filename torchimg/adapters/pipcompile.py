"""pip-compile (pip-tools): the command lines that make hash-pinned lockfiles. Variant locks
are compiled inside the variant's base image (the shell script below, run by the lock stage
in the locker container); the pipeline's own tool locks on the host, isolated from its pip
configuration."""

import os
import shlex
import sys
from pathlib import Path

from torchimg.adapters import commands
from torchimg.errors import ToolError
from torchimg.model.torch_builds import PYPI_INDEX

_COMPILE = (
    "pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --no-header "
    "--no-emit-index-url --no-emit-find-links --no-emit-trusted-host "
    "--pip-args=--only-binary=:all:"
)
# Host pip settings that would leak local paths or extra indexes into a lockfile.
_LEAKY_PIP_ENV = ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CONSTRAINT", "PIP_NO_INDEX")


def report_name(machine: str, flavor: str = "runtime") -> str:
    """The file (beside the compiled lockfiles) with pip's resolution of a flavor's inputs for
    `machine`."""
    return f"resolved-{flavor}-{machine}.json"


def container_script(lock_rel: str, torch_index: str, upgrade: bool, machines: tuple[str, ...] = ()) -> str:
    """The shell the locker container runs (cwd /src, a copy of requirements/): it reports its
    Python and platform, then compiles runtime.txt (torch from `torch_index`) and dev.txt
    (from PyPI, constrained by runtime.txt). For each other machine in `machines`, pip resolves
    each flavor's inputs again with that machine's wheel tags and the lockfile's versions as
    constraints (`--dry-run --report`), for the lock stage to compare."""
    compile_ = _COMPILE + (" --upgrade" if upgrade else "")
    inputs = {
        "runtime": (torch_index, f"-r {lock_rel}/torch.in -r requirements/runtime.in"),
        "dev": (PYPI_INDEX, "-r requirements/dev.in"),
    }
    resolve = (
        [
            "abi=cp$(python -c 'import sys; print(\"%d%d\" % sys.version_info[:2])')",
            "pyv=$(python -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])')",
        ]
        if machines
        else []
    )
    resolve += [
        line
        for machine in machines
        for flavor, (index, requirements) in inputs.items()
        for line in (
            f"echo 'resolving {lock_rel}/{flavor}.txt for {machine} (pip install --dry-run --report)' >&2",
            f"grep -E '^[A-Za-z0-9]' {lock_rel}/{flavor}.txt | cut -d' ' -f1 > /tmp/pins.txt",
            f"tags=$(wheel-platforms {machine})",  # its own line: `set -e` stops on a failure
            f"pip install --quiet --dry-run --ignore-installed --only-binary=:all: "
            f'$tags --python-version "$pyv" --implementation cp --abi "$abi" '
            f"--index-url {shlex.quote(index)} -c /tmp/pins.txt "
            f"--report {lock_rel}/{report_name(machine, flavor)} {requirements}",
        )
    ]
    return "\n".join(
        [
            "set -eu",
            "python -c 'import sys, sysconfig; "
            'print("TORCHIMG_PYTHON=%d.%d" % sys.version_info[:2]); '
            'print("TORCHIMG_PLATFORM=" + sysconfig.get_platform())\'',
            f"echo 'compiling {lock_rel}/runtime.txt (torch from {torch_index})' >&2",
            f"{compile_} --index-url {shlex.quote(torch_index)} -o {lock_rel}/runtime.txt "
            f"{lock_rel}/torch.in requirements/runtime.in",
            f"echo 'compiling {lock_rel}/dev.txt (constrained by runtime.txt)' >&2",
            f"{compile_} --index-url {PYPI_INDEX} -c {lock_rel}/runtime.txt -o {lock_rel}/dev.txt "
            "requirements/dev.in",
            *resolve,
        ]
    )


def compile_on_host(src: str, out: Path, cwd: Path) -> None:
    """pip-compile `src` (a .in file in `cwd`) into `out`, with this Python, from PyPI only."""
    env = {"PIP_CONFIG_FILE": os.devnull, "CUSTOM_COMPILE_COMMAND": "nox -s lock_tools"}
    args = ["-m", "piptools", "compile", "--quiet", "--generate-hashes", "--allow-unsafe", "--strip-extras"]
    args += ["--no-emit-index-url", "--no-emit-find-links", "--index-url", PYPI_INDEX, "-o", str(out), src]
    ran = commands.run(sys.executable, args, cwd=cwd, env=env, unset=_LEAKY_PIP_ENV)
    if ran.code != 0:
        raise ToolError(
            f"pip-compile of requirements/{src} failed (exit {ran.code}): {ran.err.strip()[-500:]}",
            "check that PyPI answers from this machine, then run `nox -s lock_tools` again",
        )
