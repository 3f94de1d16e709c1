"""Pipeline stages as nox sessions: `nox -s lock`, `nox -s build`, `nox -s tests`, ...

Each session is one line into the `torchimg` package (`python -m torchimg STAGE`), run in the
environment nox itself runs in (requirements/tools.txt): no per-session venvs, so
sessions start instantly and use exactly the pinned tools. Options follow `--`, e.g.
`nox -s build -- --variant 2.9.1-cu128 --flavor runtime`; `python -m torchimg STAGE -h` lists them.
"""

import argparse
import ast
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import nox

# `nox --list | head -1` ends with status 141, as a command-line tool does, not a traceback
# (the package is not importable here: the same as torchimg.devtools.quiet_on_closed_pipe)
signal.signal(signal.SIGPIPE, signal.SIG_DFL)
nox.needs_version = ">=2025.2.9"
nox.options.default_venv_backend = "none"
nox.options.sessions = ["lint", "tests"]
# `nox -s build test push`: a failed build must not be followed by a test and a push.
nox.options.stop_on_first_error = True


def _tool(name: str) -> str:
    """A binary installed from requirements/tools.txt, next to this Python."""
    return str(Path(sys.executable).with_name(name))


def _shellcheck(session: nox.Session) -> str:
    """tools.txt's shellcheck, else the one on PATH (Linux aarch64 has no wheel of it); without
    one the lint fails: actionlint would silently skip the `run:` scripts."""
    found = _tool("shellcheck")
    if Path(found).is_file():
        return found
    found = shutil.which("shellcheck") or ""
    if not found:
        session.error("lint needs shellcheck (no wheel for this machine): e.g. apt install shellcheck")
    return found


def _shell_scripts() -> list[str]:
    """The repository's own shell scripts: those that start with a sh or bash shebang."""
    candidates = [Path(".ci/run"), *Path("benchmarks").rglob("*.sh"), *Path("docker/image").iterdir()]
    return sorted(
        str(p)
        for p in candidates
        if p.is_file() and p.read_bytes().startswith((b"#!/bin/sh", b"#!/usr/bin/env bash", b"#!/bin/bash"))
    )


def _stage(session: nox.Session, stage: str) -> None:
    """Run a stage; a failure ends nox at once with the stage's own exit status (1 a gate
    refused, 2 bad input, 3 a tool failed), which nox itself would flatten to 1."""
    command = [sys.executable, "-m", "torchimg", stage, *session.posargs]
    session.log(" ".join(["python -m torchimg", stage, *session.posargs]))
    code = subprocess.call(command)
    if code:
        session.log(f"{stage} failed with exit status {code}; later sessions are not run")
        raise SystemExit(code)


@nox.session
def lock(session: nox.Session) -> None:
    """pip-compile hash-pinned lockfiles per variant inside its base (`-- --check`: drift)."""
    _stage(session, "lock")


@nox.session(default=False)
def lock_tools(session: nox.Session) -> None:
    """Recompile the pipeline's own tool lockfiles (requirements/tools.txt, locker.txt)."""
    _stage(session, "lock-tools")


@nox.session
def build(session: nox.Session) -> None:
    """Build the variant's images through BuildKit and write their records."""
    _stage(session, "build")


@nox.session
def test(session: nox.Session) -> None:
    """Run the in-image probe (smoke checks, matmul benchmark) in the built images."""
    _stage(session, "test")


@nox.session
def scan(session: nox.Session) -> None:
    """Scan the built images with trivy (vulnerabilities, secrets, licenses, misconfigurations)."""
    _stage(session, "scan")


@nox.session
def push(session: nox.Session) -> None:
    """Push images that passed build, test and scan: immutable tag, digest check, moving tags."""
    _stage(session, "push")


@nox.session(default=False)
def stage(session: nox.Session) -> None:
    """CI: push built images to the staging repository by digest (test and scan pull that digest)."""
    _stage(session, "stage")


@nox.session(default=False)
def promote(session: nox.Session) -> None:
    """CI: copy each staged digest that passed test and scan to the release repository."""
    _stage(session, "promote")


@nox.session(default=False)
def refresh_bases(session: nox.Session) -> None:
    """Pin each base image tag's current digest in variants.toml (then: lock, build, test, scan)."""
    _stage(session, "refresh-bases")


@nox.session(default=False)
def build_report(session: nox.Session) -> None:
    """Benchmark the build: cold, no-op, dev-only change, sizes; against the naive baseline."""
    _stage(session, "build-report")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, mypy --strict; hadolint and trivy config (where installed) over the Dockerfiles;
    shellcheck over the shell scripts; actionlint and zizmor over the workflows."""
    session.run(sys.executable, "-m", "ruff", "check", ".")
    session.run(sys.executable, "-m", "ruff", "format", "--check", ".")
    session.run(sys.executable, "-m", "mypy")
    session.run(_tool("hadolint"), "docker/Dockerfile", "docker/baseline/Dockerfile")
    session.run(sys.executable, "-m", "torchimg", "lint-config", "--if-available")
    session.run(_shellcheck(session), *_shell_scripts())
    workflows = sorted(str(p) for p in Path(".github/workflows").glob("*.yml"))
    # shellcheck on every `run:` script, as on GitHub's runners (where it is on PATH).
    session.run(_tool("actionlint"), "-shellcheck", _shellcheck(session), *workflows)
    session.run(_tool("zizmor"), "--offline", ".github/workflows")


@nox.session
def tests(session: nox.Session) -> None:
    """Unit tests, then integration tests against the real engine, BuildKit and registry."""
    session.run(sys.executable, "-m", "pytest", *session.posargs)


def _name(arg: str) -> str:
    """A session name as nox compares it (its Python expression, whatever the spacing)."""
    try:
        return ast.dump(ast.parse(arg))
    except (SyntaxError, ValueError):
        return arg


def _refuse_unknown_sessions() -> None:
    """nox ends with status 3 for a session name it does not know, which here says a tool
    failed: a mistyped name is bad input, status 2, named with the sessions there are. Read
    the way nox reads it (`-s/-e/--session/--sessions`, else $NOXSESSION, before `--`)."""
    program = Path(sys.argv[0])
    if "nox" not in (program.name, program.parent.name):
        return
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("-s", "-e", "--session", "--sessions", nargs="*", dest="sessions")
    argv = sys.argv[1:]
    given = parser.parse_known_args(argv[: argv.index("--")] if "--" in argv else argv)[0].sessions
    if given is None:
        given = [n for n in os.environ.get("NOXSESSION", "").split(",") if n]
    known = sorted(nox.registry.get())
    unknown = [n for n in given if _name(n) not in {_name(k) for k in known}]
    if unknown:
        print(f"Error: no session {', '.join(map(repr, unknown))} in noxfile.py", file=sys.stderr)
        print(f"  fix: pick from {', '.join(known)} (nox --list describes each)", file=sys.stderr)
        raise SystemExit(2)


_refuse_unknown_sessions()
