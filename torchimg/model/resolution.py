"""What pip resolves for another machine, read from `pip install --dry-run --report` run with
that machine's wheel tags (--platform, --python-version, --abi), and whether a lockfile is
exactly that: one lockfile then serves both platforms.

pip picks wheels by the given tags but evaluates environment markers against the interpreter it
runs on (`platform_machine` stays the build machine's). So the report is walked again from the
requested requirements with the target's markers: only what is reachable there counts, and a
requirement only the target needs, which pip therefore never resolved, is a difference.
"""

from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name


def _env(report: dict[str, Any], machine: str, extra: str) -> dict[str, str]:
    env = {k: str(v) for k, v in (report.get("environment") or {}).items()}
    env.update(platform_machine=machine, extra=extra)
    return env


def _wheel_sha256(item: dict[str, Any]) -> str:
    archive = (item.get("download_info") or {}).get("archive_info") or {}
    found = (archive.get("hashes") or {}).get("sha256")
    if found is None and str(archive.get("hash", "")).startswith("sha256="):
        found = str(archive["hash"]).split("=", 1)[1]
    return str(found or "")


def resolved_for(report: dict[str, Any], machine: str) -> tuple[dict[str, tuple[str, str, str]], list[str]]:
    """name -> (version, wheel file, wheel sha256) of what pip installs on `machine`, and the
    requirements reachable there that the report does not hold."""
    items: dict[str, Any] = {
        canonicalize_name(str(i["metadata"]["name"])): i for i in report.get("install") or []
    }
    todo = [(name, set(i.get("requested_extras") or [])) for name, i in items.items() if i.get("requested")]
    extras_seen: dict[str, set[str]] = {}
    missing: list[str] = []
    while todo:
        name, extras = todo.pop()
        if name not in items:
            missing.append(name)
            continue
        known = extras_seen.get(name)
        if known is not None and extras <= known:
            continue
        extras_seen[name] = (known or set()) | extras
        for text in items[name]["metadata"].get("requires_dist") or []:
            try:
                req = Requirement(text)
            except InvalidRequirement:
                missing.append(f"{name} (unreadable requirement {text!r})")
                continue
            wanted = req.marker is None or any(
                req.marker.evaluate(_env(report, machine, e)) for e in ["", *sorted(extras_seen[name])]
            )
            if wanted:
                todo.append((canonicalize_name(req.name), set(req.extras)))
    resolved = {
        name: (
            str(items[name]["metadata"]["version"]),
            str((items[name].get("download_info") or {}).get("url", "")).rsplit("/", 1)[-1],
            _wheel_sha256(items[name]),
        )
        for name in extras_seen
    }
    return resolved, sorted(set(missing))


def _for_machine(wheel: str, machine: str) -> bool:
    """A wheel file for `machine` (or for any): its platform tags (the last of the name's dash
    fields, dot-separated) are `any` or end in `_<machine>`."""
    if not wheel.endswith(".whl"):
        return False
    tags = wheel[: -len(".whl")].split("-")[-1].split(".")
    return all(t == "any" or t.endswith(f"_{machine}") for t in tags)


def differences(
    lock_pins: dict[str, str],
    lock_hashes: dict[str, set[str]],
    report: dict[str, Any],
    machine: str,
) -> list[str]:
    """Every way the lockfile differs from what pip resolves on `machine` (empty: it is exact)."""
    resolved, missing = resolved_for(report, machine)
    problems = [f"{name}: needed on {machine}, not resolved by pip's report" for name in missing]
    for name, (version, wheel, sha) in sorted(resolved.items()):
        if name not in lock_pins:
            problems.append(f"{name}=={version}: pip installs it on {machine}; the lockfile lacks it")
        elif lock_pins[name] != version:
            problems.append(f"{name}: the lockfile pins {lock_pins[name]}, pip picks {version} on {machine}")
        elif not _for_machine(wheel, machine):
            problems.append(f"{name}=={version}: pip picked {wheel or 'no wheel'}, not a wheel for {machine}")
        elif sha not in lock_hashes.get(name, set()):
            problems.append(f"{name}=={version}: the hash of {wheel or 'its wheel'} is not in the lockfile")
    for name in sorted(set(lock_pins) - set(resolved)):
        problems.append(f"{name}=={lock_pins[name]}: in the lockfile, not installed by pip on {machine}")
    return problems
