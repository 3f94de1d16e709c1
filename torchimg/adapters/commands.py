"""The programs whose output the pipeline reads (trivy, git, pip-compile), run through plumbum:
the one place that starts them, so that a missing program is one clear error and no caller
sees plumbum. (The engine's `docker` CLI is the engine adapter's, the registry program the
local registry's: each system stays behind its own module.)"""

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from plumbum import local
from plumbum.commands.processes import CommandNotFound

from torchimg.errors import ToolError


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str


def run(
    program: str | Path,
    args: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    unset: Sequence[str] = (),
) -> Ran:
    """Run `program args` to its end; any exit status is returned, never raised. The program
    gets this process's environment as it is now, plus `env`, less the variables whose names
    start with one of the `unset` prefixes."""
    try:
        command = local[str(program)]
    except CommandNotFound:
        raise ToolError(
            f"`{program}` is not installed (not on PATH)", f"install {Path(program).name}"
        ) from None
    now = {**os.environ, **(env or {})}
    now = {k: v for k, v in now.items() if not (unset and k.startswith(tuple(unset)))}
    with local.cwd(str(cwd) if cwd else local.cwd), local.env():
        local.env.clear()
        local.env.update(now)
        try:
            code, out, err = command[list(args)].run(retcode=None)
        except OSError as exc:
            raise ToolError(
                f"`{program}` could not be started: {exc}", f"check the {Path(program).name} install"
            ) from None
    return Ran(int(code), str(out), str(err))
