"""Run inside an image: every `torch.*` and `pynvml.*` name the probe's source spells (through
its own imports and aliases) resolves in that image's torch and nvidia-ml-py.

The GPU paths of the probe never run on a machine without a GPU; a name renamed or removed
upstream would only show on the first GPU. This reads the probe's source instead of running
it, so it checks those paths on any host. A name inside a `try` whose handler catches
ImportError or AttributeError is a fallback between torch releases: it may be missing (it is
listed as "optional"), the others may not.

Prints one JSON object: {"checked": N, "missing": ["file:line name", ...], "optional": [...]}.
"""

import ast
import importlib
import json
import sys
from pathlib import Path

ROOTS = ("torch", "pynvml")
GUARDS = {"ImportError", "ModuleNotFoundError", "AttributeError"}
# The probe hands the modules to helpers under these names (readiness: `nvml` is pynvml).
PASSED = {"torch": "torch", "pynvml": "pynvml", "nvml": "pynvml"}


def resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    try:
        obj: object = importlib.import_module(parts[0])
    except ImportError:
        return False
    for i, part in enumerate(parts[1:], 2):
        if hasattr(obj, part):
            obj = getattr(obj, part)
            continue
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            return False
    return True


def _guarded(tree: ast.AST) -> set[int]:
    """Line numbers inside a `try` body that an ImportError/AttributeError handler covers."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        caught = set()
        for handler in node.handlers:
            types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
            caught |= {t.id for t in types if isinstance(t, ast.Name)}
        if caught & GUARDS:
            for stmt in node.body:
                lines |= set(range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1))
    return lines


def names(path: Path) -> list[tuple[int, str, bool]]:
    """(line, dotted name, guarded) of each name rooted at torch or pynvml in one file."""
    tree = ast.parse(path.read_text())
    guarded = _guarded(tree)
    aliases = dict(PASSED)
    found: list[tuple[int, str, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in ROOTS:
                    aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
                    found.append((node.lineno, a.name, node.lineno in guarded))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ROOTS:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
                found.append((node.lineno, f"{node.module}.{a.name}", node.lineno in guarded))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        chain: list[str] = []
        inner: ast.expr = node
        while isinstance(inner, ast.Attribute):
            chain.append(inner.attr)
            inner = inner.value
        if isinstance(inner, ast.Name) and inner.id in aliases:
            dotted = ".".join([aliases[inner.id], *reversed(chain)])
            found.append((node.lineno, dotted, node.lineno in guarded))
    return found


def main(folder: str) -> None:
    seen: dict[str, list[tuple[str, bool]]] = {}
    for path in sorted(Path(folder).glob("*.py")):
        for line, dotted, guarded in sorted(set(names(path))):
            seen.setdefault(dotted, []).append((f"{path.name}:{line} {dotted}", guarded))
    missing: list[str] = []
    optional: list[str] = []
    for dotted, uses in sorted(seen.items()):
        if resolves(dotted):
            continue
        unguarded = [where for where, guarded in uses if not guarded]
        (missing if unguarded else optional).append((unguarded or [uses[0][0]])[0])
    print(json.dumps({"checked": len(seen), "missing": missing, "optional": optional}))


if __name__ == "__main__":
    main(sys.argv[1])
