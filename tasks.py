"""Local conveniences (invoke): `inv --list`. The pipeline's stages are nox sessions; both
call the `torchimg` package, so no logic lives here."""

from invoke.context import Context
from invoke.tasks import task

from torchimg import devtools, registry


@task(
    name="registry",
    positional=["action"],
    help={"action": "up, down or status (default: status)", "host": "host:port"},
)
def registry_(c: Context, action: str = "status", host: str = registry.LOCAL) -> None:
    """The embedded local registry (localhost:5000): start, stop, or show it."""
    print(devtools.registry_action(action, host))


@task(help={"variant": "variant (default: the default one)", "flavor": "runtime or dev"})
def shell(c: Context, variant: str = "", flavor: str = "runtime") -> None:
    """Open a shell in a built image, with the GPUs (when present) and ./workspace mounted."""
    c.run(devtools.run_command(variant, flavor, ["bash"]), pty=True)


@task(help={"variant": "variant (default: the default one)", "port": "host port (default 8888)"})
def jupyter(c: Context, variant: str = "", port: int = 8888) -> None:
    """Start Jupyter Lab from the dev image; the URL with its token is printed."""
    c.run(devtools.run_command(variant, "dev", [], ports=[f"127.0.0.1:{port}:8888"]), pty=True)


@task
def images(c: Context) -> None:
    """This project's images and how far each got: build, test, scan, push."""
    print(devtools.images_table())


@task
def clean(c: Context) -> None:
    """Remove this project's images, BuildKit cache and reports (nothing else of Docker's)."""
    devtools.clean()
