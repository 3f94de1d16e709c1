"""Can this container's user compile? The user name, $HOME and the folders torch.compile and
Triton write their compiled code to and load it from, as the container was started (any UID,
a read-only root, a noexec tmpfs), each with the fix. No torch import at module level: the
rules are tested on hosts without torch.
"""

import getpass
import importlib.util
import os
import pwd
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from torchimg_probe import verdicts
from torchimg_probe.results import BrokenError, ConcernError


def check() -> tuple[str, dict[str, Any]]:
    """The user name, $HOME and the folders torch.compile and Triton write their compiled code
    to and load it from, as this container was started (any UID, read-only root, a noexec
    tmpfs). Nothing is created: a folder not there yet is judged by the one it would be made in."""
    try:
        user: str | None = getpass.getuser()
    except (OSError, KeyError):
        user = None
    home = _home()
    # inductor's own rule: $TORCHINDUCTOR_CACHE_DIR (when set, even to ''), else the
    # temporary folder's torchinductor_<user>, which needs a user name.
    inductor = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    needs_user = inductor is None
    if inductor is None and user is not None:
        inductor = _default_compile_cache(user)
    # Triton: $TRITON_CACHE_DIR, else ${TRITON_HOME:-$HOME}/.triton/cache. torch.compile gives
    # Triton a folder under its own cache unless TRITON_CACHE_DIR is set: then it uses that.
    triton_home = os.environ.get("TRITON_HOME") or home
    triton_set = os.environ.get("TRITON_CACHE_DIR")
    triton = triton_set
    if triton is None and triton_home:
        triton = str(Path(triton_home, ".triton", "cache"))
    has_triton = importlib.util.find_spec("triton") is not None
    compile_problem = ""
    if inductor is not None and (problem := _cannot_run_code_in(inductor)):
        compile_problem = f"torch.compile's cache: {problem}"
    triton_problem = ""
    if has_triton:
        triton_problem = _cannot_run_code_in(triton) if triton is not None else "no $HOME or $TRITON_HOME"
    # On the GPU torch.compile compiles through Triton, which builds its launchers in its own
    # cache (a home that cannot be written: "Permission denied: '/.triton'"); on the CPU it
    # does not use Triton.
    triton_for_compile = has_triton and _torch_has_cuda()
    home_writable = home is not None and _is_dir(Path(home)) and os.access(home, os.W_OK)
    status, why, fix = verdicts.scratch(
        user=user,
        needs_user=needs_user,
        compile_problem=compile_problem,
        triton_problem=triton_problem,
        triton_for_compile=triton_for_compile,
        home=home,
        home_writable=home_writable,
    )
    data: dict[str, Any] = {"uid": os.getuid(), "user": user, "home": home, "home_writable": home_writable}
    data |= {"compile_cache": inductor, "triton_cache": triton if has_triton else None}
    data |= {"compile_problem": compile_problem, "triton_problem": triton_problem}
    data["triton_for_compile"] = triton_for_compile
    if status == "fail":
        raise BrokenError(why, data, fix)
    if status == "warn":
        raise ConcernError(why, data, fix)
    return why, data


def _torch_has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.version.cuda)


def _default_compile_cache(user: str) -> str:
    """Where inductor caches without TORCHINDUCTOR_CACHE_DIR: torch's own function where this
    torch has it, else its rule (the temporary folder's torchinductor_<user>)."""
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir

        return str(default_cache_dir())
    except ImportError:
        pass
    except OSError:  # no writable temporary folder at all
        return "/tmp"
    try:
        temp = tempfile.gettempdir()
    except OSError:
        temp = "/tmp"
    return str(Path(temp, "torchinductor_" + re.sub(r'[\\/:*?"<>|]', "_", user)))


def _is_dir(path: Path) -> bool:
    """is_dir() that answers False where the path cannot be reached (before Python 3.14 it
    raises PermissionError under a folder this user may not enter)."""
    try:
        return path.is_dir()
    except OSError:
        return False


def _home() -> str | None:
    """$HOME, else the passwd entry's; None for a UID without either (Path.home() raises)."""
    if home := os.environ.get("HOME"):
        return home
    try:
        return pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        return None


def _cannot_run_code_in(folder: str) -> str:
    """Why a program written to `folder` (or, when it is not there yet, to the folder it would
    be made in) cannot be run; '' when it can. The test program is always removed."""
    if not folder:
        return "set but empty"
    try:  # a relative folder is the working folder's
        path = Path(folder) if Path(folder).is_absolute() else Path.cwd() / folder
    except OSError as exc:
        return f"{folder} cannot be reached ({exc.strerror or exc})"
    existing = path
    try:
        while not existing.exists():
            if existing.is_symlink():
                return f"{folder}: {existing} is a broken symbolic link"
            if existing == existing.parent:
                return f"{folder}: no part of it exists"
            existing = existing.parent
    except OSError as exc:
        return f"{folder} cannot be reached ({exc.strerror or exc})"
    where = folder if existing == path else f"{folder} (to be made in {existing})"
    if not _is_dir(existing):
        return f"{where}: {existing} is not a folder"
    try:
        handle, name = tempfile.mkstemp(dir=existing, prefix=".torchimg-exec-")
    except OSError as exc:
        return f"{where} is not writable ({exc.strerror or exc})"
    program = Path(name)
    try:
        with os.fdopen(handle, "w") as f:
            f.write("#!/bin/sh\nexit 0\n")
        program.chmod(0o700)
    except OSError as exc:
        program.unlink(missing_ok=True)
        return f"{where}: a program could not be written there ({exc.strerror or exc})"
    try:
        subprocess.run([str(program)], check=True, capture_output=True, timeout=30)
    except PermissionError:
        return f"{where} does not run programs (mounted noexec)"
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{where}: a program written there did not run ({exc})"
    finally:
        program.unlink(missing_ok=True)
    return ""
