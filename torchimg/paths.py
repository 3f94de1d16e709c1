"""Where the pipeline's files live, relative to the repository root."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VARIANTS_FILE = ROOT / "variants.toml"
REQUIREMENTS = ROOT / "requirements"
LOCKS = REQUIREMENTS / "locks"
DOCKER = ROOT / "docker"
DOCKERFILE = DOCKER / "Dockerfile"


def shown(path: Path) -> str:
    """A path as messages show it: relative to the repository when inside it."""
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)
