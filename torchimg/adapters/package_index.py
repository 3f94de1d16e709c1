"""The Python package index's JSON API (PyPI's `/pypi/<project>/json`): what a project's newest
release is. Read by the base refresh, which names a newer torch in its pull request."""

import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path

from torchimg.errors import ToolError

PYPI_JSON = "https://pypi.org/pypi/{project}/json"


def newest(project: str, ca_bundle: Path | None = None, url: str = PYPI_JSON) -> str:
    """The newest final release of `project` on the index (its `info.version`)."""
    where = url.format(project=project)
    ctx = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
    try:
        with urllib.request.urlopen(where, timeout=20, context=ctx) as answer:
            data = json.loads(answer.read(8 * 1024 * 1024))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ToolError(
            f"cannot read {where} ({getattr(exc, 'reason', exc)})", "check that the index answers"
        ) from None
    version = (data.get("info") or {}).get("version") if isinstance(data, dict) else None
    if not isinstance(version, str) or not version:
        raise ToolError(f"{where} names no version", "check the index URL")
    return version
