"""Local conveniences (invoke): `inv --list`. The pipeline's stages are nox sessions."""

from invoke.context import Context
from invoke.tasks import task

from torchimg import devtools


@task(help={"variant": "variant (default: the default one)", "flavor": "runtime or dev"})
def shell(c: Context, variant: str = "", flavor: str = "runtime") -> None:
    """Open a shell in a built image, with the GPUs (when present) and ./workspace mounted."""
    c.run(devtools.run_command(variant, flavor, ["bash"]), pty=True)


@task(help={"variant": "variant (default: the default one)"})
def jupyter(c: Context, variant: str = "") -> None:
    """Start Jupyter Lab from the dev image on port 8888; the URL with its token is printed."""
    c.run(devtools.run_command(variant, "dev", [], ports=["127.0.0.1:8888:8888"]), pty=True)


@task
def clean(c: Context) -> None:
    """Remove this project's images, BuildKit cache and reports (nothing else of Docker's)."""
    devtools.clean()
