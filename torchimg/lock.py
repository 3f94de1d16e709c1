"""`nox -s lock`: pip-compile hash-pinned lockfiles per variant, inside the variant's base.

pip-compile runs in the `locker` stage of docker/Dockerfile, i.e. with the Python minor
version and platform of the image the lock goes into. Nothing of the host's pip
configuration reaches it: the container sees only the repository's requirements/*.in.
Results are written to the repository only when every lockfile of the variant compiled.
"""

import difflib
import os
import shlex
import shutil
import ssl
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from plumbum import local

from torchimg import build, compat, engine, gitinfo, lockfile, paths
from torchimg.credentials import Credentials
from torchimg.errors import PipelineError, RefusedError, ToolError, worst
from torchimg.variants import Variant

_CA_IN_CONTAINER = "/run/torchimg-ca.pem"
_COMPILE = (
    "pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --no-header "
    "--no-emit-index-url --no-emit-find-links --no-emit-trusted-host "
    "--pip-args=--only-binary=:all:"
)


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


def _script(variant: Variant, lock_rel: str, upgrade: bool) -> str:
    """The shell run in the locker container (cwd /src, a copy of requirements/)."""
    compile_ = _COMPILE + (" --upgrade" if upgrade else "")
    return "\n".join(
        [
            "set -eu",
            "python -c 'import sys, sysconfig; "
            'print("TORCHIMG_PYTHON=%d.%d" % sys.version_info[:2]); '
            'print("TORCHIMG_PLATFORM=" + sysconfig.get_platform())\'',
            f"echo 'compiling {lock_rel}/runtime.txt (torch from {variant.index})' >&2",
            f"{compile_} --index-url {shlex.quote(variant.index)} -o {lock_rel}/runtime.txt "
            f"{lock_rel}/torch.in requirements/runtime.in",
            f"echo 'compiling {lock_rel}/dev.txt (constrained by runtime.txt)' >&2",
            f"{compile_} --index-url {compat.PYPI_INDEX} -c {lock_rel}/runtime.txt "
            f"-o {lock_rel}/dev.txt requirements/dev.in",
        ]
    )


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
    base_ref = base or variant.base.image
    engine.preflight()
    engine.require_base(base_ref)
    tag = f"torchimg-locker:{variant.name}"
    engine.build(
        context=paths.DOCKER,
        dockerfile=paths.DOCKERFILE,
        target="locker",
        tags=[tag],
        build_args={
            "BASE_IMAGE": base_ref,
            "LAYER_EPOCH": str(build.layer_epoch(variant, gitinfo.current())),
        },
        contexts={"requirements": paths.REQUIREMENTS},
        secrets=creds.buildkit_secrets(),
        labels={},
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
        out = engine.run(
            tag,
            ["sh", "-c", _script(variant, lock_rel, upgrade)],
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
                variant.index if flavor == "runtime" else compat.PYPI_INDEX,
            )
            files[f"{flavor}.txt"] = info.header() + (src / lock_rel / f"{flavor}.txt").read_text()
    mismatched = lockfile.shared_mismatches(
        lockfile.pins(files["runtime.txt"]), lockfile.pins(files["dev.txt"])
    )
    if mismatched:
        raise PipelineError(
            f"variant {variant.name}: the dev lock changes runtime versions: {'; '.join(mismatched)}",
            "loosen the conflicting pin in requirements/dev.in",
        )
    return files


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


def lock(
    variants: list[Variant], creds: Credentials, *, check: bool, base: str | None, upgrade: bool = False
) -> None:
    """Compile each variant; write its files, or with check=True fail on any difference. One
    variant that cannot be locked here (its index unreachable) does not stop the others."""
    failed: list[str] = []
    codes: list[int] = []
    for variant in variants:
        print(f"== lock {variant.name} ({variant.torch_requirement}, {variant.index})", file=sys.stderr)
        try:
            files = compile_variant(variant, creds, base, upgrade and not check)
        except PipelineError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed.append(variant.name)
            codes.append(exc.exit_code)
            continue
        if check:
            if diff := drift(variant, files):
                print(diff, file=sys.stderr)
                print(f"error: lockfiles of {variant.name} drifted from their inputs", file=sys.stderr)
                failed.append(variant.name)
                codes.append(RefusedError.exit_code)
            else:
                print(f"ok: lockfiles of {variant.name} are up to date", file=sys.stderr)
            continue
        variant.lock_dir.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (variant.lock_dir / name).write_text(text)
        print(f"wrote {paths.shown(variant.lock_dir)}/", file=sys.stderr)
    if failed:
        fix = "re-lock with `nox -s lock -- --variant NAME` and commit" if check else ""
        error = PipelineError(
            f"lock: {len(variants) - len(failed)} of {len(variants)} done; failed: {', '.join(failed)}", fix
        )
        error.exit_code = worst(codes)
        raise error


# The pipeline's own tools, compiled on the host for the host's Python.
_TOOL_LOCKS = {"tools.txt": "tools.in", "locker.txt": "locker.in", "trivy-ci.txt": "trivy-ci.in"}
# Host pip settings that would leak local paths or extra indexes into a lockfile.
_LEAKY_PIP_ENV = ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CONSTRAINT", "PIP_NO_INDEX")


def lock_tools(*, check: bool) -> None:
    """Recompile requirements/tools.txt and locker.txt, isolated from the host's pip config."""
    env = {k: v for k, v in os.environ.items() if k not in _LEAKY_PIP_ENV}
    env |= {"PIP_CONFIG_FILE": os.devnull, "CUSTOM_COMPILE_COMMAND": "nox -s lock_tools"}
    pip_compile = local[sys.executable]["-m", "piptools", "compile", "--quiet", "--generate-hashes"]
    pip_compile = pip_compile[
        "--allow-unsafe", "--strip-extras", "--no-emit-index-url", "--no-emit-find-links"
    ]
    drifted = []
    with tempfile.TemporaryDirectory(prefix="torchimg-tools-") as tmp:
        for out, src in _TOOL_LOCKS.items():
            target = Path(tmp) / out
            shutil.copy(paths.REQUIREMENTS / out, target)
            with local.cwd(paths.REQUIREMENTS), local.env(**env):
                code, _, err = pip_compile["--index-url", compat.PYPI_INDEX, "-o", str(target), src].run(
                    retcode=None
                )
            if code != 0:
                raise ToolError(
                    f"pip-compile of requirements/{src} failed (exit {code}): {str(err).strip()[-500:]}",
                    "check that PyPI answers from this machine, then run `nox -s lock_tools` again",
                )
            new, old = target.read_text(), (paths.REQUIREMENTS / out).read_text()
            if new != old:
                if check:
                    drifted.append(out)
                    sys.stderr.writelines(
                        difflib.unified_diff(old.splitlines(True), new.splitlines(True), out, out)
                    )
                else:
                    (paths.REQUIREMENTS / out).write_text(new)
                    print(f"wrote requirements/{out}", file=sys.stderr)
    if drifted:
        raise RefusedError(
            f"tool lockfiles drifted: {', '.join(drifted)}", "run `nox -s lock_tools` and commit"
        )
