"""The Docker client, python-on-whales: imported here and nowhere else in the project. The
engine adapter's modules use it through these names; its errors become PipelineErrors here."""

from python_on_whales import DockerClient, docker
from python_on_whales.client_config import ClientNotFoundError
from python_on_whales.exceptions import DockerException, NoSuchImage
from python_on_whales.utils import run as run_cli

from torchimg.errors import ToolError

__all__ = [
    "ClientNotFoundError",
    "DockerClient",
    "DockerException",
    "NoSuchImage",
    "docker",
    "failed",
    "first_line",
    "run_cli",
]


def first_line(exc: DockerException) -> str:
    text = (exc.stderr or str(exc)).strip().splitlines()
    return text[-1] if text else "no output"


def failed(doing: str, exc: DockerException) -> ToolError:
    return ToolError(
        f"the Docker Engine failed while {doing}: {first_line(exc)}",
        "check that the engine answers (`docker info`), then run the same command again",
    )
